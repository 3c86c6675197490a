"""Global sparse momentum SGD (Ding, Ding, Zhou, Guo, Han & Liu, NeurIPS 2019), docs/methods.md GSM.

After every backward, the saliency |w·∂L/∂w| (Ding et al.'s first-order Taylor estimate of
the loss change when w is removed) is computed for every entry of **every
parameter that has a gradient**: Conv/Linear weights, biases and BatchNorm parameters
(docs/methods.md). Only the global top-Q entries keep their gradient, Q = ⌊(1 − S)·N_prunable⌋;
the rest are zeroed. The optimizer step then applies momentum and weight decay to all
entries, so the non-selected ones only decay (the "passive" update of the paper). There is
no mask during training: the harness's final projection makes the model sparse.

The passive decay must be strong enough to bring the non-selected entries near zero within the
budget, or the projection removes weights GSM was still using. In the reference code it is the
recipe's own weight decay over 90-200 epochs (a total pull Σ_t η_t·λ/(1 − momentum) ≈ 17 on
ImageNet); on a 10-epoch step-decay budget with wd 1e-4 that pull is ≈ 0.04 (Fashion-MNIST at
90 %: 89.2 % validation accuracy before the projection, 84.5 % after). So the non-selected
entries get their own decay ``decay`` on top of the preset's (which stays the same for every
method), added to their gradients only; by default it is scaled to the budget so that its
total pull is the reference recipe's 17.

Cost per step: the products w·g written into one flat buffer, one exact selection on it
(``top_indices``) and one fused ``_foreach_mul_`` of the gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchsuite import (
    REFERENCE_TOTAL_PULL,
    FlatScores,
    PruningMethod,
    TrainState,
    coefficient_for_pull,
    hparam,
    top_count,
)


@dataclass(frozen=True)
class GSMHparams:
    decay: float | None = hparam(
        None,
        "budget rule (docs/protocol.md): None scales it to the budget, a total pull "
        "Σ_t η_t·decay/(1 − momentum) "
        "of 17, what the reference code's wd 1e-4 gave over its 90-epoch ImageNet recipe",
        low=1e-3,
        high=1.0,
        log=True,
        help="extra L2 coefficient on the entries outside the top-Q (their gradient only)",
    )


class GSM(PruningMethod):
    name = "gsm"
    source = (
        "Ding, Ding, Zhou, Guo, Han & Liu, Global Sparse Momentum SGD for Pruning Very Deep "
        "Neural Networks, NeurIPS 2019 (arXiv:1909.12778)"
    )
    Hparams = GSMHparams

    def on_start(self, state: TrainState) -> None:
        self.flat = FlatScores(state.model)
        n_prunable = sum(m.weight.numel() for _, m in state.prunable())
        self.q = top_count(n_prunable, self.target)
        self.resolved_decay: float | None = self.hp.decay

    def decay(self, state: TrainState) -> float:
        """The non-selected entries' own decay, scaled to the budget on first use."""
        if self.resolved_decay is None:
            assert state.optimizer is not None
            momentum = float(state.optimizer.param_groups[0].get("momentum", 0.0))
            self.resolved_decay = coefficient_for_pull(
                state.plan.lr, momentum, REFERENCE_TOTAL_PULL
            )
        return self.resolved_decay

    def on_backward(self, state: TrainState) -> None:
        decay = self.decay(state)
        params, grads = self.flat.current()
        if not params:
            return
        with torch.no_grad():
            self.flat.write_saliency(params, grads)  # |w·∂L/∂w| into the flat buffer
            keep = self.flat.select_top(self.q, 1.0)
            torch._foreach_mul_(grads, keep)
            if decay:  # decay·w on the entries outside the top-Q only
                torch._foreach_add_(grads, params, alpha=decay)
                torch._foreach_addcmul_(grads, params, keep, value=-decay)

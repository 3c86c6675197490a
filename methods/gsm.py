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

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from torch import Tensor, nn

from benchsuite.method import PruningMethod, TrainState, hparam
from benchsuite.schedules import REFERENCE_TOTAL_PULL, coefficient_for_pull


def top_count(n_prunable: int, sparsity: float) -> int:
    """⌊(1 − S)·N⌋ in exact decimal arithmetic (the float product can fall just below an
    integer, e.g. (1 − 0.9)·1000 = 99.99999999999999)."""
    return math.floor((1 - Fraction(repr(float(sparsity)))) * n_prunable)


def top_indices(scores: Tensor, k: int) -> Tensor:
    """The indices of exactly ``k`` largest entries of a flat tensor of scores ≥ 0, 0 < k < n.

    Ties at the k-th value are broken arbitrarily, as by ``torch.topk``. On the CPU this is
    numpy's ``argpartition`` (introselect on a zero-copy view): exact, and measured 4–6× faster
    than ``torch.topk`` on LeNet-5's 61,706 saliencies (≈ 0.07 vs 0.3–0.4 ms). Introselect
    degrades (≈ 30×) when most entries tie, which for these scores means exact zeros (dead
    units, zero gradients), so when zeros are the majority the selection runs over the
    positive entries only, and when those are at most k it needs none. On CUDA (and for
    dtypes numpy lacks) ``torch.topk(sorted=False)``, a radix select.
    """
    n = scores.numel()
    if scores.device.type != "cpu" or scores.dtype not in (torch.float32, torch.float64):
        return torch.topk(scores, k, sorted=False).indices
    values = scores.numpy()
    positive = int(np.count_nonzero(values))  # (torch.count_nonzero: ≈ 8 ms on 2 threads)
    if 2 * positive >= n:
        return torch.from_numpy(np.argpartition(values, n - k)[n - k :])
    candidates = np.flatnonzero(values)
    if positive <= k:  # every positive entry, then the first zeros
        zeros = np.flatnonzero(values == 0)[: k - positive]
        return torch.from_numpy(np.concatenate([candidates, zeros]))
    top = np.argpartition(values[candidates], positive - k)[positive - k :]
    return torch.from_numpy(candidates[top])


class FlatScores:
    """The parameters that carry a gradient this step and one flat buffer over them, with a
    view per parameter (logical order, as ``flatten``): per-entry scores are written into
    the views, selected on the flat buffer, and the selection is written back into the same
    buffer, so a step allocates nothing but the selected indices. Rebuilt only when the set
    of parameters with a gradient changes."""

    def __init__(self, model: nn.Module) -> None:
        self.all = [p for p in model.parameters() if p.requires_grad]
        self._key: tuple[int, ...] | None = None
        self.params: list[Tensor] = []
        self.buffer = torch.empty(0)
        self.views: list[Tensor] = []

    def current(self) -> tuple[list[Tensor], list[Tensor]]:
        """(parameters, gradients) of the parameters whose gradient is not None."""
        present = tuple(i for i, p in enumerate(self.all) if p.grad is not None)
        if present != self._key:
            self._key = present
            self.params = [self.all[i] for i in present]
            if self.params:
                first = self.params[0]
                total = sum(p.numel() for p in self.params)
                self.buffer = torch.empty(total, dtype=first.dtype, device=first.device)
                parts = self.buffer.split([p.numel() for p in self.params])
                self.views = [v.view(p.shape) for v, p in zip(parts, self.params)]
        return self.params, [p.grad for p in self.params]

    @torch.no_grad()
    def write_saliency(
        self, params: list[Tensor], grads: list[Tensor], fused: bool | None = None
    ) -> None:
        """buffer ← |w·g| over all entries. ``fused`` (default: on CUDA) takes one fused
        product and one ``cat`` (few kernel launches); otherwise one product per parameter
        straight into its view (no temporaries; cheaper on the CPU)."""
        if self.buffer.is_cuda if fused is None else fused:
            prods = torch._foreach_mul(params, grads)
            torch.cat([t.reshape(-1) for t in prods], out=self.buffer)
        else:
            for p, g, v in zip(params, grads, self.views):
                torch.mul(p, g, out=v)
        self.buffer.abs_()

    @torch.no_grad()
    def write_magnitude(self, params: list[Tensor], fused: bool | None = None) -> None:
        """buffer ← |w| over all entries (``fused`` as in ``write_saliency``)."""
        if self.buffer.is_cuda if fused is None else fused:
            torch.cat([p.reshape(-1) for p in params], out=self.buffer)
            self.buffer.abs_()
        else:
            for p, v in zip(params, self.views):
                torch.abs(p, out=v)

    def select_top(self, k: int, value: float) -> list[Tensor]:
        """Replace the scores in the buffer by ``value`` at exactly ``k`` largest scores and 0
        elsewhere; return the per-parameter views."""
        buffer = self.buffer
        n = buffer.numel()
        if k >= n:
            buffer.fill_(value)
        elif k <= 0:
            buffer.zero_()
        else:
            index = top_indices(buffer, k)
            buffer.zero_().index_fill_(0, index, value)
        return self.views


@dataclass(frozen=True)
class GSMHparams:
    decay: float | None = hparam(
        None,
        "chosen here: None scales it to the budget, a total pull Σ_t η_t·decay/(1 − momentum) "
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

    def prepare(self, state: TrainState) -> None:
        self.flat = FlatScores(state.model)
        n_prunable = sum(m.weight.numel() for _, m in state.prunable())
        self.q = top_count(n_prunable, self.target)
        self.decay_: float | None = self.hp.decay

    def decay(self, state: TrainState) -> float:
        """The non-selected entries' own decay, scaled to the budget on first use."""
        if self.decay_ is None:
            assert state.optimizer is not None
            momentum = float(state.optimizer.param_groups[0].get("momentum", 0.0))
            self.decay_ = coefficient_for_pull(self.plan_.lr, momentum, REFERENCE_TOTAL_PULL)
        return self.decay_

    def after_backward(self, state: TrainState) -> None:
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

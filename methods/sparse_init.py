"""Pruning at initialisation: a one-shot mask before the first step, then sparse training
(docs/methods.md, random and SNIP).

Both fix the mask in ``on_start``, before the optimizer exists, through the harness's hard
masks: the pruned weights are zeroed once and their gradients masked every step, so every
counted step trains the sparse network and the mask never changes. The achieved sparsity is
the target exactly (the layer-wise distributions keep exact counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from benchsuite import (
    DISTRIBUTIONS,
    PruningMethod,
    TrainState,
    dense_indices,
    dense_layers_hparam,
    distribution_masks,
    hparam,
    start_hparam,
)


class AtInit(PruningMethod):
    """Base: masks from ``scores`` with the configured distribution, installed before step 0."""

    def scores(self, state: TrainState) -> list[Tensor]:
        raise NotImplementedError

    def on_start(self, state: TrainState) -> None:
        scores = self.scores(state)
        dense = dense_indices(self.hp.dense_layers, len(scores))
        masks = distribution_masks(self.hp.distribution, scores, self.target, dense)
        hard = state.hard_masks()
        hard.set(masks)  # no optimizer yet: no momentum to clear
        if self.hp.start == "rescaled":
            state.start_sparse(hard.params, masks)


@dataclass(frozen=True)
class RandomHparams:
    distribution: str = hparam(
        "erk",
        "Evci et al. 2020 (RigL), §3/§4.1: ERK, the allocation they pair with their static "
        "random baseline (and the stronger of their two)",
        choices=DISTRIBUTIONS,
        help="layer-wise allocation: uniform, erk or global (one threshold on random scores)",
    )
    start: str = start_hparam()
    dense_layers: str = dense_layers_hparam()


class RandomInit(AtInit):
    """A static random mask at initialisation (the sparse-training baseline of Evci et al.
    2020 and Liu et al. 2022), drawn from the method's own generator."""

    name = "random"
    source = (
        "static random sparsity at initialisation, as the baseline in Evci et al., Rigging the "
        "Lottery: Making All Tickets Winners, ICML 2020"
    )
    Hparams = RandomHparams

    def scores(self, state: TrainState) -> list[Tensor]:
        return [
            torch.rand(m.weight.shape, generator=state.generator).to(m.weight.device)
            for _, m in state.prunable()
        ]


@dataclass(frozen=True)
class SNIPHparams:
    distribution: str = hparam(
        "global",
        "Lee et al. 2019, §4 (eq. 6): SNIP keeps the top-κ connection sensitivities over the "
        "whole network, one global ranking",
        choices=DISTRIBUTIONS,
        help="layer-wise allocation: global (SNIP's own), uniform or erk",
    )
    score_batches: int = hparam(
        1,
        "Lee et al. 2019, §4 and §5: the sensitivities are computed from one mini-batch",
        low=1,
        high=10,
        help="training batches whose summed loss gradient scores the connections",
    )
    start: str = start_hparam()
    dense_layers: str = dense_layers_hparam()


class SNIP(AtInit):
    """SNIP: connection sensitivity |w · ∂L/∂w| at initialisation, one-shot mask, sparse training.

    The scoring pass runs ``score_batches`` forward/backward passes on training batches drawn
    with the method's own generator (``TrainState.sample_batches``), before the first counted
    step and without an optimizer step. It adds no step to the budget and skips none: every
    run still trains the same ``train_steps`` on the same data order; the extra images it read
    are recorded as ``score_images`` (docs/methods.md, SNIP). BatchNorm statistics that the
    scoring forward would update are restored afterwards.
    """

    name = "snip"
    source = (
        "Lee, Ajanthan & Torr, SNIP: Single-shot Network Pruning based on Connection "
        "Sensitivity, ICLR 2019"
    )
    Hparams = SNIPHparams

    def scores(self, state: TrainState) -> list[Tensor]:
        model = state.model
        weights = [m.weight for _, m in state.prunable()]
        buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
        batches = state.sample_batches(self.hp.score_batches)
        grads = [torch.zeros_like(w) for w in weights]
        images = 0
        for x, y in batches:
            loss = F.cross_entropy(model(x), y) / len(batches)
            for acc, g in zip(grads, torch.autograd.grad(loss, weights)):
                acc.add_(g)
            images += y.shape[0]
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
        state.record("score_images", images)
        return [(w.detach() * g).abs() for w, g in zip(weights, grads)]

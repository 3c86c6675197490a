"""Gradual magnitude pruning (Zhu & Gupta 2017) with global selection (docs/methods.md, GMP).

The sparsity follows the cubic ramp S(e) = S·(1 − (1 − e/E)³) of Zhu & Gupta's eq. (1), with
the initial sparsity 0 and the pruning steps counted in epochs: prunes at the *end* of epochs
e = t·P, t = 1..K, with E = K·P the end of the ramp, so the first prune is already above 0 and
the last (epoch E) reaches S exactly. The selection is one global magnitude threshold over
every Conv/Linear weight (the reference code's variant; the paper prunes layer by layer).

Where the ramp ends (``ramp_end``): by default the reference code's rule, ⌊T/P⌋ − 1 prunes
with the last at E = (⌊T/P⌋ − 1)·P; a number puts E at that fraction of the budget (rounded to
a multiple of P), which ``tune`` searches.

Default (hard masks): each prune removes the fraction 1 − (1 − S(e))/(1 − S_prev) of the
still-unpruned weights through the harness's hard masks, which zero the pruned weights and
their momentum once and mask their gradients every step, so they stay exactly zero at ~no cost.

``allow_recovering``: the forward uses w_orig ⊙ m (a parametrization), so masked w_orig keep
feeling weight decay and momentum (they shrink, frozen otherwise); every prune restores all
w_orig and computes a fresh global magnitude mask, following the reference code's
bookkeeping: the "current sparsity" returns to 0 after every prune except the last.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from benchsuite import (
    RampHparams,
    ScheduledMagnitude,
    TrainState,
    hparam,
    latent_weight,
)


class ForwardMask(nn.Module):
    """w_orig ⊙ m in the forward; the gradient reaching w_orig is masked by the chain rule."""

    def __init__(self, like: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones_like(like))

    def forward(self, w: Tensor) -> Tensor:
        return w * self.mask


@dataclass(frozen=True)
class GMPHparams(RampHparams):
    allow_recovering: bool = hparam(
        False,
        "Zhu & Gupta 2017: hard masks, pruned weights never return; "
        "the reference code's smoke test sets True",
        help="restore the weight-decayed w_orig and re-rank at every prune",
    )


class GMP(ScheduledMagnitude):
    name = "gmp"
    source = (
        "Zhu & Gupta, To prune, or not to prune: exploring the efficacy of pruning for model "
        "compression, arXiv:1710.01878 (2017); global selection as in the BIMP reference code"
    )
    Hparams = GMPHparams
    patterns = ("unstructured", "n:m")  # N:M: the ramp ends at N of every M (docs/methods.md)

    # --- allow_recovering: a forward mask over w_orig --------------------------------------
    def on_start(self, state: TrainState) -> None:
        if self.hp.allow_recovering:
            for _, module in state.prunable():
                parametrize.register_parametrization(module, "weight", ForwardMask(module.weight))

    def reach(self, state: TrainState, goal: float) -> None:
        if not self.hp.allow_recovering:
            super().reach(state, goal)
            return
        self._prune_recovering(state, 1.0 - (1.0 - goal) / (1.0 - self.current))
        # reference rule: the bookkeeping returns to 0 after every prune but the last
        self.current = goal if state.epoch == self.last_epoch else 0.0

    def _prune_recovering(self, state: TrainState, fraction: float) -> None:
        modules = [m for _, m in state.prunable()]
        weights = [latent_weight(m) for m in modules]  # w_orig: masked entries weight-decayed
        restored = [torch.ones_like(w, dtype=torch.bool) for w in weights]
        new = state.pattern.prune_remaining(weights, fraction, restored)
        with torch.no_grad():
            for module, m in zip(modules, new):
                module.parametrizations.weight[0].mask.copy_(m)
        state.zero_momentum(weights, new)

    def on_finish(self, state: TrainState) -> None:
        """Make the last mask permanent: plain weights w_orig ⊙ m (hard masks already are)."""
        for _, module in state.prunable():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

"""Learning-compression (Carreira-Perpiñán & Idelbayev, CVPR 2018), L0-constrained, with the
paper's growing penalty (docs/methods.md, LC).

LC alternates an L step, SGD on L(w) + μ/2·‖w − θ‖², and a C step, θ = Π(w), the projection of
w onto the set of models with k nonzeros (keep the k largest entries). Here the C step is
recomputed after every backward: the global top-k by |w| over **all parameters with
gradients** (Conv/Linear weights, biases, BatchNorm parameters, as in the reference code),
k = ⌊(1 − S)·N_prunable⌋. The penalty's gradient μ·(w − θ) is μ·w on the entries outside the
top-k and 0 on the top-k, so it is added to exactly those gradients. The preset's weight decay
is left as it is (the same for every method).

μ grows geometrically, μ_j = μ₀·a^j with j the epoch, so w is driven onto the constraint set and
the harness's final projection loses nothing. The paper's a ≈ 1.1 per LC iteration over a few
dozen iterations; a budget of T epochs gets a = G^(1/(T − 1)), so the last epoch's μ is G·μ₀,
with the total growth G = 1.1^30 by default. μ₀ follows from the budget: the penalty's total
pull Σ_t η_t·μ_t/(1 − momentum) (the log of the shrink it alone would cause) equals
``total_pull``, by default the ≈ 17 that the reference code's constant penalty (wd 1e-4) had on
the 90-epoch ImageNet recipe. With the preset's wd as a constant penalty, a 10-epoch step-decay
budget pulls ≈ 0.04: LC then is dense training plus a one-shot prune (measured on Fashion-MNIST
at 90 %: 75.5 % against the 77.6 % of the dense model pruned once).

Cost per step: |w| written into one flat buffer, one exact selection on it
(``methods.gsm.top_indices``) and two fused ``_foreach`` updates of the gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchsuite.method import PruningMethod, TrainState, hparam
from benchsuite.schedules import REFERENCE_TOTAL_PULL, coefficient_for_pull

from .gsm import FlatScores, top_count

PAPER_GROWTH = 1.1**30  # the LC paper's μ_j = μ₀·1.1^j over ~30 LC iterations


@dataclass(frozen=True)
class LCHparams:
    total_pull: float = hparam(
        REFERENCE_TOTAL_PULL,
        "chosen here: Σ_t η_t·μ_t/(1 − momentum) = 17, the pull of the reference code's "
        "constant penalty (wd 1e-4) over its 90-epoch ImageNet recipe; μ₀ is derived from it "
        "and the budget's LR schedule",
        low=1.0,
        high=100.0,
        log=True,
        help="the penalty's total pull over the budget (sets μ₀)",
    )
    penalty_growth: float = hparam(
        PAPER_GROWTH,
        "LC paper (Carreira-Perpiñán & Idelbayev 2018): μ_j = μ₀·a^j with a ≈ 1.1; here 30 such "
        "increases spread over the budget, a = G^(1/(T − 1)) per epoch",
        low=1.0,
        high=1000.0,
        log=True,
        help="G = μ at the last epoch ÷ μ₀",
    )


def penalty_schedule(
    lr: np.ndarray, steps_per_epoch: int, momentum: float, hp: LCHparams
) -> np.ndarray:
    """μ_t for every step t: μ₀·a^⌊t/I⌋, a = G^(1/(T − 1)), μ₀ scaled to the total pull."""
    epochs = len(lr) // steps_per_epoch
    a = hp.penalty_growth ** (1.0 / max(epochs - 1, 1))
    growth = a ** (np.arange(len(lr)) // steps_per_epoch)
    return coefficient_for_pull(lr, momentum, hp.total_pull, growth) * growth


class LC(PruningMethod):
    name = "lc"
    source = (
        'Carreira-Perpiñán & Idelbayev, "Learning-Compression" Algorithms for Neural Net '
        "Pruning, CVPR 2018; L0-constrained, top-k over all parameters as in the BIMP "
        "reference code"
    )
    Hparams = LCHparams

    def prepare(self, model: nn.Module, state: TrainState) -> None:
        self.flat = FlatScores(model)
        n_prunable = sum(m.weight.numel() for _, m in state.prunable())
        self.k = top_count(n_prunable, self.target)
        self.mu: np.ndarray | None = None  # per step, once the optimizer's momentum is known

    def penalty(self, state: TrainState) -> float:
        """μ at the current step."""
        if self.mu is None:
            assert state.optimizer is not None
            momentum = float(state.optimizer.param_groups[0].get("momentum", 0.0))
            self.mu = penalty_schedule(
                self.plan_.lr, state.budget.steps_per_epoch, momentum, self.hp
            )
        return float(self.mu[min(state.step, len(self.mu) - 1)])

    def after_backward(self, state: TrainState) -> None:
        mu = self.penalty(state)
        params, grads = self.flat.current()
        if not params or mu == 0.0 or not math.isfinite(mu):
            return
        with torch.no_grad():
            self.flat.write_magnitude(params)  # |w| into the flat buffer
            on_top = self.flat.select_top(self.k, -mu)  # −μ on the top-k, 0 elsewhere
            torch._foreach_add_(grads, params, alpha=mu)  # μ·w everywhere
            torch._foreach_addcmul_(grads, params, on_top)  # and back off the top-k

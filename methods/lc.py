"""Learning-compression (Carreira-Perpiñán & Idelbayev, CVPR 2018), L0-constrained, with the
paper's growing penalty (docs/methods.md, LC).

LC alternates an L step, SGD on L(w) + μ/2·‖w − θ‖², and a C step, θ = Π(w), the projection of
w onto the set of models with k nonzeros (keep the k largest entries). Here the C step is
recomputed after every backward: the global top-k by |w| over **all parameters with
gradients** (Conv/Linear weights, biases, BatchNorm parameters, as in the reference code),
k = ⌊(1 − S)·N_prunable⌋. The penalty's gradient μ·(w − θ) is μ·w on the entries outside the
top-k and 0 on the top-k, so it is added to exactly those gradients. The preset's weight decay
is left as it is (the same for every method).

μ grows geometrically, μ_j = μ₀·a^j with j the epoch, so w is driven toward the constraint set.
A budget of T epochs gets a = G^(1/(T − 1)), so the last epoch's μ is G·μ₀, with G = 1.1^29 (the
paper's a = 1.1 over 30 steps, as in the BIMP code's earlier version). μ₀ follows from the
budget rule every penalty obeys (docs/protocol.md): the total pull Σ_t η_t·μ_t/(1 − momentum)
equals the reference recipe's, ≈ 17. With the preset's wd as a constant penalty, as in the
reference code, a 10-epoch step-decay budget pulls only ≈ 0.04 and LC is dense training plus a
one-shot prune. A stronger pull (docs/methods.md measures 100 with G = 10⁴ at 98 %) is tuning:
``tune`` searches both knobs.

Cost per step: |w| written into one flat buffer, one exact selection on it
(``benchsuite.pruning.scores.top_indices``) and two fused ``_foreach`` updates of the gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
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

REFERENCE_GROWTH = 1.1**29  # ×1.1 at 30 equally spaced points: the BIMP code's earlier version


@dataclass(frozen=True)
class LCHparams:
    total_pull: float = hparam(
        REFERENCE_TOTAL_PULL,
        "budget rule (docs/protocol.md): the penalty's total pull Σ_t η_t·μ_t/(1 − momentum) is "
        "the reference recipe's, ≈ 17 (its wd 1e-4 over 90 ImageNet epochs); μ₀ follows from it "
        "and the budget's LR schedule",
        low=10.0,
        high=1000.0,
        log=True,
        help="the penalty's total pull over the budget (sets μ₀)",
    )
    penalty_growth: float = hparam(
        REFERENCE_GROWTH,
        "LC paper (Carreira-Perpiñán & Idelbayev 2018): μ_j = μ₀·a^j with a = 1.1; 30 such "
        "steps as in the BIMP code's earlier version, G = 1.1^29 ≈ 15.9, spread over the budget",
        low=10.0,
        high=1e5,
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

    def on_start(self, state: TrainState) -> None:
        self.flat = FlatScores(state.model)
        n_prunable = sum(m.weight.numel() for _, m in state.prunable())
        self.k = top_count(n_prunable, self.target)
        self.mu: np.ndarray | None = None  # per step, once the optimizer's momentum is known

    def penalty(self, state: TrainState) -> float:
        """μ at the current step."""
        if self.mu is None:
            assert state.optimizer is not None
            momentum = float(state.optimizer.param_groups[0].get("momentum", 0.0))
            self.mu = penalty_schedule(
                state.plan.lr, state.budget.steps_per_epoch, momentum, self.hp
            )
        return float(self.mu[min(state.step, len(self.mu) - 1)])

    def on_backward(self, state: TrainState) -> None:
        mu = self.penalty(state)
        params, grads = self.flat.current()
        if not params or mu == 0.0 or not math.isfinite(mu):
            return
        with torch.no_grad():
            self.flat.write_magnitude(params)  # |w| into the flat buffer
            on_top = self.flat.select_top(self.k, -mu)  # −μ on the top-k, 0 elsewhere
            torch._foreach_add_(grads, params, alpha=mu)  # μ·w everywhere
            torch._foreach_addcmul_(grads, params, on_top)  # and back off the top-k

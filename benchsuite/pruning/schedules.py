"""Learning-rate schedules as per-step arrays (docs/methods.md).

Arrays, not scheduler objects: a method's whole schedule exists before training starts,
so a test can read the exact LR at step t and a too-short budget is refused up front.
The original-training schedules are produced by stepping PyTorch's own
``torch.optim.lr_scheduler`` classes once per iteration and recording the LR *used* at each
step (read before the scheduler steps), as the reference does. The retraining schedules
(FT, LRW, SLR, CLR, LLR, ALLR) have no PyTorch counterpart (half-cosine warm-up, replay and
compression of a recorded schedule), so they are written here from their definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

ORIGINAL_KINDS = ("constant", "step", "multistep", "exponential", "linear", "cosine")
RETRAIN_SCHEDULES = ("ft", "lrw", "slr", "clr", "llr", "allr")
WARMUP_FRACTION = 0.1  # hard-coded 10 % warm-up of the retraining schedules (docs/methods.md, imp)
WARMUP_START_FACTOR = 1e-20  # original-training warm-up starts at ≈0 (docs/methods.md)


@dataclass(frozen=True)
class ScheduleSpec:
    """A preset's original-training schedule.

    ``milestones`` are fractions of the schedule's own length (so the same spec fits a
    shortened dense phase); ``step_size`` likewise a fraction, for ``step``.
    """

    kind: str = "linear"
    lr: float = 0.1
    warmup_epochs: int = 0
    milestones: tuple[float, ...] = ()
    step_size: float = 0.0
    gamma: float = 0.1
    end_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ORIGINAL_KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; choose from {ORIGINAL_KINDS}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def original_schedule(spec: ScheduleSpec, epochs: int, steps_per_epoch: int) -> np.ndarray:
    """LR used at every iteration of ``epochs`` epochs of original training.

    Warm-up is a linear ramp from ``lr·1e-20``; step/multistep are chained with it
    (their milestones count warm-up iterations), the other kinds run after it.
    """
    total = epochs * steps_per_epoch
    warm = min(spec.warmup_epochs * steps_per_epoch, total)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=spec.lr)
    sched = torch.optim.lr_scheduler
    main_len = total - warm
    if spec.kind == "constant":
        main = sched.ConstantLR(opt, factor=1.0, total_iters=0)
    elif spec.kind == "multistep":
        marks = sorted({round(f * total) for f in spec.milestones})
        main = sched.MultiStepLR(opt, milestones=marks, gamma=spec.gamma)
    elif spec.kind == "step":
        main = sched.StepLR(opt, step_size=max(1, round(spec.step_size * total)), gamma=spec.gamma)
    elif spec.kind == "exponential":
        main = sched.ExponentialLR(opt, gamma=spec.gamma)
    elif spec.kind == "linear":
        main = sched.LinearLR(
            opt, start_factor=1.0, end_factor=spec.end_lr / spec.lr, total_iters=max(main_len, 1)
        )
    else:  # cosine → 0
        main = sched.CosineAnnealingLR(opt, T_max=max(main_len, 1), eta_min=0.0)
    if warm:
        ramp = sched.LinearLR(
            opt, start_factor=WARMUP_START_FACTOR, end_factor=1.0, total_iters=warm
        )
        if spec.kind in ("step", "multistep"):
            scheduler: sched.LRScheduler = sched.ChainedScheduler([ramp, main])
        else:
            scheduler = sched.SequentialLR(opt, [ramp, main], milestones=[warm])
    else:
        scheduler = main
    out = np.empty(total)
    for i in range(total):
        out[i] = opt.param_groups[0]["lr"]
        opt.step()
        scheduler.step()
    return out


def linear_to_zero(lr: float, n_steps: int) -> np.ndarray:
    """η_max → 0 linearly over n steps (Li et al. 2020's budget-aware schedule; BIMP's dense)."""
    return lr * (1.0 - np.arange(n_steps) / n_steps)


@dataclass(frozen=True)
class LRRecord:
    """The LR used at each iteration of the original training, with η_max and η_min."""

    lr: np.ndarray
    warmup_steps: int = 0

    @property
    def eta_max(self) -> float:
        return float(self.lr.max())

    @property
    def eta_min(self) -> float:
        return float(self.lr[self.warmup_steps :].min())


def half_cosine_warmup(eta0: float, n_warmup: int) -> np.ndarray:
    """η(k) = η₀·(1 − cos(πk/W))/2 for k = 0..W−1: from 0 towards η₀ (docs/methods.md, imp)."""
    k = np.arange(n_warmup)
    return eta0 * (1.0 - np.cos(np.pi * k / n_warmup)) / 2.0


def allr_initial_lr(
    eta_max: float, norm_drop: float, fraction: float, phase_steps: int, original_steps: int
) -> float:
    """ALLR's restart LR: clip(η_max·d/√p, η_max·min(T_rt/T, 1), η_max) (docs/methods.md, imp).

    ``fraction`` p is the per-phase fraction of the remaining weights that was pruned and
    ``norm_drop`` d the relative L2 drop over all parameters caused by that prune.
    """
    lo = eta_max * min(phase_steps / original_steps, 1.0)
    return float(np.clip(eta_max * norm_drop / math.sqrt(fraction), lo, eta_max))


def linear_warmup(eta0: float, n_warmup: int) -> np.ndarray:
    """η(k) = η₀·k/W: the linear rise of the earlier BIMP cycles (docs/methods.md, imp, a flag)."""
    return eta0 * np.arange(n_warmup) / n_warmup


def retraining_schedule(
    name: str,
    n_steps: int,
    record: LRRecord,
    *,
    eta0: float | None = None,
    warmup_shape: str = "cosine",
) -> np.ndarray:
    """The per-step LR of one retraining phase of ``n_steps`` iterations (docs/methods.md, imp).

    ``eta0`` overrides the restart LR (ALLR passes its adaptive value; for ``allr`` the
    default is the upper bound η_max, so a plan can be built before the prune is measured).
    ``warmup_shape`` "linear" gives the earlier BIMP version's linear rise.
    """
    if name not in RETRAIN_SCHEDULES:
        raise ValueError(f"unknown retraining schedule {name!r}; choose from {RETRAIN_SCHEDULES}")
    orig = record.lr
    if name == "ft":
        return np.full(n_steps, record.eta_min)
    if name == "lrw":
        if n_steps > len(orig):
            raise ValueError(f"LRW needs {n_steps} recorded steps, the record has {len(orig)}")
        return orig[len(orig) - n_steps :].copy()
    warm = int(WARMUP_FRACTION * n_steps)
    main = n_steps - warm
    if main < 1:
        raise ValueError(f"a retraining phase of {n_steps} steps leaves no steps after warm-up")
    if name == "slr":
        eta0 = record.eta_max
        tilde = orig.copy()
        tilde[: record.warmup_steps] = record.eta_max
        idx = (np.arange(main) * len(orig)) // main
        tail = tilde[idx]
    elif name == "clr":
        eta0 = record.eta_max
        k = np.arange(main)
        tail = record.eta_min + (eta0 - record.eta_min) * (1 + np.cos(np.pi * k / main)) / 2
    else:  # llr, allr
        if eta0 is None or name == "llr":
            eta0 = record.eta_max
        tail = linear_to_zero(eta0, main)
    ramp = linear_warmup if warmup_shape == "linear" else half_cosine_warmup
    return np.concatenate([ramp(eta0, warm), tail])


# chosen here: the total pull of the 90-epoch ImageNet recipe (η 0.1 → 0.01 → 0.001 every 30
# epochs, wd 1e-4, momentum 0.9) that the reference code's GSM and LC relied on:
# Σ_t η_t·λ/(1 − μ) ≈ 5005 steps × 3.33 × 1e-4 / 0.1 ≈ 17, a shrink of e^−17 ≈ 4e-8
REFERENCE_TOTAL_PULL = 17.0


def total_pull(lr: np.ndarray, momentum: float, coefficient: np.ndarray | float) -> float:
    """Σ_t η_t·c_t/(1 − μ): the log of the factor by which a decay c_t (an L2 coefficient, with
    no loss gradient against it) shrinks a weight over the schedule, momentum's steady-state
    gain 1/(1 − μ) included."""
    return float(np.sum(lr * coefficient)) / (1.0 - momentum)


def coefficient_for_pull(
    lr: np.ndarray, momentum: float, pull: float, growth: np.ndarray | None = None
) -> float:
    """c₀ such that the decay c_t = c₀·growth_t has ``total_pull`` equal to ``pull``: how GSM's
    decay and LC's penalty are scaled to a budget, so a 10-epoch recipe pulls as hard as the
    90-epoch one they were designed for."""
    shape = np.ones_like(lr) if growth is None else growth
    return pull / total_pull(lr, momentum, shape)

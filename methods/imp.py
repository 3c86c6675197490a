"""Budget-equal iterative magnitude pruning (IMP) with the six retraining schedules.

"Restricted IMP" (docs/methods.md): dense training for the budget minus E retraining epochs,
then J global-magnitude prune–retrain phases sharing E. The dense phase is the "original
training" whose recorded LR feeds FT, LRW, SLR, CLR and ALLR (docs/methods.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from benchsuite import (
    RETRAIN_SCHEDULES,
    Budget,
    BudgetError,
    LRRecord,
    Phase,
    Plan,
    PruningMethod,
    ScheduleSpec,
    TrainState,
    allr_initial_lr,
    hparam,
    preset_record,
    split_epochs,
)
from benchsuite import retraining_schedule as phase_schedule


@dataclass(frozen=True)
class IMPHparams:
    schedule: str = hparam(
        "allr", "Zimmer et al. 2023 §3 (ALLR, the paper's proposal)", choices=RETRAIN_SCHEDULES
    )
    phases: int = hparam(1, "Zimmer et al. 2023, Table 1: one-shot IMP (J = 1)", low=1, high=5)
    retrain_fraction: float = hparam(
        0.1,
        "Zimmer et al. 2023, Table 1: its longest retraining budget, ≈ 10 of 90 epochs, as a "
        "fraction of the budget (docs/protocol.md, budget rules)",
        low=0.05,
        high=0.5,
    )
    allr_last_phase_only: bool = hparam(
        False, "reference code: adaptive LR in every phase (earlier version: last phase only)"
    )


class IMP(PruningMethod):
    """Prune a per-phase fraction p = 1 − (1 − S)^(1/J) of the remaining weights, retrain."""

    name = "imp"
    source = (
        "Han et al., NeurIPS 2015; schedules: Renda et al. 2020, Le & Hua 2021, Zimmer et al. 2023"
    )
    Hparams = IMPHparams
    patterns = ("unstructured", "n:m")  # N:M: each prune within the groups (docs/methods.md)
    reset_momentum_after_dense = True  # docs/methods.md: fresh optimizer after the dense stage

    # --- the plan -----------------------------------------------------------------------------
    @classmethod
    def layout(cls, budget: Budget, hp: IMPHparams) -> tuple[int, list[int]]:
        """Dense epochs and the retraining epochs of each phase."""
        retrain = round(hp.retrain_fraction * budget.epochs)
        if hp.phases < 1 or retrain < hp.phases or budget.epochs - retrain < 1:
            raise BudgetError(
                f"imp: a budget of {budget.epochs} epochs with retrain_fraction="
                f"{hp.retrain_fraction} gives {retrain} retraining epochs for {hp.phases} phases "
                f"and {budget.epochs - retrain} dense epochs; each needs >= 1"
            )
        return budget.epochs - retrain, split_epochs(retrain, hp.phases)

    @classmethod
    def dense_record(cls, budget: Budget, hp, schedule: ScheduleSpec, epochs: int) -> LRRecord:
        return preset_record(schedule, budget, epochs)

    @classmethod
    def retrain_schedule_name(cls, hp) -> str:
        return hp.schedule

    @classmethod
    def phase_lr(cls, hp, n_steps: int, record: LRRecord) -> np.ndarray:
        return phase_schedule(cls.retrain_schedule_name(hp), n_steps, record)

    @classmethod
    def plan(cls, budget: Budget, hp, target: float, schedule: ScheduleSpec) -> Plan:
        dense_epochs, phase_epochs = cls.layout(budget, hp)
        record = cls.dense_record(budget, hp, schedule, dense_epochs)
        phases = [Phase("dense", 0, dense_epochs)]
        lrs = [record.lr]
        for j, epochs in enumerate(phase_epochs):
            start = phases[-1].end_epoch
            phases.append(Phase(f"retrain-{j + 1}", start, start + epochs))
            try:
                lrs.append(cls.phase_lr(hp, budget.steps(epochs), record))
            except ValueError as exc:
                raise BudgetError(f"{cls.name}: {exc}") from exc
        return Plan(
            budget,
            tuple(phases),
            np.concatenate(lrs),
            cache_epoch=dense_epochs,
            cache_key=f"{cls.dense_kind()}-dense-{dense_epochs}ep",
        )

    @classmethod
    def dense_kind(cls) -> str:
        return "preset-schedule"

    # --- training -----------------------------------------------------------------------------
    def __init__(self, hp, target: float, plan: Plan) -> None:
        super().__init__(hp, target, plan)
        self.n_phases = len(plan.phases) - 1
        self.fraction = 1.0 - (1.0 - target) ** (1.0 / self.n_phases)
        self.original_steps = plan.budget.steps(plan.phases[0].epochs)
        # η_max of the dense phase's LR record, which the plan's first phase is
        self.eta_max = float(plan.lr[: self.original_steps].max())

    def on_epoch_end(self, state: TrainState) -> None:
        boundaries = [p.start_epoch for p in state.plan.phases[1:]]
        if state.epoch not in boundaries:
            return
        j = boundaries.index(state.epoch)  # 0-based index of the phase about to start
        if j == 0 and self.reset_momentum_after_dense:
            state.reset_optimizer()
        self.prune(state, j)

    def prune(self, state: TrainState, j: int) -> None:
        """One prune (``prune_masks``), its diagnostics, then the phase's restart LR."""
        masks = state.hard_masks()
        weights = masks.params
        acc_before = state.evaluate_val() if state.evaluate_val else None
        norm_before = state.parameter_norm()
        new = self.prune_masks(state, j, masks.bool_masks())
        with torch.no_grad():
            removed_sq = sum(float((w[~m] ** 2).sum()) for w, m in zip(weights, new))
        masks.set(new, state.optimizer)
        drop = math.sqrt(removed_sq) / norm_before
        state.log("norm_drop", math.sqrt(removed_sq))
        state.log("relative_norm_drop", drop)
        if acc_before is not None and state.evaluate_val is not None and acc_before > 0:
            state.log("pruning_instability", (acc_before - state.evaluate_val()) / acc_before)
        if self.retrain_schedule_name(self.hp) == "allr":
            self.rescale_allr(state, j, drop)

    def prune_masks(self, state: TrainState, j: int, current: list[torch.Tensor]) -> list:
        """Phase j's new masks: the fraction p of the remaining weights by global magnitude,
        within the run's pattern (N:M: the last prune leaves N in every group)."""
        return state.pattern.prune_remaining(state.hard_masks().params, self.fraction, current)

    def rescale_allr(self, state: TrainState, j: int, drop: float) -> None:
        phase = state.plan.phases[j + 1]
        steps = state.plan.phase_steps(phase)
        eta_max = self.eta_max
        last = j == self.n_phases - 1
        if not last and self.hp.allr_last_phase_only:
            eta0 = eta_max  # plain LLR in the earlier phases (earlier version)
        else:
            n = steps.stop - steps.start
            eta0 = allr_initial_lr(eta_max, drop, self.fraction, n, self.original_steps)
        state.lr[steps] *= eta0 / eta_max
        state.log("allr_initial_lr", eta0)

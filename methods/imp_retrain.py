"""One-shot IMP with retraining ON TOP of the dense budget: the setting of the paper's Table 1.

NOT budget-equal (README, "The Table 1 study"): the model trains dense for the preset's
full budget of T epochs (T·I steps, cached per seed and shared by every schedule, sparsity
and retraining budget), is pruned once to the target by global magnitude (J = 1), then
retrains for N = round(retrain_budget · T·I) further steps. The retraining budget is the
experimental variable, so it has step granularity (2.22 % of 10 epochs × 421 steps is 93
steps, not 0 epochs) and every schedule at one budget gets exactly the same N steps. The
"original training" of the schedules (LRW's replay, SLR's compression, ALLR's lower bound
min(N/(T·I), 1)) is the whole dense run. Excluded from ``--methods all``: its runs take
T·I + N steps, more than every budget-equal method; ``benchsuite study table1`` runs it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from benchsuite import (
    RETRAIN_SCHEDULES,
    Budget,
    BudgetError,
    LRRecord,
    Phase,
    Plan,
    ScheduleSpec,
    hparam,
    preset_record,
)

from .imp import IMP

TABLE1_BUDGETS = (0.0222, 0.0555, 0.1111)  # 2, 5 and 10 of the paper's 90 dense epochs


@dataclass(frozen=True)
class IMPRetrainHparams:
    schedule: str = hparam(
        "allr", "Zimmer et al. 2023 §3 (ALLR, the paper's proposal)", choices=RETRAIN_SCHEDULES
    )
    retrain_budget: float = hparam(
        TABLE1_BUDGETS[0],
        "Zimmer et al. 2023, Table 1: the shortest retraining budget, 2.22 % of the dense "
        "budget (2 of 90 epochs)",
        help="retraining steps as a fraction of the dense budget's steps, added after it",
    )


@functools.lru_cache(maxsize=8)
def _dense_record(schedule: ScheduleSpec, budget: Budget) -> LRRecord:
    """One recorded dense schedule per preset: a study plans hundreds of runs on the same one
    (stepping torch's scheduler over 4210 steps takes ~0.5 s); read-only, so never edited."""
    record = preset_record(schedule, budget)
    record.lr.flags.writeable = False
    return record


class IMPRetrain(IMP):
    """Dense for the full budget, one global magnitude prune, N extra retraining steps."""

    name = "imp-retrain"
    source = (
        "Han et al., NeurIPS 2015; Table 1 setting and schedules: Zimmer et al. 2023 "
        "(retraining added to the dense budget, not budget-equal)"
    )
    Hparams = IMPRetrainHparams
    budget_equal = False

    @classmethod
    def retrain_steps(cls, budget: Budget, hp: IMPRetrainHparams) -> int:
        """N = round(retrain_budget · T·I): whole steps, the same for every schedule."""
        n = round(hp.retrain_budget * budget.total_steps)
        if not hp.retrain_budget > 0 or n < 1:
            raise BudgetError(
                f"{cls.name}: retrain_budget={hp.retrain_budget} of {budget.total_steps} dense "
                "steps gives no retraining step; give a fraction > 0 that leaves >= 1 step"
            )
        return n

    @classmethod
    def plan(
        cls, budget: Budget, hp: IMPRetrainHparams, target: float, schedule: ScheduleSpec
    ) -> Plan:
        n = cls.retrain_steps(budget, hp)
        record = _dense_record(schedule, budget)
        try:
            retrain = cls.phase_lr(hp, n, record)
        except ValueError as exc:
            raise BudgetError(f"{cls.name}: {exc}") from exc
        end = budget.epochs + -(-n // budget.steps_per_epoch)  # the last epoch may be partial
        return Plan(
            budget,
            (Phase("dense", 0, budget.epochs), Phase("retrain-1", budget.epochs, end)),
            np.concatenate([record.lr, retrain]),
            cache_epoch=budget.epochs,
            cache_key=f"{cls.dense_kind()}-dense-{budget.epochs}ep",
            extra_steps=n,
        )

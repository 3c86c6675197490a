"""The base of methods that follow a sparsity ramp: Zhu & Gupta's cubic schedule, reached at the
ends of every P-th epoch (GMP, DPF, and a plugin's own ramped method).

A subclass says what reaching a scheduled sparsity means (``reach``): the default prunes the
still-unpruned weights by global magnitude through the harness's hard masks; DPF recomputes a
mask over dense weights instead. The ramp, its checks against the budget and its end
(``ramp_end_epoch``) are written once, here.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchsuite.core.budget import Budget, Plan
from benchsuite.core.method import PruningMethod, TrainState, hparam
from benchsuite.pruning.ramps import check_interval, cubic_schedule, ramp_end_epoch
from benchsuite.pruning.schedules import ScheduleSpec


@dataclass(frozen=True)
class RampHparams:
    """The ramp's two knobs; a subclass's ``Hparams`` derives from it and adds its own."""

    pruning_interval: int = hparam(
        1,
        "reference code (its only concrete value, the MNIST smoke test): the finest "
        "epoch-granular cubic ramp, valid for every budget of >= 2 epochs (2P <= T)",
        low=1,
        high=5,
        help="P, epochs between prunes; prunes at the ends of epochs P, 2P, .., E",
    )
    ramp_end: float | None = hparam(
        None,
        "reference code (the BIMP paper's GMP and DPF): None is its rule, ⌊T/P⌋ − 1 prunes and "
        "the last at epoch E = (⌊T/P⌋ − 1)·P; a number is the fraction of the budget",
        low=0.2,
        high=0.9,
        help="fraction of the budget at whose end the target is reached (E ≈ ramp_end·T)",
    )


class ScheduledMagnitude(PruningMethod):
    """Reaches S·(1 − (1 − e/E)³) at the end of epochs e = P, 2P, .., E (``schedule``)."""

    Hparams = RampHparams

    @classmethod
    def plan(cls, budget: Budget, hp: RampHparams, target: float, schedule: ScheduleSpec) -> Plan:
        check_interval(cls.name, budget, hp.pruning_interval)
        plan = super().plan(budget, hp, target, schedule)
        ramp_end_epoch(budget, hp.pruning_interval, hp.ramp_end, cls.name)  # refuses
        return plan

    def __init__(self, hp: RampHparams, target: float, plan: Plan) -> None:
        super().__init__(hp, target, plan)
        last = ramp_end_epoch(plan.budget, hp.pruning_interval, hp.ramp_end, self.name)
        self.schedule = cubic_schedule(last, hp.pruning_interval, target)  # epoch → sparsity
        self.last_epoch = max(self.schedule)
        self.current = 0.0  # the sparsity reached so far (S_prev)

    def on_epoch_end(self, state: TrainState) -> None:
        goal = self.schedule.get(state.epoch)
        if goal is None:
            return
        self.reach(state, goal)
        state.log(f"{self.name}_scheduled_sparsity", goal)

    def reach(self, state: TrainState, goal: float) -> None:
        """Hard-mask the smallest remaining weights: the fraction 1 − (1 − goal)/(1 − S_prev)
        of the still-unpruned ones, globally and within the run's pattern (N:M: the ramp ends
        with N in every group); zeroes them and their momentum once."""
        masks = state.hard_masks()
        fraction = 1.0 - (1.0 - goal) / (1.0 - self.current)
        new = state.pattern.prune_remaining(masks.params, fraction, masks.bool_masks())
        masks.set(new, state.optimizer)
        self.current = goal

"""Soft filter pruning (He, Kang, Dong, Fu & Yang, Soft Filter Pruning for Accelerating Deep
Convolutional Neural Networks, IJCAI 2018, arXiv:1808.06866), docs/methods.md.

Trains the whole budget from scratch. At the end of every P-th epoch, in every channel group
the channels whose producing filters have the smallest L2 norm are set to zero, the same
number in each group (the uniform ratio whose weight sparsity is nearest the target S,
``ChannelGroups.counts_for``). The zeroed filters are not masked: they keep receiving gradient
and may grow back and be kept at the next selection ("soft"). At the end the last selection
is removed for good, with everything that reads those channels.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchsuite import (
    Budget,
    BudgetError,
    ChannelGroups,
    Plan,
    PruningMethod,
    ScheduleSpec,
    TrainState,
    hparam,
)


@dataclass(frozen=True)
class SFPHparams:
    pruning_interval: int = hparam(
        1,
        "He et al. 2018 §3 (Algorithm 1): the soft prune runs after every training epoch",
        low=1,
        high=3,
        help="P, epochs between soft prunes",
    )


class SFP(PruningMethod):
    """Zero the lowest-L2 filters of each group every P epochs; remove them at the end."""

    name = "sfp"
    source = (
        "He, Kang, Dong, Fu & Yang, Soft Filter Pruning for Accelerating Deep Convolutional Neural "
        "Networks, IJCAI 2018, arXiv:1808.06866"
    )
    Hparams = SFPHparams
    patterns = ("channel",)

    groups: ChannelGroups | None = None

    @classmethod
    def plan(cls, budget: Budget, hp: SFPHparams, target: float, schedule: ScheduleSpec) -> Plan:
        if not 1 <= hp.pruning_interval <= budget.epochs:
            raise BudgetError(
                f"sfp: pruning_interval={hp.pruning_interval} must lie in [1, {budget.epochs}] "
                f"(the budget's epochs)"
            )
        return super().plan(budget, hp, target, schedule)

    def on_start(self, state: TrainState) -> None:
        self.groups = ChannelGroups(state.model, state.example_input())
        self.counts = self.groups.counts_for(self.target)

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch % self.hp.pruning_interval:
            return
        assert self.groups is not None
        selected = self.groups.select(self.counts, 2)  # afresh: zeroed filters may return
        self.groups.apply(selected, inputs=False)  # the filters only: soft

    def on_finish(self, state: TrainState) -> None:
        """A last selection removed for good, with the layers' inputs that read it (after a
        soft prune at the last epoch, the same channels: they are the ones at zero)."""
        assert self.groups is not None
        self.groups.apply(self.groups.select(self.counts, 2))

"""The training budget in optimizer steps, and a method's plan of phases inside it.

Every method gets exactly ``Budget.total_steps`` optimizer steps; a ``Plan`` says how a
method spends them (phases and the learning rate of every step) before training starts,
so a budget that is too short is refused up front and the schedule is testable as an array.
The one exception is declared in the plan: ``Plan.extra_steps`` adds steps after the budget
(``imp-retrain``, the retraining study of the paper's Table 1, which is not budget-equal: see
the README's "The Table 1 study"); its last phase may end inside an epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class BudgetError(ValueError):
    """A method's plan does not fit the budget (reported as bad input, exit code 2)."""


@dataclass(frozen=True)
class Budget:
    epochs: int
    steps_per_epoch: int

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise BudgetError(f"epochs must be >= 1, got {self.epochs}")
        if self.steps_per_epoch < 1:
            raise BudgetError(f"steps per epoch must be >= 1, got {self.steps_per_epoch}")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def steps(self, epochs: int) -> int:
        return epochs * self.steps_per_epoch


@dataclass(frozen=True)
class Phase:
    """A contiguous block of whole epochs; ``start_epoch`` inclusive, ``end_epoch`` exclusive."""

    name: str
    start_epoch: int
    end_epoch: int

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.start_epoch


@dataclass
class Plan:
    """Phases covering the budget and the learning rate used at every step.

    ``lr[i]`` is the learning rate of global step ``i`` (0-based). A method whose rate
    depends on something measured during training (ALLR's norm drop) stores its upper
    bound here and rescales its own segment at run time through ``TrainState.lr``.
    ``cache_epoch``/``cache_key``: the first ``cache_epoch`` epochs depend only on
    ``cache_key`` (plus preset and seed), so runs sharing them may share one checkpoint.
    ``extra_steps``: steps run after the budget's whole epochs (0 for every budget-equal
    method); the phases then tile ``epochs`` epochs, the last one ending after
    ``total_steps`` steps, possibly inside its last epoch.
    """

    budget: Budget
    phases: tuple[Phase, ...]
    lr: np.ndarray
    cache_epoch: int | None = None
    cache_key: str | None = None
    extra_steps: int = 0

    def __post_init__(self) -> None:
        if self.extra_steps < 0:
            raise BudgetError(f"extra steps must be >= 0, got {self.extra_steps}")
        if len(self.lr) != self.total_steps:
            raise BudgetError(
                f"plan has {len(self.lr)} learning rates for {self.total_steps} steps"
            )
        epoch = 0
        for phase in self.phases:
            if phase.start_epoch != epoch or phase.epochs < 1:
                raise BudgetError(f"phases do not tile the budget: {self.phases}")
            epoch = phase.end_epoch
        if epoch != self.epochs:
            raise BudgetError(f"phases cover {epoch} epochs, the plan is {self.epochs} epochs")

    @property
    def total_steps(self) -> int:
        """The optimizer steps the loop runs: the budget's, plus any declared extra steps."""
        return self.budget.total_steps + self.extra_steps

    @property
    def epochs(self) -> int:
        """Epochs the loop starts, the last one possibly partial."""
        return self.budget.epochs + math.ceil(self.extra_steps / self.budget.steps_per_epoch)

    def phase_steps(self, phase: Phase) -> slice:
        spe = self.budget.steps_per_epoch
        return slice(phase.start_epoch * spe, min(phase.end_epoch * spe, self.total_steps))


def split_epochs(total: int, parts: int) -> list[int]:
    """⌊total/parts⌋ epochs each, the remainder added to the last (docs/methods.md, imp)."""
    base = total // parts
    return [base] * (parts - 1) + [total - base * (parts - 1)]

"""The training budget in optimizer steps, and a method's plan of phases inside it.

Every method gets exactly ``Budget.total_steps`` optimizer steps; a ``Plan`` says how a
method spends them (phases and the learning rate of every step) before training starts,
so a budget that is too short is refused up front and the schedule is testable as an array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """

    budget: Budget
    phases: tuple[Phase, ...]
    lr: np.ndarray
    cache_epoch: int | None = None
    cache_key: str | None = None
    notes: dict[str, float | int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.lr) != self.budget.total_steps:
            raise BudgetError(
                f"plan has {len(self.lr)} learning rates for {self.budget.total_steps} steps"
            )
        epoch = 0
        for phase in self.phases:
            if phase.start_epoch != epoch or phase.epochs < 1:
                raise BudgetError(f"phases do not tile the budget: {self.phases}")
            epoch = phase.end_epoch
        if epoch != self.budget.epochs:
            raise BudgetError(
                f"phases cover {epoch} epochs, the budget is {self.budget.epochs} epochs"
            )

    def phase_steps(self, phase: Phase) -> slice:
        spe = self.budget.steps_per_epoch
        return slice(phase.start_epoch * spe, phase.end_epoch * spe)


def split_epochs(total: int, parts: int) -> list[int]:
    """⌊total/parts⌋ epochs each, the remainder added to the last (reference §3.1, §4)."""
    base = total // parts
    return [base] * (parts - 1) + [total - base * (parts - 1)]

"""The Table 1 study's board: one cell per (schedule, target, retraining budget), its columns'
comparisons, and what the study found."""

from __future__ import annotations

from dataclasses import dataclass

from benchsuite.boards.leaderboard import Cell
from benchsuite.boards.stats import ALPHA, Comparison


@dataclass
class Column:
    """One (sparsity, retraining budget) column and how ALLR fares in it."""

    target: float
    budget: float
    leader: str | None = None
    allr: str = "missing"  # first (highest mean, or tied) | within noise | behind | untested
    allr_gap: float | None = None  # leader − ALLR, mean paired difference (points)
    allr_p: float | None = None
    second: str | None = None  # when ALLR is first: the runner-up and the link's status
    second_status: str | None = None


@dataclass
class StudyBoard:
    experiment: str
    targets: list[float]
    budgets: list[float]
    schedules: list[str]
    cells: dict[tuple[str, float, float], Cell]  # (schedule, target, budget)
    columns: list[Column]
    comparisons: list[Comparison]
    retrain_steps: dict[float, int | None]  # budget → N
    dense_steps: int | None
    problems: list[str]
    notes: list[str]
    findings: list[str]
    headline: str
    header: dict[str, str]
    alpha: float = ALPHA

    def cell(self, schedule: str, target: float, budget: float) -> Cell | None:
        return self.cells.get((schedule, target, budget))

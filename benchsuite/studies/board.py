"""The Table 1 study's board: one cell per (schedule, target, retraining budget), its columns'
comparisons, and what the study found."""

from __future__ import annotations

from dataclasses import dataclass

from benchsuite.boards.leaderboard import Cell
from benchsuite.boards.stats import ALPHA, Comparison


@dataclass
class Column:
    """One (sparsity, retraining budget) column: who has the highest mean, and how ALLR fares
    against it and against LLR by Holm-corrected paired tests (``boards/stats.py``: the best
    against the others is one family, the remaining pairs the other)."""

    target: float
    budget: float
    leader: str | None = None  # the highest mean
    allr: str = "missing"  # first | not separated | behind | untested | missing
    allr_gap: float | None = None  # leader − ALLR, mean paired difference (points)
    allr_p: float | None = None  # Holm-corrected
    vs_llr: str = "missing"  # ALLR against LLR: ahead | behind | not separated | untested
    llr_gap: float | None = None  # ALLR − LLR, mean paired difference (points)
    llr_p: float | None = None  # Holm-corrected
    ft_lrw_last: bool = False  # FT and LRW hold the two lowest means
    allr_lr: float | None = None  # ALLR's initial LR after the prune ÷ η_max, mean over seeds


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

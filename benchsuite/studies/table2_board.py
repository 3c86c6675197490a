"""The Table 2 study's board as data: the paper's eight methods and the reference rows, and
each column's comparison with the paper (the evidence behind every generated sentence)."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchsuite.boards.leaderboard import Leaderboard, Row
from benchsuite.boards.stats import ALPHA, FloorTest


@dataclass(frozen=True)
class Pair:
    """Two of the paper's methods in one column: the paper's order against the board's.

    ``upper`` is the one the paper puts higher. ``diff`` is the board's mean paired difference
    upper − lower over the shared seeds (timing rounds for img/s); ``p`` the two-sided paired
    t-test's, ``p_holm`` the same after Holm's correction over the column's tested pairs.
    """

    upper: str
    lower: str
    paper_diff: float
    shared: int
    diff: float | None
    t: float | None
    p: float | None
    p_holm: float | None
    status: str  # agrees | disagrees | within noise | untested

    @property
    def reversed_by_mean(self) -> bool:
        return self.diff is not None and self.diff < 0


@dataclass
class ColumnComparison:
    """One column (a paper sparsity, or img/s) of the board against the paper's."""

    column: str  # "70%", ..., or "img/s"
    target: float | None  # None for img/s
    paper_order: list[str]  # the compared methods, the paper's best first
    board_order: list[str]  # the same methods by the board's mean, best first
    board_means: dict[str, float]
    paper_values: dict[str, float]
    tau: float | None  # Kendall's τ-b between the paper's values and the board's means
    tau_p: float | None
    pairs: list[Pair]
    floor: list[FloorTest] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(p.status == status for p in self.pairs)


@dataclass
class Table2Board:
    experiment: str
    targets: list[float]
    board: Leaderboard  # the paper's eight methods and dense: cells, marks among the eight, img/s
    references: list[Row]  # the floor and RigL: shown for reference, never ranked with the eight
    columns: list[ColumnComparison]
    headline: str
    findings: list[str]
    problems: list[str]
    notes: list[str]
    header: dict[str, str]
    alpha: float = ALPHA

    @property
    def rows(self) -> list[Row]:
        """The table's rows in display order: the eight (the paper's order), then references."""
        ranked = [r for r in self.board.rows if not r.reference]
        dense = [r for r in self.board.rows if r.reference]
        return ranked + dense + self.references

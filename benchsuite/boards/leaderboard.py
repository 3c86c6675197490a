"""The leaderboard as data: rows of method variants, cells of seeds, and what marks them.

Built by ``benchsuite.aggregation``, rendered by ``benchsuite.report`` and ``benchsuite.plot``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchsuite.boards.stats import ALPHA, Comparison, Mark, Stat
from benchsuite.core.record import Metrics

# chosen here: half a point of sparsity changes accuracy and speedup measurably at 90-98 %
# (docs/leaderboards.md); a cell beyond it is a different comparison, not a better method
OVERSHOOT_PP = 0.5
# chosen here: a seed within 2 pp of chance (100 / classes) did not learn; a cell with such a
# seed is bimodal or dead, so it is printed seed by seed and left out of the marks
CHANCE_PP = 2.0
FLOOR_METHOD = "oneshot"  # dense training + the harness's projection: the floor row
REFERENCE_METHOD = "dense"


class UnfairComparison(Exception):
    """The runs of one table were not produced under the same protocol."""


@dataclass
class Cell:
    target: float
    n_expected: int
    seeds: tuple[int, ...] = ()
    run_ids: dict[int, str] = field(default_factory=dict)  # seed -> run id of finished runs
    failed: list[dict[str, Any]] = field(default_factory=list)  # run_id, seed, status, error
    running: list[str] = field(default_factory=list)
    by_seed: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> seed -> value
    stats: dict[str, Stat] = field(default_factory=dict)  # test_accuracy, speedup, sparsity
    marks: dict[str, Mark] = field(default_factory=dict)
    collapsed: dict[int, tuple[str, ...]] = field(default_factory=dict)  # seed -> empty layers
    overshoot: bool = False  # mean achieved sparsity > target + OVERSHOOT_PP
    at_chance: tuple[int, ...] = ()  # seeds whose test accuracy is within CHANCE_PP of chance
    measured_unavailable: str | None = None  # why the cell has no measured speedup (N:M on CPU)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def ranked(self) -> bool:
        """Compared and marked with the others: no collapsed layer, no seed at chance, no
        sparsity overshoot."""
        return not (self.collapsed or self.overshoot or self.at_chance)

    @property
    def seed_by_seed(self) -> bool:
        """Some seed failed (collapsed or at chance): the cell is shown seed by seed."""
        return bool(self.collapsed or self.at_chance)

    def flags(self) -> list[str]:
        """Why the cell is left out of the marks (the text of its footnote)."""
        out = []
        if self.collapsed:
            names = list(
                dict.fromkeys(n for s in sorted(self.collapsed) for n in self.collapsed[s])
            )
            out.append(
                f"layer collapse: {', '.join(names)} ({len(self.collapsed)} of {self.n} seeds)"
            )
        if self.at_chance:
            out.append(
                f"did not learn: test accuracy at chance in {len(self.at_chance)} of {self.n} "
                f"seeds (seed {', '.join(map(str, self.at_chance))})"
            )
        if self.overshoot:
            mean = self.stats[Metrics.SPARSITY].mean
            out.append(
                f"sparsity {mean * 100:.2f} % > target {self.target * 100:.4g} % + "
                f"{OVERSHOOT_PP:g} pp: not the same comparison"
            )
        return out

    @property
    def short(self) -> bool:
        return self.n < self.n_expected


@dataclass
class Throughput:
    value: float
    source: str  # "isolated" | "contended" (timed while the machine was busy) | "in-trial"
    run_ids: tuple[str, ...]
    device: str | None = None
    threads: str | None = None
    mark: Mark = field(default_factory=Mark)
    rounds: tuple[float, ...] = ()  # per-round figures of an interleaved measurement

    @property
    def environment(self) -> str:
        """Where it was timed, thread count once: a CPU's device label already names it."""
        if self.device and self.device.startswith("cpu:"):
            return self.device
        return f"{self.device}, {self.threads} threads"


@dataclass
class Row:
    method: str
    variant: str
    reference: bool
    cells: dict[float, Cell] = field(default_factory=dict)
    img_per_s: Throughput | None = None
    tuned: bool | None = None
    pattern: str = "unstructured"  # the sparsity pattern of its runs (--pattern)

    @property
    def label(self) -> str:
        return self.method if self.variant == "default" else f"{self.method} ({self.variant})"

    def cell(self, target: float | None) -> Cell | None:
        """The cell shown in column ``target``: the reference row shows its one cell everywhere."""
        if self.reference:
            return next(iter(self.cells.values()), None)
        return self.cells.get(target)


@dataclass
class Leaderboard:
    experiment: str
    targets: list[float]
    rows: list[Row]
    comparisons: list[Comparison]
    problems: list[str]  # fairness problems: publish refuses unless forced
    notes: list[str]  # worth saying, not unfair
    header: dict[str, str]
    alpha: float = ALPHA
    tuning: dict[str, Any] | None = None  # a tuned board's tuning (tuning_section.tuning_for)
    # a tuned board's paired differences to a defaults board (findings.tuned_minus_default)
    deltas: list[Any] | None = None

    @property
    def fair(self) -> bool:
        return not self.problems

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)

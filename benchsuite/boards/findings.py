"""What a board says in words, generated from its corrected statistics and nothing else.

Every sentence here is a reading of a test: a best group (the methods no Holm-corrected paired
test separates from a column's best), a separation from the one-shot floor (its own family,
``stats.floor_tests``), a Friedman test of
the methods' ranks across the board's columns with Nemenyi's critical difference (Demšar 2006),
and, for a tuned board, the paired difference to the defaults with its interval. Nothing says
"leads" or "beats" without a separation, and "not separated" is never read as "equal".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from benchsuite.boards.format import percent, two_dp
from benchsuite.boards.leaderboard import FLOOR_METHOD, Cell, Leaderboard, Row
from benchsuite.boards.stats import ALPHA, Stat, floor_tests, holm, paired_test
from benchsuite.core.record import Metrics

ACC = Metrics.TEST_ACCURACY


@dataclass
class AcrossTargets:
    """The methods' average ranks over the board's blocks (every target × seed), with the
    Friedman test and Nemenyi's critical difference (Demšar 2006, §3.2.2)."""

    methods: list[str]  # by average rank, best first
    average_rank: dict[str, float]
    blocks: int
    chi2: float | None = None
    p: float | None = None
    cd: float | None = None  # Nemenyi's critical difference of average ranks at ALPHA
    cliques: list[list[str]] = field(default_factory=list)  # groups within CD of each other
    left_out: list[str] = field(default_factory=list)  # rows without every block
    matrix: np.ndarray | None = None  # blocks × methods, for the Nemenyi tests of the figure


def best_group(board: Leaderboard, target: float, metric: str = ACC) -> list[Row]:
    """The rows in the column's best group, best mean first."""
    rows = [r for r in board.rows if not r.reference and r.cells.get(target) is not None]
    group = [r for r in rows if r.cells[target].marks[metric].best]
    return sorted(group, key=lambda r: -r.cells[target].stats[metric].mean)


def compared(board: Leaderboard, target: float, metric: str = ACC) -> list[Row]:
    """The rows the column's marks compared (not reference, not left out, with a value)."""
    return [
        r
        for r in board.rows
        if not r.reference
        and (c := r.cells.get(target)) is not None
        and c.ranked
        and c.by_seed.get(metric)
    ]


def across_targets(board: Leaderboard, alpha: float = ALPHA) -> AcrossTargets | None:
    """Average ranks of the rows that have a test accuracy in every block (target × seed),
    ranked within each block (1 = the highest accuracy, ties averaged); ``None`` with fewer
    than three such rows or two blocks."""
    rows = [r for r in board.rows if not r.reference]
    seeds = sorted({s for r in rows for c in r.cells.values() for s in c.seeds})
    blocks = [(t, s) for t in board.targets for s in seeds]
    full = [
        r
        for r in rows
        if all(s in r.cells.get(t, Cell(t, 0)).by_seed.get(ACC, {}) for t, s in blocks)
    ]
    left_out = [r.label for r in rows if r not in full]
    if len(full) < 3 or len(blocks) < 2:
        return None
    matrix = np.array([[r.cells[t].by_seed[ACC][s] for r in full] for t, s in blocks])
    ranks = np.array([stats.rankdata(-row, method="average") for row in matrix])
    average = {r.label: float(v) for r, v in zip(full, ranks.mean(axis=0))}
    methods = sorted(average, key=lambda m: (average[m], m))
    k, n = len(full), len(blocks)
    result = AcrossTargets(methods, average, n, left_out=left_out, matrix=matrix)
    if np.ptp(matrix, axis=1).max() > 0:  # friedmanchisquare needs some spread
        test = stats.friedmanchisquare(*matrix.T)
        result.chi2, result.p = float(test.statistic), float(test.pvalue)
    q = float(stats.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    result.cd = q * math.sqrt(k * (k + 1) / (6 * n))
    result.cliques = cliques(methods, average, result.cd)
    return result


def cliques(methods: list[str], average: dict[str, float], cd: float) -> list[list[str]]:
    """The CD diagram's bars: maximal runs of methods (by average rank) whose first and last
    differ by less than ``cd``; a bar inside another is not drawn."""
    out: list[list[str]] = []
    for i, m in enumerate(methods):
        run = [x for x in methods[i:] if average[x] - average[m] < cd]
        if len(run) > 1 and not any(set(run) <= set(o) for o in out):
            out.append(run)
    return out


def _names(rows: list[Row]) -> str:
    return ", ".join(r.label for r in rows)


def _acc(cell: Cell) -> str:
    st = cell.stats[ACC]
    return two_dp(st.mean) if st.std is None else f"{two_dp(st.mean)} ± {two_dp(st.std)}"


def column_findings(board: Leaderboard, target: float) -> list[str]:
    """One column in words: its best group, the rows not separated from the floor, the rows
    left out."""
    out: list[str] = []
    where = f"At {percent(target)}"
    rows = compared(board, target)
    group = best_group(board, target)
    if len(rows) >= 2 and group:
        best = group[0]
        if len(group) == 1:
            out.append(
                f"{where}, {best.label} ({_acc(best.cells[target])} %) has the highest mean and "
                f"every other compared method ({len(rows) - 1}) is separated from it by a "
                "Holm-corrected paired t-test."
            )
        else:
            others = group[1:]
            out.append(
                f"{where}, the best group has {len(group)} of {len(rows)} compared methods: "
                f"{best.label} has the highest mean ({_acc(best.cells[target])} %), and no "
                f"corrected test separates {_names(others)} from it; their order is not "
                "established by this board."
            )
    for floor in (r for r in rows if r.method == FLOOR_METHOD):
        peers = [r for r in rows if r is not floor and r.pattern == floor.pattern]
        if not peers:
            continue
        above = _not_above(board, target, floor, peers)
        floor_text = f"the one-shot floor ({floor.label}, {_acc(floor.cells[target])} %)"
        if above:
            verb = "is" if len(above) == 1 else "are"
            out.append(f"{where}, {_names(above)} {verb} not separated above {floor_text}.")
        else:
            out.append(f"{where}, every compared method is separated above {floor_text}.")
    for row in board.rows:
        cell = None if row.reference else row.cells.get(target)
        if cell is not None and not cell.ranked:
            out.append(f"{where}, {row.label} is left out of the marks: {'; '.join(cell.flags())}.")
    return out


def _not_above(board: Leaderboard, target: float, floor: Row, peers: list[Row]) -> list[Row]:
    """The peers (the floor's pattern) that no corrected test puts above the floor: the
    floor's own family, every peer against it, Holm over the peers."""
    values = {r.label: r.cells[target].by_seed[ACC] for r in peers}
    tests = floor_tests(list(values), values, floor.cells[target].by_seed[ACC], board.alpha)
    above = {t.method for t in tests if t.status == "above"}
    return [r for r in peers if r.label not in above]


def across_findings(result: AcrossTargets | None, alpha: float = ALPHA) -> list[str]:
    if result is None:
        return []
    k = len(result.methods)
    head = (
        f"Across targets ({result.blocks} blocks: every target × seed; {k} methods with a value "
        "in each): "
    )
    if result.p is None:
        return [head + "every block ranks the methods alike; no test is needed."]
    out = head + f"Friedman χ² = {result.chi2:.1f}, p = {result.p:.2g}"
    if result.p >= alpha:
        return [out + f" (≥ {alpha}): the ranks do not differ beyond chance."]
    best = result.methods[0]
    near = [
        m
        for m in result.methods[1:]
        if result.average_rank[m] - result.average_rank[best] < (result.cd or 0)
    ]
    out += (
        f". Nemenyi's critical difference is {result.cd:.2f} average ranks (α = {alpha}); "
        f"{best} has the lowest average rank ({result.average_rank[best]:.2f})"
    )
    if near:
        verb = "is" if len(near) == 1 else "are"
        out += f", and {', '.join(near)} {verb} within the critical difference of it."
    else:
        out += ", more than the critical difference ahead of every other method."
    return [out]


def findings(board: Leaderboard, alpha: float = ALPHA) -> list[str]:
    """Every sentence the board publishes about its results."""
    out = [line for t in board.targets for line in column_findings(board, t)]
    return out + across_findings(across_targets(board, alpha), alpha)


@dataclass(frozen=True)
class Delta:
    """tuned − defaults at one target: the paired difference over the shared seeds."""

    method: str
    target: float
    seeds: int
    mean: float
    ci95: tuple[float, float] | None
    same: bool = False  # every seed's difference exactly 0: the same runs (tuning kept defaults)
    p: float | None = None  # paired t-test, tuned against defaults (None: a tie, untested)
    p_holm: float | None = None  # corrected over the board's cells (one family)

    @property
    def separated(self) -> bool:
        return self.p_holm is not None and self.p_holm < ALPHA


def tuned_minus_default(board: Leaderboard, defaults: Leaderboard) -> list[Delta]:
    """Per tuned row and target, the tuned − defaults test accuracy over the seeds both boards
    have (seeds are paired: same initial weights and batches)."""
    base = {r.method: r for r in defaults.rows if not r.reference and r.variant == "default"}
    out: list[Delta] = []
    for row in board.rows:
        if not row.tuned or row.method not in base:
            continue
        for t in board.targets:
            a = row.cells.get(t)
            b = base[row.method].cells.get(t)
            if a is None or b is None:
                continue
            va, vb = a.by_seed.get(ACC, {}), b.by_seed.get(ACC, {})
            shared = sorted(set(va) & set(vb))
            if not shared:
                continue
            diffs = [va[s] - vb[s] for s in shared]
            st = Stat.of(diffs)
            same = all(d == 0 for d in diffs)
            p = paired_test({s: va[s] for s in shared}, {s: vb[s] for s in shared})[3]
            out.append(Delta(row.method, t, len(shared), st.mean, st.ci95, same, p))
    corrected = holm([d.p for d in out])
    return [dataclasses.replace(d, p_holm=p) for d, p in zip(out, corrected)]


def delta_findings(deltas: list[Delta]) -> list[str]:
    if not deltas:
        return []
    up = [d for d in deltas if d.separated and d.mean > 0]
    down = [d for d in deltas if d.separated and d.mean < 0]
    same = [d for d in deltas if d.same]

    def names(ds: list[Delta]) -> str:
        return ", ".join(f"{d.method} at {percent(d.target)}" for d in ds) or "none"

    return [
        f"Tuned − defaults over {len(deltas)} cells (a paired t-test per cell, Holm's "
        f"correction over the {len(deltas)} cells, α = {ALPHA:g}): tuning is above the defaults "
        f"in {len(up)} ({names(up)}) and below them in {len(down)} ({names(down)}); not "
        "separated in the rest"
        + (
            f", of which {len(same)} are the defaults' own runs (tuning kept the defaults, the "
            "same run keys: difference 0 on every seed)."
            if same
            else "."
        )
    ]

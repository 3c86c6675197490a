"""Statistics over seeds and the marks of a column: which differences survive a correction.

Shared by the leaderboard (``boards/aggregation.py``) and the studies; pure numbers.

Statistics
  ``std`` is the sample standard deviation (ddof = 1). The 95 % interval of a mean is
  ``mean ± t(0.975, n-1) · std / √n`` (Student t), clipped to the metric's range (accuracy
  [0, 100]); with n < 2 there is neither.

Marks (accuracy and speedup columns; higher is better)
  Seeds are paired across methods (same seed: same initial weights and batches), so two cells
  are compared by a two-sided paired t-test (``scipy.stats.ttest_rel``) over the seeds both
  have. Within one column:

  1. The candidates are the non-reference rows with n ≥ 1 whose cell is not left out; the
     best is the one with the highest mean (means rounded to 12 significant digits; equal
     means keep row order).
  2. Every pair of candidates is tested. The column's tests form two families, each corrected
     by Holm's step-down procedure (``statsmodels.stats.multitest.multipletests``, method
     "holm") at α = 0.05: **best**, the best against each other candidate (k − 1 tests, the
     question "which methods does this column tell apart from its best"), and **rest**, every
     pair without the best ((k − 1)(k − 2)/2 tests, the order below). One family of all
     k(k − 1)/2 pairs would spend most of its α on pairs at the bottom of the column that the
     best group never asks about: with 13 methods and 5 seeds its first threshold, 0.05/78,
     needs t > 9.7 on 4 degrees of freedom, and a floor at 75 ± 6 % stayed "not separated"
     from a best at 89.4 ± 0.1 %. Each family's error rate is controlled on its own (the
     best is chosen by its mean, as every "best group" is). A pair is *separated* if its
     corrected p is below α; *tie* if the means are equal (relative difference ≤ 1e-9);
     *untested* if the cells share fewer than 2 seeds (neither enters a family); otherwise
     *noise*. Paired differences with no spread have p = 0 if they are non-zero, a tie if
     they are zero.
  3. The **best group** is the best candidate and every candidate not separated from it in
     the family *best*: the methods this column cannot tell apart from the best. Its size is
     reported.
  4. Every candidate's rank, with ties, is 1 + the number of candidates separated from it
     and above it (against the best as in 3, against the others in the family *rest*):
     candidates that no corrected test separates share a rank.
  5. A candidate untested against the best (fewer than 2 shared seeds) gets no mark; a column
     whose best could be tested against no other candidate gets none at all.

Marks (img/s column)
  An isolated throughput figure is the mean over interleaved timing rounds
  (``training/throughput.py``); round r of every variant ran in the same spell of the machine,
  so the rows are compared by the same paired t-test with Holm's correction, over the rounds
  instead of the seeds. Only isolated measurements are compared; a row without one shows the
  median in-trial ``train_img_per_s`` of its runs marked ``†`` (measured under contention) and
  is never marked. Achieved sparsity is never marked.

The one-shot floor
  "Which methods are above the floor" is a third question with its own family: each method
  against the floor by the same paired test, Holm-corrected over the column's methods
  (``floor_tests``; the leaderboard's findings and the Table 2 study).
"""

from __future__ import annotations

import gc
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests


class Labelled(Protocol):
    """What a compared entry needs: a label (a board's row)."""

    label: str


ALPHA = 0.05
_TIE_REL = 1e-9
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass(frozen=True)
class Stat:
    """Mean, sample std and 95 % t-interval of one metric over the seeds of a cell."""

    values: tuple[float, ...]
    mean: float
    std: float | None
    ci95: tuple[float, float] | None

    @property
    def n(self) -> int:
        return len(self.values)

    @classmethod
    def of(cls, values: Iterable[float], bounds: tuple[float, float] | None = None) -> Stat:
        """``bounds``: the metric's range (accuracy [0, 100]); the interval is clipped to it,
        since with few seeds mean ± t·std/√n can reach past what the metric can be."""
        vals = tuple(float(v) for v in values)
        mean = float(np.mean(vals))
        if len(vals) < 2:
            return cls(vals, mean, None, None)
        std = float(np.std(vals, ddof=1))
        half = float(stats.t.ppf(0.975, len(vals) - 1)) * std / math.sqrt(len(vals))
        low, high = mean - half, mean + half
        if bounds is not None:
            low, high = max(low, bounds[0]), min(high, bounds[1])
        return cls(vals, mean, std, (low, high))


@dataclass
class Mark:
    """A compared cell's place in its column: in the best group (not separated from the best by
    a corrected test), and its rank with ties (1 + candidates separated above it)."""

    best: bool = False
    rank: int | None = None  # None: not compared (left out, reference, or no value)
    group_size: int = 0  # the size of its column's best group

    @property
    def symbol(self) -> str:
        """The rank as a superscript, for cells outside the best group (bold says the rest)."""
        if self.rank is None or self.best:
            return ""
        return str(self.rank).translate(_SUPERSCRIPT)


@dataclass(frozen=True)
class Comparison:
    """One pair of a column's candidates (the evidence behind the marks)."""

    metric: str
    target: float | None
    upper: str  # the higher mean
    lower: str
    shared_seeds: int
    diff: float  # mean paired difference (upper − lower)
    t: float | None
    p: float | None  # the paired test's own p-value
    p_holm: float | None  # corrected over its family (Holm)
    status: str  # separated | noise | tie | untested (after the correction)
    family: str  # best (the best against another candidate) | rest (two others)


def equal(a: float, b: float) -> bool:
    return abs(a - b) <= _TIE_REL * max(abs(a), abs(b), 1.0)


def paired_test(
    upper: dict[int, float], lower: dict[int, float], alpha: float = ALPHA
) -> tuple[int, float, float | None, float | None, str]:
    """Two-sided paired t-test over shared seeds: (shared, mean diff, t, p, status)."""
    seeds = sorted(set(upper) & set(lower))
    a = np.array([upper[s] for s in seeds], dtype=float)
    b = np.array([lower[s] for s in seeds], dtype=float)
    mean_upper = float(np.mean(list(upper.values())))
    mean_lower = float(np.mean(list(lower.values())))
    diff = float(np.mean(a - b)) if seeds else mean_upper - mean_lower
    if equal(mean_upper, mean_lower):
        return len(seeds), diff, None, None, "tie"
    if len(seeds) < 2:
        return len(seeds), diff, None, None, "untested"
    d = a - b
    if float(np.ptp(d)) <= _TIE_REL * max(float(np.max(np.abs(d))), 1.0):
        # No spread in the differences: the t statistic is infinite (or undefined at zero).
        if equal(float(d[0]), 0.0):
            return len(seeds), diff, None, None, "tie"
        return len(seeds), diff, math.copysign(math.inf, float(d[0])), 0.0, "separated"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(a, b)
    t, p = float(res.statistic), float(res.pvalue)
    return len(seeds), diff, t, p, ("separated" if p < alpha else "noise")


def holm(pvalues: Sequence[float | None], alpha: float = ALPHA) -> list[float | None]:
    """Holm-corrected p-values of one family (statsmodels' ``multipletests``). The family is
    the tested pairs: a None (a tie, or fewer than 2 shared seeds) stays None and is not
    counted.

    Its Holm branch ends with a full ``gc.collect()``, 0.16 s in a process that holds torch:
    over a board's hundred columns that was most of ``publish``. The process's objects are
    frozen around the call, so the collection sees only the call's own few."""
    tested = [p for p in pvalues if p is not None]
    if not tested:
        return [None] * len(pvalues)
    gc.freeze()
    try:
        adjusted = iter(multipletests(tested, alpha=alpha, method="holm")[1])
    finally:
        gc.unfreeze()
    return [None if p is None else float(next(adjusted)) for p in pvalues]


def rank_column(
    entries: list[tuple[Labelled, dict[int, float], Mark]],
    metric: str,
    target: float | None,
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Compare every pair of one column's candidates, correct each family (Holm: the best
    against the others, and the other pairs), set the marks (the best group and the ranks
    with ties, module docstring); returns every comparison."""

    def mean(values: dict[int, float]) -> float:
        return float(np.mean(list(values.values())))

    # Rounded key (12 significant digits): float noise in a mean must not reorder a tie;
    # the sort is stable, so equal means keep row order.
    ranked = sorted(entries, key=lambda e: -float(f"{mean(e[1]):.12g}"))
    raw = []
    for i, (row_u, vals_u, _) in enumerate(ranked):
        for row_l, vals_l, _ in ranked[i + 1 :]:
            family = "best" if i == 0 else "rest"
            raw.append((row_u.label, row_l.label, *paired_test(vals_u, vals_l, alpha), family))
    corrected: dict[int, float | None] = {}
    for family in ("best", "rest"):
        members = [k for k, r in enumerate(raw) if r[-1] == family]
        corrected |= dict(zip(members, holm([raw[k][5] for k in members], alpha)))
    comps = []
    for k, (upper, lower, shared, diff, t, p, status, family) in enumerate(raw):
        p_holm = corrected.get(k)
        if p_holm is not None:
            status = "separated" if p_holm < alpha else "noise"
        comps.append(
            Comparison(metric, target, upper, lower, shared, diff, t, p, p_holm, status, family)
        )
    status = {(c.upper, c.lower): c.status for c in comps}
    labels = [row.label for row, _, _ in ranked]
    compared = [lab for lab in labels[1:] if status[(labels[0], lab)] != "untested"]
    if not compared:  # nothing could be tested against the best: no claim at all
        return comps
    group = [labels[0]] + [lab for lab in compared if status[(labels[0], lab)] != "separated"]
    for j, (row, _, mark) in enumerate(ranked):
        if j and row.label not in compared:
            continue  # untested against the best: unmarked
        mark.rank = 1 + sum(status[(labels[i], row.label)] == "separated" for i in range(j))
        mark.best = row.label in group
        mark.group_size = len(group)
    return comps


@dataclass(frozen=True)
class FloorTest:
    """One method against the one-shot floor in one column (Holm over the column's methods)."""

    method: str
    shared: int
    diff: float | None  # method − floor, mean paired difference (points)
    p: float | None
    p_holm: float | None
    status: str  # above | below | within noise | untested


def floor_tests(
    methods: list[str], values: dict[str, dict[int, float]], floor: dict[int, float], alpha: float
) -> list[FloorTest]:
    """Each method against the one-shot floor, Holm over the column's methods."""
    raw = [(m, *paired_test(values[m], floor)[:4]) for m in methods]
    out = []
    for (m, shared, diff, _t, p), p_holm in zip(raw, holm([r[4] for r in raw], alpha)):
        status = "untested"
        if p_holm is not None:
            status = "within noise"
            if p_holm < alpha and diff is not None:
                status = "above" if diff > 0 else "below"
        out.append(FloorTest(m, shared, diff, p, p_holm, status))
    return out

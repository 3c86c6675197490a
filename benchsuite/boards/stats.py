"""Statistics over seeds and the marks of a column: which differences are beyond noise.

Shared by the leaderboard (``benchsuite.aggregation``) and the study board; pure numbers.

Statistics
  ``std`` is the sample standard deviation (ddof = 1). The 95 % interval of a mean is
  ``mean ± t(0.975, n-1) · std / √n`` (Student t), clipped to the metric's range (accuracy
  [0, 100]); with n < 2 there is neither.

Marks (accuracy and speedup columns; higher is better)
  Seeds are paired across methods (same seed: same initial weights and batches), so
  neighbours are compared with a two-sided paired t-test (``scipy.stats.ttest_rel``) over
  the seeds both cells have, at α = 0.05. Within one column:

  1. The candidates are the non-reference rows with n ≥ 1 whose cell is not left out (see
     below); they are sorted by mean, best first (means rounded to 12 significant digits;
     equal means keep row order, which is alphabetical, and neither is ranked above the
     other: see *tie*).
  2. Each candidate is compared with the next one in that order. The pair is
     *separated* if the means differ and the test gives p < α; *tie* if the means are
     equal (relative difference ≤ 1e-9), whatever the seeds; *untested* if they share
     fewer than 2 seeds; otherwise *noise*. Paired differences that are all equal have no
     spread: p = 0 if they are non-zero (separated), a tie if they are zero.
  3. The candidate at position k ∈ {1, 2, 3} gets rank mark k (bold, superscript k) only if
     it is separated from its upper neighbour (if any) and from its lower neighbour (if
     any), and the column has at least two candidates.
  4. An unmarked candidate at position 1-3 whose link to a neighbour is *noise* or *tie*
     is shown ``≈`` (within noise of its neighbour). Candidates whose only unseparated
     links are *untested* (fewer than 2 shared seeds) are left unmarked.

Marks (img/s column)
  An isolated throughput figure is the mean over interleaved timing rounds
  (``benchsuite.throughput``); round r of every variant ran in the same spell of the
  machine, so neighbours are compared by the same two-sided paired t-test, over the rounds
  instead of the seeds. A record without per-round figures (older records) falls back to a
  stated relative threshold: separated when the faster is more than 5 % faster
  (``IMG_S_REL_THRESHOLD``). Only isolated measurements are ranked; a row without one
  shows the median in-trial ``train_img_per_s`` of its runs marked ``†`` (measured under
  contention) and is never marked. Achieved sparsity is never marked.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import stats

from benchsuite.core.record import Metrics


class Labelled(Protocol):
    """What a compared entry needs: a label (a board's row)."""

    label: str


ALPHA = 0.05
IMG_S_REL_THRESHOLD = 0.05
_TIE_REL = 1e-9
_SUPERSCRIPT = {1: "¹", 2: "²", 3: "³"}


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
    """rank 1-3 if beyond noise; ``within_noise`` for an unranked top-3 next to noise/tie."""

    rank: int | None = None
    within_noise: bool = False

    @property
    def symbol(self) -> str:
        if self.rank is not None:
            return _SUPERSCRIPT[self.rank]
        return "≈" if self.within_noise else ""


@dataclass(frozen=True)
class Comparison:
    """One neighbour comparison in a sorted column (the evidence behind the marks)."""

    metric: str
    target: float | None
    upper: str
    lower: str
    shared_seeds: int
    diff: float  # mean paired difference (upper - lower); relative difference for img/s
    t: float | None
    p: float | None
    status: str  # separated | noise | tie | untested


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


def assign_marks(order: list[Mark], links: list[str]) -> None:
    """Rules 3-4 of the module docstring; ``links[i]`` joins positions i and i+1."""
    if len(order) < 2:
        return
    for k in range(min(3, len(order))):
        up = links[k - 1] if k > 0 else None
        down = links[k] if k < len(links) else None
        near = [x for x in (up, down) if x is not None]
        if all(x == "separated" for x in near):
            order[k].rank = k + 1
        elif any(x in ("noise", "tie") for x in near):
            order[k].within_noise = True


def rank_column(
    entries: list[tuple[Labelled, dict[int, float], Mark]],
    metric: str,
    target: float | None,
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Sort one column's candidates, compare neighbours, set their marks."""

    def mean(e: tuple[Labelled, dict[int, float], Mark]) -> float:
        return float(np.mean(list(e[1].values())))

    # Rounded key (12 significant digits): float noise in a mean must not reorder a tie;
    # the sort is stable, so equal means keep row order.
    ranked = sorted(entries, key=lambda e: -float(f"{mean(e):.12g}"))
    comps: list[Comparison] = []
    links: list[str] = []
    for (row_u, vals_u, _), (row_l, vals_l, _) in zip(ranked, ranked[1:], strict=False):
        if metric == Metrics.IMG_PER_S and min(len(vals_u), len(vals_l)) < 2:  # no rounds: 5 % rule
            hi, lo = mean((row_u, vals_u, Mark())), mean((row_l, vals_l, Mark()))
            rel = hi / lo - 1.0 if lo > 0 else math.inf
            status = (
                "tie" if equal(hi, lo) else ("separated" if rel > IMG_S_REL_THRESHOLD else "noise")
            )
            comps.append(
                Comparison(metric, target, row_u.label, row_l.label, 0, rel, None, None, status)
            )
        else:
            shared, diff, t, p, status = paired_test(vals_u, vals_l, alpha)
            comps.append(
                Comparison(metric, target, row_u.label, row_l.label, shared, diff, t, p, status)
            )
        links.append(status)
    assign_marks([e[2] for e in ranked], links)
    return comps

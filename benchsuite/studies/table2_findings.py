"""The Table 2 board compared with the paper's Table 2, every sentence computed from the numbers.

Per column (each of the paper's sparsities, and img/s): the paper's order of its eight
methods against the board's order by mean, Kendall's τ-b between the paper's values and the
board's means (``scipy.stats.kendalltau``, with its p-value), and every pair of methods tested:
a two-sided paired t-test over the seeds both cells share (``scipy.stats.ttest_rel``; for img/s
over the interleaved timing rounds, which are paired the same way), with Holm's correction over
the column's tested pairs (``statsmodels.stats.multitest.multipletests``, method "holm"); both
are the leaderboard's own (``boards/stats.py``), so a pair is tested the same way everywhere.
A pair is *in the paper's order beyond noise* or *reversed beyond noise* only when its
Holm-adjusted p is below α; otherwise it is *within noise* and its order is not established,
which is never counted as agreement. Paired differences without spread (every seed the same
difference) have no t statistic: p = 0 when the difference is non-zero; equal means are a tie,
left untested.
The same test, Holm-corrected over the column's methods, says which methods are above the
one-shot floor beyond noise.

The leaderboard's marks answer "which places are established"; this module "does the small
scale reproduce the paper's order".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

from benchsuite.boards.format import img_per_s_text, percent, two_dp
from benchsuite.boards.leaderboard import FLOOR_METHOD, Cell, Row
from benchsuite.boards.stats import floor_tests, holm, paired_test
from benchsuite.core.record import Metrics
from benchsuite.studies.table2_board import ColumnComparison, Pair, Table2Board

# Zimmer, Spiegel & Pokutta (ICLR 2023), Table 2: ResNet-50 on ImageNet, equal budget, top-1 %
# (mean over runs) and training img/s. STR lands above the 70 % and 80 % targets (75.34 % and
# 80.93 % achieved): it cannot hit a target.
PAPER_METHODS = ("bimp", "gmp", "gsm", "dpf", "dnw", "lc", "str", "dst")
PAPER_SPARSITIES = (0.7, 0.8, 0.9)
PAPER_ACCURACY: dict[float, dict[str, float]] = {
    0.7: {
        "bimp": 75.62,
        "gmp": 74.62,
        "gsm": 73.69,
        "dpf": 75.59,
        "dnw": 75.60,
        "lc": 75.03,
        "str": 70.66,
        "dst": 74.63,
    },
    0.8: {
        "bimp": 75.08,
        "gmp": 74.19,
        "gsm": 72.75,
        "dpf": 75.30,
        "dnw": 75.27,
        "lc": 73.87,
        "str": 70.70,
        "dst": 73.16,
    },
    0.9: {
        "bimp": 73.53,
        "gmp": 72.80,
        "gsm": 70.08,
        "dpf": 74.05,
        "dnw": 74.29,
        "lc": 67.57,
        "str": 70.13,
        "dst": 71.35,
    },
}
PAPER_IMG_PER_S = {
    "bimp": 1454.0,
    "gmp": 1425.0,
    "gsm": 1349.0,
    "dpf": 1456.0,
    "dnw": 530.0,
    "lc": 1436.0,
    "str": 1396.0,
    "dst": 1219.0,
}
PAPER_STR_SPARSITY = {0.7: 75.34, 0.8: 80.93, 0.9: 90.00}  # STR's achieved sparsity (%)
PAPER_TOP3 = ("bimp", "dpf", "dnw")  # the paper's top three at every sparsity
PAPER = "Zimmer et al. 2023, Table 2 (ResNet-50, ImageNet)"
LABELS = {m: m.upper() for m in PAPER_METHODS} | {
    "dense": "Dense",
    FLOOR_METHOD: "One-shot",
    "rigl": "RigL",
}
IMG_S = "img/s"


def label(method: str) -> str:
    return LABELS.get(method, method)


def _names(methods: Sequence[str]) -> str:
    names = [label(m) for m in methods]
    if len(names) < 2:
        return "".join(names) or "none"
    return ", ".join(names[:-1]) + " and " + names[-1]


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"


# ----------------------------------------------------------------------------- statistics


def _mean(values: dict[int, float]) -> float:
    return float(np.mean(list(values.values())))


def kendall(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None]:
    """Kendall's τ-b and its two-sided p (None where undefined: fewer than 2, or constant)."""
    if len(x) < 2:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.kendalltau(x, y)
    tau, p = float(res.statistic), float(res.pvalue)
    return (tau, p) if math.isfinite(tau) else (None, None)


def compare_column(
    column: str,
    target: float | None,
    paper: dict[str, float],
    values: dict[str, dict[int, float]],
    alpha: float,
    floor: dict[int, float] | None = None,
) -> ColumnComparison:
    """The paper's order against the board's over the methods both have; every pair tested.

    ``values``: method → seed (or timing round) → the board's value; ``floor``: the one-shot
    floor's values in this column, if the board has it.
    """
    methods = [m for m in paper if values.get(m)]
    means = {m: _mean(values[m]) for m in methods}
    paper_order = sorted(methods, key=lambda m: -paper[m])
    board_order = sorted(methods, key=lambda m: -float(f"{means[m]:.12g}"))
    tau, tau_p = kendall([paper[m] for m in methods], [means[m] for m in methods])
    raw = []
    for i, up in enumerate(paper_order):
        for low in paper_order[i + 1 :]:
            raw.append((up, low, *paired_test(values[up], values[low])[:4]))
    pairs = []
    for (up, low, shared, diff, t, p), p_holm in zip(raw, holm([r[5] for r in raw], alpha)):
        status = "untested"
        if p_holm is not None:
            status = "within noise"
            if p_holm < alpha and diff is not None:
                status = "agrees" if diff > 0 else "disagrees"
        pairs.append(Pair(up, low, paper[up] - paper[low], shared, diff, t, p, p_holm, status))
    comparison = ColumnComparison(
        column, target, paper_order, board_order, means, dict(paper), tau, tau_p, pairs
    )
    if floor:
        comparison.floor = floor_tests(paper_order, values, floor, alpha)
    return comparison


def accuracies(row: Row | None, target: float) -> dict[int, float]:
    cell = None if row is None else row.cells.get(target)
    return {} if cell is None else dict(cell.by_seed.get(Metrics.TEST_ACCURACY, {}))


def img_per_s_rounds(row: Row | None) -> dict[int, float]:
    """An isolated measurement's per-round figures (its mean alone where it has no rounds)."""
    tp = None if row is None else row.img_per_s
    if tp is None or tp.source != "isolated":
        return {}
    return dict(enumerate(tp.rounds)) if tp.rounds else {0: tp.value}


def columns(board: Table2Board) -> list[ColumnComparison]:
    """The comparisons of every paper column the board has, then img/s."""
    rows = {r.method: r for r in board.rows if r.variant == "default"}
    out = []
    for t in board.targets:
        paper = next((v for s, v in PAPER_ACCURACY.items() if math.isclose(s, t)), None)
        if paper is None:
            continue
        values = {m: accuracies(rows.get(m), t) for m in PAPER_METHODS}
        floor = accuracies(rows.get(FLOOR_METHOD), t)
        out.append(compare_column(percent(t), t, paper, values, board.alpha, floor))
    values = {m: img_per_s_rounds(rows.get(m)) for m in PAPER_METHODS}
    out.append(compare_column(IMG_S, None, PAPER_IMG_PER_S, values, board.alpha))
    return out


# ----------------------------------------------------------------------------- sentences


def _value(column: ColumnComparison, x: float) -> str:
    return f"{img_per_s_text(x)} img/s" if column.target is None else f"{two_dp(x)} points"


def _order(column: ColumnComparison, methods: list[str], values: dict[str, float]) -> str:
    fmt = img_per_s_text if column.target is None else two_dp
    return " > ".join(f"{label(m)} {fmt(values[m])}" for m in methods)


def _tau_text(column: ColumnComparison, alpha: float) -> str:
    n = len(column.paper_order)
    if column.tau is None:
        return f"Kendall's τ undefined ({n} method{'s' if n != 1 else ''} on the board)"
    sign = (
        "more pairs in the paper's order than reversed"
        if column.tau > 0
        else "more pairs reversed than in the paper's order"
        if column.tau < 0
        else "as many pairs reversed as in the paper's order"
    )
    significant = column.tau_p is not None and column.tau_p < alpha
    return (
        f"Kendall's τ = {column.tau:.2f} (p = {_p(column.tau_p)}, {n} methods): {sign}, "
        f"{'' if significant else 'not '}significant at α = {alpha:g}"
    )


def column_sentences(column: ColumnComparison, alpha: float) -> list[str]:
    """What one column says against the paper, from its numbers alone."""
    where = column.column
    if not column.paper_order:
        return [f"{where}: none of the paper's eight methods has a result on this board."]
    out = [
        f"{where}: the paper's order {_order(column, column.paper_order, column.paper_values)}; "
        f"the board's (by mean) {_order(column, column.board_order, column.board_means)}. "
        + _tau_text(column, alpha)
        + "."
    ]
    within = [p for p in column.pairs if p.status == "within noise"]
    untested = column.count("untested")
    unit = "timing rounds" if column.target is None else "seeds"
    counts = (
        f"{where}: of {len(column.pairs)} pairs, in the paper's order beyond noise: "
        f"{column.count('agrees')}; reversed beyond noise: {column.count('disagrees')}; within "
        f"noise (order not established by these {unit}): {len(within)}"
    )
    if within:
        ordered = sum(not p.reversed_by_mean for p in within)
        counts += (
            f", of them {ordered} in the paper's order by mean and {len(within) - ordered} reversed"
        )
    if untested:
        counts += f"; untested (fewer than 2 shared {unit}): {untested}"
    out.append(counts + f" (paired t-tests, Holm-corrected, α = {alpha:g}).")
    for p in column.pairs:
        if p.status == "disagrees":
            out.append(
                f"{where}: the small scale disagrees with the paper: {label(p.lower)} is above "
                f"{label(p.upper)} by {_value(column, -(p.diff or 0.0))} (Holm-adjusted "
                f"p = {_p(p.p_holm)}), where the paper has {label(p.upper)} "
                f"{_value(column, p.paper_diff)} above {label(p.lower)}."
            )
    if not column.count("disagrees") and not column.count("agrees"):
        out.append(
            f"{where}: no pair is ordered beyond noise, so this column neither confirms nor "
            "contradicts the paper's order."
        )
    elif not column.count("disagrees"):
        out.append(f"{where}: no pair is reversed beyond noise.")
    return out


def floor_sentence(column: ColumnComparison) -> str | None:
    if not column.floor:
        return None
    by = {s: [f.method for f in column.floor if f.status == s] for s in ("above", "below")}
    noise = [f.method for f in column.floor if f.status == "within noise"]
    untested = [f.method for f in column.floor if f.status == "untested"]
    text = (
        f"{column.column}: against the one-shot floor (paired t-tests, Holm over "
        f"{len(column.floor) - len(untested)} methods): above it beyond noise: "
        f"{_names(by['above'])}; within noise of it: {_names(noise)}; below it beyond noise: "
        f"{_names(by['below'])}"
    )
    if untested:
        text += f"; untested: {_names(untested)}"
    return text + "."


def _top3_sentence(cols: list[ColumnComparison]) -> str | None:
    acc = [c for c in cols if c.target is not None and len(c.board_order) >= 3]
    if not acc:
        return None
    parts = []
    for c in acc:
        top = c.board_order[:3]
        shared = len(set(top) & set(PAPER_TOP3))
        parts.append(f"{c.column}: {_names(top)} ({shared} of the paper's three)")
    return (
        f"The paper's top three at every sparsity are {_names(PAPER_TOP3)}; the board's top "
        f"three by mean: {'; '.join(parts)}. Which places are beyond noise: the marks above."
    )


def _throughput_sentences(cols: list[ColumnComparison]) -> list[str]:
    tp = next((c for c in cols if c.target is None), None)
    if tp is None or not tp.paper_order:
        return [
            "img/s: no isolated throughput measurement on this board (run without "
            "--no-throughput), so the paper's throughput order is not compared."
        ]
    out = []
    if {"dnw", "bimp"} <= set(tp.board_means):
        ours = tp.board_means["dnw"] / tp.board_means["bimp"]
        paper = PAPER_IMG_PER_S["dnw"] / PAPER_IMG_PER_S["bimp"]
        out.append(
            f"DNW's training throughput relative to BIMP's: {ours:.2f}× here "
            f"({img_per_s_text(tp.board_means['dnw'])} vs "
            f"{img_per_s_text(tp.board_means['bimp'])} img/s), {paper:.2f}× in the paper "
            f"({img_per_s_text(PAPER_IMG_PER_S['dnw'])} vs "
            f"{img_per_s_text(PAPER_IMG_PER_S['bimp'])})."
        )
    return out


def _flag_sentences(board: Table2Board) -> list[str]:
    """Layer collapse and sparsity overshoot in the compared rows (and RigL), or their absence."""
    flagged: list[tuple[Row, Cell]] = []
    for row in board.rows:
        if row.reference or row.method == FLOOR_METHOD:
            continue
        for t in board.targets:
            cell = row.cells.get(t)
            if cell is not None and (cell.collapsed or cell.overshoot):
                flagged.append((row, cell))
    where = ", ".join(percent(t) for t in board.targets)
    if not flagged:
        return [
            f"No cell of the compared methods (RigL included) has a collapsed layer or overshoots "
            f"its target at {where}."
        ]
    return [
        f"{label(row.method)} at {percent(cell.target)}: {'; '.join(cell.flags())} "
        "(left out of the marks; kept in the order and the tests above)."
        for row, cell in flagged
    ]


def _str_sentence(board: Table2Board) -> str | None:
    row = next((r for r in board.rows if r.method == "str" and r.variant == "default"), None)
    if row is None:
        return None
    parts, paper = [], []
    for t in board.targets:
        cell = row.cells.get(t)
        st = None if cell is None else cell.stats.get(Metrics.SPARSITY)
        if st is None:
            continue
        parts.append(f"{two_dp(st.mean * 100)} % at {percent(t)}")
        paper += [
            f"{v:.2f} % at {percent(s)}"
            for s, v in PAPER_STR_SPARSITY.items()
            if math.isclose(s, t)
        ]
    if not parts:
        return None
    return (
        f"STR's achieved sparsity (mean): {', '.join(parts)}; the paper's STR reached "
        f"{', '.join(paper) or 'none of these targets'} (it cannot aim at a target, so its "
        "place in the paper's 70 % and 80 % columns compares a sparser model)."
    )


def _rigl_sentence(board: Table2Board) -> str | None:
    rigl = next((r for r in board.references if r.method == "rigl"), None)
    if rigl is None:
        return None
    parts = []
    for c in (c for c in board.columns if c.target is not None):
        vals = accuracies(rigl, c.target)  # type: ignore[arg-type]
        if not vals or not c.board_means:
            continue
        mean = _mean(vals)
        place = 1 + sum(v > mean for v in c.board_means.values())
        parts.append(f"{c.column}: {two_dp(mean)}, place {place} of {len(c.board_means) + 1}")
    if not parts:
        return None
    return (
        "RigL (not in the paper's table; a reference row, never ranked) would place by mean "
        f"among the compared methods at {'; '.join(parts)}."
    )


def compare_with_paper(board: Table2Board) -> tuple[str, list[str]]:
    """The headline and the findings, from the board's numbers and the paper's alone."""
    cols = board.columns
    acc = [c for c in cols if c.target is not None]
    taus = "; ".join(
        f"{c.column} τ = {'—' if c.tau is None else f'{c.tau:.2f}'} (p = {_p(c.tau_p)})"
        for c in acc
    )
    pairs = [p for c in acc for p in c.pairs]
    headline = (
        f"Kendall's τ between the paper's order and the board's: {taus or 'no paper column'}. "
        f"Of {len(pairs)} method pairs: {sum(p.status == 'agrees' for p in pairs)} in the "
        f"paper's order beyond noise, {sum(p.status == 'disagrees' for p in pairs)} reversed "
        f"beyond noise, {sum(p.status == 'within noise' for p in pairs)} within noise "
        f"(paired t-tests over seeds, Holm-corrected per column, α = {board.alpha:g}); "
        f"paper: {PAPER}."
    )
    if not acc:
        headline = (
            "None of the board's sparsities is one of the paper's (70 %, 80 %, 90 %): no "
            f"accuracy column to compare; paper: {PAPER}."
        )
    out: list[str] = []
    for c in cols:
        out += column_sentences(c, board.alpha)
        if (floor := floor_sentence(c)) is not None:
            out.append(floor)
    out += [s for s in (_top3_sentence(cols),) if s]
    out += _throughput_sentences(cols)
    out += _flag_sentences(board)
    out += [s for s in (_str_sentence(board), _rigl_sentence(board)) if s]
    return headline, out

"""The study board compared with the paper's Table 1, computed from the numbers alone.

For every (sparsity, retraining budget) column: whether ALLR is first (highest mean), within
noise of the first (the paired test against the first is not separated) or behind; whether FT
and LRW fall behind at the highest sparsity and shortest budget; SLR's and LLR/CLR's places;
and a headline count, against the paper's 9 of 9 (Zimmer et al. 2023, Table 1).
"""

from __future__ import annotations

import math

import numpy as np

from benchsuite.boards.format import percent, two_dp
from benchsuite.boards.leaderboard import Cell
from benchsuite.boards.stats import paired_test
from benchsuite.core.record import Metrics
from benchsuite.pruning.schedules import RETRAIN_SCHEDULES
from benchsuite.studies.board import Column, StudyBoard

PAPER_SPARSITIES = (0.7, 0.8, 0.9)
PAPER_HEADLINE = "paper: 9 of 9, ALLR has the highest mean in every cell of its Table 1"
SCHEDULE_LABELS = {s: s.upper() for s in RETRAIN_SCHEDULES}


def _mean(values: dict[int, float]) -> float:
    return float(np.mean(list(values.values())))


def by_mean(
    cells: dict[tuple[str, float, float], Cell], schedules: list[str], target: float, budget: float
) -> list[tuple[str, dict[int, float]]]:
    """A column's schedules by mean, best first (the leaderboard's rounding and tie order)."""
    entries = []
    for s in schedules:
        cell = cells.get((s, target, budget))
        if cell is not None and cell.by_seed.get(Metrics.TEST_ACCURACY):
            entries.append((s, cell.by_seed[Metrics.TEST_ACCURACY]))
    return sorted(entries, key=lambda e: -float(f"{_mean(e[1]):.12g}"))


def column(
    cells: dict[tuple[str, float, float], Cell],
    schedules: list[str],
    target: float,
    budget: float,
    alpha: float,
) -> Column:
    col = Column(target, budget)
    ranked = by_mean(cells, schedules, target, budget)
    if not ranked:
        return col
    col.leader = ranked[0][0]
    allr = dict(ranked).get("allr")
    if allr is None:
        return col
    if col.leader == "allr":
        col.allr, col.allr_gap = "first", 0.0
        if len(ranked) > 1:
            col.second = ranked[1][0]
            col.second_status = paired_test(allr, ranked[1][1], alpha)[4]
        return col
    _, diff, _, p, status = paired_test(ranked[0][1], allr, alpha)
    if status == "tie":  # the same mean: ALLR shares the first place
        col.allr, col.allr_gap, col.second, col.second_status = "first", 0.0, col.leader, "tie"
        return col
    col.allr_gap, col.allr_p = diff, p
    col.allr = {
        "separated": "behind",
        "noise": "within noise",
        "tie": "within noise",
        "untested": "untested",
    }[status]
    return col


def label(schedule: str | None) -> str:
    return "—" if schedule is None else SCHEDULE_LABELS.get(schedule, schedule)


def column_title(target: float, budget: float) -> str:
    return f"{percent(target)} · {percent(budget)}"


def _p_text(p: float | None) -> str:
    return "" if p is None else f", p = {p:.3g}"


def compare_with_paper(board: StudyBoard) -> tuple[str, list[str]]:
    """The comparison with the paper's Table 1, from the numbers alone."""
    out: list[str] = []
    cols = [c for c in board.columns if c.allr != "missing"]
    good = [c for c in cols if c.allr in ("first", "within noise")]
    first = [c for c in cols if c.allr == "first"]
    headline = (
        f"ALLR first or within noise of the first in {len(good)} of {len(cols)} cells "
        f"(first in {len(first)}); {PAPER_HEADLINE}."
    )
    paper_cols = [c for c in cols if any(math.isclose(c.target, s) for s in PAPER_SPARSITIES)]
    if paper_cols and len(paper_cols) != len(cols):
        paper_good = [c for c in paper_cols if c.allr in ("first", "within noise")]
        headline += (
            f" At the paper's sparsities (70/80/90 %): {len(paper_good)} of "
            f"{len(paper_cols)} (first in "
            f"{sum(c.allr == 'first' for c in paper_cols)})."
        )
    for c in board.columns:
        where = column_title(c.target, c.budget)
        if c.allr == "missing":
            out.append(f"{where}: no ALLR runs.")
        elif c.allr == "first":
            link = {
                "separated": "separated from the second,",
                "tie": "tied with",
                "untested": "untested against the second,",
            }.get(c.second_status or "", "within noise of the second,")
            second = "" if c.second is None else f"; {link} {label(c.second)}"
            out.append(f"{where}: ALLR first{second}.")
        elif c.allr == "within noise":
            out.append(
                f"{where}: ALLR within noise of the first, {label(c.leader)} "
                f"({two_dp(c.allr_gap or 0.0)} points behind{_p_text(c.allr_p)}); "
                "the paper has it first."
            )
        elif c.allr == "behind":
            out.append(
                f"{where}: ALLR behind {label(c.leader)} by {two_dp(c.allr_gap or 0.0)} "
                f"points{_p_text(c.allr_p)}: unlike the paper, where it is first."
            )
        else:
            out.append(
                f"{where}: ALLR below {label(c.leader)}, untested (fewer than 2 shared seeds)."
            )
    out += _ft_lrw_findings(board)
    out += _order_findings(board)
    return headline, out


def _ft_lrw_findings(board: StudyBoard) -> list[str]:
    """FT and LRW at the highest sparsity with the shortest budget (the paper: they collapse)."""
    if not board.targets or not board.budgets:
        return []
    out = []
    b = board.budgets[0]
    spots = [board.targets[-1]]
    paper_top = [t for t in board.targets if math.isclose(t, PAPER_SPARSITIES[-1])]
    if paper_top and paper_top[0] != spots[0]:
        spots.append(paper_top[0])
    for t in spots:
        ranked = by_mean(board.cells, board.schedules, t, b)
        if not ranked:
            continue
        lead, lead_vals = ranked[0]
        parts = []
        for s in ("ft", "lrw"):
            vals = dict(ranked).get(s)
            if vals is None:
                continue
            if s == lead:
                parts.append(f"{label(s)} is first")
                continue
            _, diff, _, p, status = paired_test(lead_vals, vals, board.alpha)
            verdict = {"separated": "behind", "untested": "untested"}.get(status, "within noise")
            parts.append(
                f"{label(s)} {verdict} ({two_dp(diff)} points below {label(lead)}{_p_text(p)})"
            )
        if not parts:
            continue
        if all(" behind " in p for p in parts):
            paper = "as in the paper (at 90 % · 2.22 % FT and LRW reach 56.75, ALLR 69.56)"
        elif any(" untested " in p for p in parts):
            paper = "untested (fewer than 2 shared seeds); the paper has them collapse there"
        else:
            paper = "unlike the paper, where FT and LRW collapse at 90 % · 2.22 %"
        out.append(
            f"FT and LRW at {column_title(t, b)} (highest sparsity"
            f"{' of the paper' if t != board.targets[-1] else ''}, shortest budget): "
            f"{'; '.join(parts)}: {paper}."
        )
    same = [
        column_title(t, b)
        for t in board.targets
        for b in board.budgets
        if (ft := board.cell("ft", t, b)) is not None
        and (lrw := board.cell("lrw", t, b)) is not None
        and ft.by_seed.get(Metrics.TEST_ACCURACY)
        and ft.by_seed.get(Metrics.TEST_ACCURACY) == lrw.by_seed.get(Metrics.TEST_ACCURACY)
    ]
    if same:
        out.append(
            f"FT and LRW give identical accuracies seed by seed in {len(same)} of "
            f"{len(board.targets) * len(board.budgets)} cells: there LRW's replay of "
            "the dense run's last N steps is FT's constant η_min (the paper's FT and LRW "
            "agree to within 0.01 too)."
        )
    return out


def _order_findings(board: StudyBoard) -> list[str]:
    """The paper's other two orderings: SLR weakest at the lowest sparsity; LLR and CLR next."""
    out = []
    if board.targets and "slr" in board.schedules:
        t = board.targets[0]
        cols = [(b, by_mean(board.cells, board.schedules, t, b)) for b in board.budgets]
        cols = [(b, r) for b, r in cols if len(r) > 1]
        last = [b for b, r in cols if r[-1][0] == "slr"]
        if cols:
            verdict = (
                "as in the paper (SLR is last at 70 % in every budget)"
                if len(last) == len(cols)
                else "the paper has SLR last at 70 % in every budget"
            )
            out.append(
                f"SLR has the lowest mean at the lowest sparsity ({percent(t)}) in "
                f"{len(last)} of {len(cols)} budgets: {verdict}."
            )
    mid = [t for t in board.targets if any(math.isclose(t, s) for s in (0.8, 0.9))]
    if mid and {"llr", "clr"} <= set(board.schedules):
        cols = [by_mean(board.cells, board.schedules, t, b) for t in mid for b in board.budgets]
        cols = [r for r in cols if len(r) >= 3]
        hits = [r for r in cols if {r[1][0], r[2][0]} == {"llr", "clr"}]
        if cols:
            verdict = (
                "as in the paper"
                if len(hits) == len(cols)
                else "the paper has them 2nd and 3rd in all of these columns"
            )
            out.append(
                f"LLR and CLR take 2nd and 3rd place (by mean) in {len(hits)} of "
                f"{len(cols)} columns at 80 % and 90 %: {verdict}."
            )
    return out

"""The retraining study of the paper's Table 1: its grid of runs, its board, notes and plot.

Zimmer et al. (2023), Table 1: one-shot IMP, the dense model trained for the full budget,
pruned once to 70/80/90 % and retrained for 2.22/5.55/11.11 % of the dense budget with FT,
LRW, SLR, CLR, LLR or ALLR (method ``imp-retrain``). Retraining comes on top of the dense
budget, so these runs are not budget-equal and get their own board: rows = schedules,
columns = sparsity × retraining budget, each cell mean ± std over seeds.

The statistics are the leaderboard's (``benchsuite.leaderboard``): each retraining budget is
aggregated as one leaderboard whose rows are the schedules, so a column's marks come from the
same paired t-test between neighbours and the same mark rules, and the leaderboard's fairness
checks (same preset, data, version and ``train_steps``) hold within every budget. Across
budgets only ``train_steps`` may differ (T·I + N).

The notes compare the small-scale result with the paper's claims, computed from the
numbers: for every column whether ALLR is first (highest mean), within noise of the first
(the paired test against the first is not separated) or behind; whether FT and LRW fall
behind at the highest sparsity and shortest budget; and a headline count, against the
paper's 9 of 9.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .leaderboard import (
    ALPHA,
    Cell,
    Comparison,
    Mark,
    RunRecord,
    UnfairComparison,
    _acc_value,
    _derive_header,
    _f2,
    _latest,
    _md_marked,
    _n_text,
    _pct,
    _stat_json,
    _to_float,
    aggregate,
    paired_test,
    write_published,
)
from .schedules import RETRAIN_SCHEDULES

if TYPE_CHECKING:
    import rich.table
    from matplotlib.figure import Figure

    from .data import Dataset
    from .presets import Preset
    from .train import RunConfig

STUDY_METHOD = "imp-retrain"
SCHEMA = "benchsuite.study/1"
DEFAULT_SPARSITIES = (0.7, 0.8, 0.9, 0.95, 0.98)  # the paper's three, and where LeNet-5 strains
DEFAULT_BUDGETS = (0.0222, 0.0555, 0.1111)  # Table 1: 2, 5 and 10 of 90 epochs
PAPER_SPARSITIES = (0.7, 0.8, 0.9)
PAPER_HEADLINE = "paper: 9 of 9, ALLR has the highest mean in every cell of its Table 1"
SCHEDULE_LABELS = {s: s.upper() for s in RETRAIN_SCHEDULES}


# ----------------------------------------------------------------------------- the grid


def experiment_name(preset: Preset) -> str:
    return f"{preset.name}-{preset.epochs}ep-table1"


def table1_configs(
    preset: Preset,
    data: Dataset,
    sparsities: Sequence[float],
    budgets: Sequence[float],
    schedules: Sequence[str],
    seeds: Sequence[int],
    *,
    data_dir: str | None = None,
    device: str = "cpu",
) -> list[RunConfig]:
    """Seeds × sparsities × budgets × schedules of ``imp-retrain``; every plan checked.

    Raises ``grid.BadInput`` for a budget or schedule the preset cannot run.
    """
    from .grid import Request, expand

    variants = [
        {"schedule": s, "retrain_budget": repr(float(b))} for b in budgets for s in schedules
    ]
    request = Request(
        preset, [STUDY_METHOD], list(sparsities), list(seeds), {STUDY_METHOD: variants},
        data_dir, device,
    )  # fmt: skip
    return expand(request, data)


def parse_budgets(text: str) -> list[float]:
    from .grid import parse_numbers

    return parse_numbers(
        text, "--budgets", lambda v: math.isfinite(v) and v > 0,
        "give fractions of the dense budget > 0, e.g. 0.0222,0.0555,0.1111",
        "must be a fraction of the dense budget > 0",
    )  # fmt: skip


def parse_schedules(text: str) -> list[str]:
    from .grid import BadInput

    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in RETRAIN_SCHEDULES]
    if not names or bad:
        raise BadInput(
            f"--schedules {', '.join(bad) or '(empty)'}: "
            f"choose from {', '.join(RETRAIN_SCHEDULES)}"
        )
    return [s for s in RETRAIN_SCHEDULES if s in names]


# ----------------------------------------------------------------------------- the board


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


def is_study(runs: Iterable[RunRecord]) -> bool:
    """A study experiment: all its trial runs are the Table 1 setting (mixed with budget-equal
    methods, the usual leaderboard flags the unequal budgets instead)."""
    methods = {r.method for r in runs if r.kind == "run"}
    return methods == {STUDY_METHOD}


def _budget(r: RunRecord) -> float | None:
    return _to_float(r.params.get("hp.retrain_budget"))


def _mean(values: dict[int, float]) -> float:
    return float(np.mean(list(values.values())))


def _split_steps(total: int, budget: float) -> tuple[int, int]:
    """(T·I, N) from T·I + N with N = round(budget·T·I): T·I = round(total/(1 + budget))."""
    dense = round(total / (1.0 + budget))
    return dense, total - dense


def aggregate_study(runs: Iterable[RunRecord], experiment: str = "", *, alpha: float = ALPHA
                    ) -> StudyBoard:
    """Cells, marks, fairness and the comparison with the paper, from run records (pure)."""
    runs = list(runs)
    experiment = experiment or next((r.experiment for r in runs if r.experiment), "")
    notes: list[str] = []
    problems: list[str] = []
    trial = [r for r in runs if r.kind == "run"]
    others = sorted({str(r.method) for r in trial if r.method != STUDY_METHOD})
    if others:
        notes.append(f"runs of other methods in this experiment ignored: {', '.join(others)}")
    study = [r for r in trial if r.method == STUDY_METHOD]
    no_budget = [r for r in study if _budget(r) is None or not r.params.get("hp.schedule")]
    if no_budget:
        notes.append(f"{len(no_budget)} run(s) without hp.retrain_budget/hp.schedule ignored")
    study = [r for r in study if r not in no_budget]

    by_budget: dict[float, list[RunRecord]] = {}
    for r in study:
        relabelled = dataclasses.replace(r, params={**r.params, "variant": r.params["hp.schedule"]})
        by_budget.setdefault(_budget(r), []).append(relabelled)  # type: ignore[arg-type]
    budgets = sorted(by_budget)
    cells: dict[tuple[str, float, float], Cell] = {}
    comparisons: list[Comparison] = []
    retrain_steps: dict[float, int | None] = {}
    dense_steps: set[int] = set()
    targets: set[float] = set()
    for b in budgets:
        board = aggregate(by_budget[b], experiment, alpha=alpha)
        problems += [f"at retraining budget {_pct(b)}: {p}" for p in board.problems]
        notes += [f"at retraining budget {_pct(b)}: {n}" for n in board.notes]
        comparisons += [dataclasses.replace(c, metric=f"test_accuracy@{b!r}")
                        for c in board.comparisons if c.metric == "test_accuracy"]
        targets.update(board.targets)
        for row in board.rows:
            for t, cell in row.cells.items():
                cells[(row.variant, t, b)] = cell
        totals = {int(v) for r in by_budget[b] if r.finished
                  and (v := _to_float(r.metrics.get("train_steps"))) is not None}
        splits = {_split_steps(total, b) for total in totals}
        retrain_steps[b] = next(iter(splits))[1] if len(splits) == 1 else None
        dense_steps.update(d for d, _ in splits)
    if len(dense_steps) > 1:
        problems.append("runs differ in their dense budget (T·I steps): "
                        + ", ".join(map(str, sorted(dense_steps))))
    latest, _ = _latest(study, key=lambda r: r.run_key)
    for name, values in (
        ("preset", [r.params.get("preset") for r in latest]),
        ("epochs", [r.params.get("epochs") for r in latest]),
        ("data fingerprint (benchsuite.data)", [r.tags.get("benchsuite.data") for r in latest]),
        ("benchsuite.version", [r.tags.get("benchsuite.version") for r in latest]),
    ):
        distinct = sorted({str(v) for v in values if v not in (None, "")})
        if len(distinct) > 1:
            problems.append(f"runs differ in {name} across retraining budgets: "
                            + ", ".join(distinct))

    schedules = [s for s in RETRAIN_SCHEDULES if any(k[0] == s for k in cells)]
    schedules += sorted({k[0] for k in cells} - set(schedules))
    columns = [_column(cells, schedules, t, b, alpha) for t in sorted(targets) for b in budgets]
    header = _header(experiment, latest, budgets, retrain_steps, dense_steps)
    board = StudyBoard(experiment, sorted(targets), budgets, schedules, cells, columns,
                       comparisons, retrain_steps, next(iter(dense_steps), None)
                       if len(dense_steps) == 1 else None, problems, notes, [], "", header,
                       alpha)
    board.headline, board.findings = _findings(board)
    return board


def _ranked(cells: dict[tuple[str, float, float], Cell], schedules: list[str], target: float,
            budget: float) -> list[tuple[str, dict[int, float]]]:
    """A column's schedules by mean, best first (the leaderboard's rounding and tie order)."""
    entries = []
    for s in schedules:
        cell = cells.get((s, target, budget))
        if cell is not None and cell.by_seed.get("test_accuracy"):
            entries.append((s, cell.by_seed["test_accuracy"]))
    return sorted(entries, key=lambda e: -float(f"{_mean(e[1]):.12g}"))


def _column(cells: dict[tuple[str, float, float], Cell], schedules: list[str], target: float,
            budget: float, alpha: float) -> Column:
    col = Column(target, budget)
    ranked = _ranked(cells, schedules, target, budget)
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
    col.allr = {"separated": "behind", "noise": "within noise", "tie": "within noise",
                "untested": "untested"}[status]
    return col


def _label(schedule: str | None) -> str:
    return "—" if schedule is None else SCHEDULE_LABELS.get(schedule, schedule)


def _where(target: float, budget: float) -> str:
    return f"{_pct(target)} · {_pct(budget)}"


def _p_text(p: float | None) -> str:
    return "" if p is None else f", p = {p:.3g}"


def _findings(board: StudyBoard) -> tuple[str, list[str]]:
    """The comparison with the paper's Table 1, from the numbers alone."""
    out: list[str] = []
    cols = [c for c in board.columns if c.allr != "missing"]
    good = [c for c in cols if c.allr in ("first", "within noise")]
    first = [c for c in cols if c.allr == "first"]
    headline = (f"ALLR first or within noise of the first in {len(good)} of {len(cols)} cells "
                f"(first in {len(first)}); {PAPER_HEADLINE}.")
    paper_cols = [c for c in cols if any(math.isclose(c.target, s) for s in PAPER_SPARSITIES)]
    if paper_cols and len(paper_cols) != len(cols):
        paper_good = [c for c in paper_cols if c.allr in ("first", "within noise")]
        headline += (f" At the paper's sparsities (70/80/90 %): {len(paper_good)} of "
                     f"{len(paper_cols)} (first in "
                     f"{sum(c.allr == 'first' for c in paper_cols)}).")
    for c in board.columns:
        where = _where(c.target, c.budget)
        if c.allr == "missing":
            out.append(f"{where}: no ALLR runs.")
        elif c.allr == "first":
            link = {"separated": "separated from the second,", "tie": "tied with",
                    "untested": "untested against the second,"}.get(
                c.second_status or "", "within noise of the second,")
            second = "" if c.second is None else f"; {link} {_label(c.second)}"
            out.append(f"{where}: ALLR first{second}.")
        elif c.allr == "within noise":
            out.append(f"{where}: ALLR within noise of the first, {_label(c.leader)} "
                       f"({_f2(c.allr_gap or 0.0)} points behind{_p_text(c.allr_p)}); "
                       "the paper has it first.")
        elif c.allr == "behind":
            out.append(f"{where}: ALLR behind {_label(c.leader)} by {_f2(c.allr_gap or 0.0)} "
                       f"points{_p_text(c.allr_p)}: unlike the paper, where it is first.")
        else:
            out.append(f"{where}: ALLR below {_label(c.leader)}, untested (fewer than 2 shared "
                       "seeds).")
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
        ranked = _ranked(board.cells, board.schedules, t, b)
        if not ranked:
            continue
        lead, lead_vals = ranked[0]
        parts = []
        for s in ("ft", "lrw"):
            vals = dict(ranked).get(s)
            if vals is None:
                continue
            if s == lead:
                parts.append(f"{_label(s)} is first")
                continue
            _, diff, _, p, status = paired_test(lead_vals, vals, board.alpha)
            verdict = {"separated": "behind", "untested": "untested"}.get(status, "within noise")
            parts.append(f"{_label(s)} {verdict} ({_f2(diff)} points below "
                         f"{_label(lead)}{_p_text(p)})")
        if not parts:
            continue
        if all(" behind " in p for p in parts):
            paper = "as in the paper (at 90 % · 2.22 % FT and LRW reach 56.75, ALLR 69.56)"
        elif any(" untested " in p for p in parts):
            paper = "untested (fewer than 2 shared seeds); the paper has them collapse there"
        else:
            paper = "unlike the paper, where FT and LRW collapse at 90 % · 2.22 %"
        out.append(f"FT and LRW at {_where(t, b)} (highest sparsity"
                   f"{' of the paper' if t != board.targets[-1] else ''}, shortest budget): "
                   f"{'; '.join(parts)}: {paper}.")
    same = [
        _where(t, b) for t in board.targets for b in board.budgets
        if (ft := board.cell("ft", t, b)) is not None and (lrw := board.cell("lrw", t, b))
        is not None and ft.by_seed.get("test_accuracy")
        and ft.by_seed.get("test_accuracy") == lrw.by_seed.get("test_accuracy")
    ]
    if same:
        out.append(f"FT and LRW give identical accuracies seed by seed in {len(same)} of "
                   f"{len(board.targets) * len(board.budgets)} cells: there LRW's replay of "
                   "the dense run's last N steps is FT's constant η_min (the paper's FT and LRW "
                   "agree to within 0.01 too).")
    return out


def _order_findings(board: StudyBoard) -> list[str]:
    """The paper's other two orderings: SLR weakest at the lowest sparsity; LLR and CLR next."""
    out = []
    if board.targets and "slr" in board.schedules:
        t = board.targets[0]
        cols = [(b, _ranked(board.cells, board.schedules, t, b)) for b in board.budgets]
        cols = [(b, r) for b, r in cols if len(r) > 1]
        last = [b for b, r in cols if r[-1][0] == "slr"]
        if cols:
            verdict = ("as in the paper (SLR is last at 70 % in every budget)"
                       if len(last) == len(cols) else
                       "the paper has SLR last at 70 % in every budget")
            out.append(f"SLR has the lowest mean at the lowest sparsity ({_pct(t)}) in "
                       f"{len(last)} of {len(cols)} budgets: {verdict}.")
    mid = [t for t in board.targets if any(math.isclose(t, s) for s in (0.8, 0.9))]
    if mid and {"llr", "clr"} <= set(board.schedules):
        cols = [_ranked(board.cells, board.schedules, t, b) for t in mid for b in board.budgets]
        cols = [r for r in cols if len(r) >= 3]
        hits = [r for r in cols if {r[1][0], r[2][0]} == {"llr", "clr"}]
        if cols:
            verdict = ("as in the paper" if len(hits) == len(cols) else
                       "the paper has them 2nd and 3rd in all of these columns")
            out.append(f"LLR and CLR take 2nd and 3rd place (by mean) in {len(hits)} of "
                       f"{len(cols)} columns at 80 % and 90 %: {verdict}.")
    return out


def _header(experiment: str, latest: list[RunRecord], budgets: list[float],
            retrain_steps: dict[float, int | None], dense: set[int]) -> dict[str, str]:
    h = _derive_header(experiment, sorted(latest, key=lambda r: (r.start_time, r.run_id)), [],
                       [])
    dense_s = ", ".join(map(str, sorted(dense))) or "unknown"
    steps = ", ".join(f"{_pct(b)} = {'?' if retrain_steps[b] is None else retrain_steps[b]}"
                      for b in budgets)
    h["train_steps"] = f"{dense_s} dense + {steps} retraining"
    h["retraining"] = steps
    h["dense_steps"] = dense_s
    return h


# ----------------------------------------------------------------------------- formatting


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "—"
    text = _md_marked(_acc_value(cell), cell.marks.get("test_accuracy", Mark()))
    if cell.short or cell.failed or cell.running:
        text += f" _({_n_text(cell)})_"
    return text


def _titles(board: StudyBoard) -> list[str]:
    return ["Schedule"] + [_where(t, b) for t in board.targets for b in board.budgets]


def to_markdown(board: StudyBoard) -> str:
    h = board.header
    out = [f"# Retraining study (Table 1 layout): {board.experiment}", ""]
    out += [
        f"- **Dataset:** {h['dataset']}",
        f"- **Model:** {h['model']}",
        f"- **Preset:** {h['preset']}",
        f"- **Setting:** one-shot IMP (`{STUDY_METHOD}`): dense training for the preset's full "
        f"budget ({h['epochs']} epochs = {h['dense_steps']} steps, batch size {h['batch_size']}, "
        "one cached dense run per seed shared by every cell), one global magnitude prune to the "
        "column's sparsity, then retraining with the row's schedule **on top of** the dense "
        "budget: not budget-equal, like the paper's Table 1.",
        f"- **Retraining budgets** (fraction of the dense steps = N steps, the same for every "
        f"schedule): {h['retraining']}",
        f"- **Seeds:** {h['seeds']}",
        f"- **Hardware / device (trials):** {h['device']}",
        f"- **benchsuite version:** {h['version']}",
        f"- **Newest run:** {h['newest_run']}",
        "- **Reproduce** (resumes by run key: finished runs are skipped):",
        "",
        "```",
        *h["command"].splitlines(),
        "```",
        "",
        f"**Headline:** {board.headline}",
        "",
    ]
    if board.problems:
        out += ["> **Warning: unfair comparison** (published with `--force`):"]
        out += [f"> - {p}" for p in board.problems] + [""]
    titles = _titles(board)
    out += ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for s in board.schedules:
        cells = [_cell_text(board.cell(s, t, b)) for t in board.targets for b in board.budgets]
        out.append("| " + " | ".join([_label(s), *cells]) + " |")
    out += ["", "## Legend", ""]
    out += [
        "- Cells: test top-1 accuracy (%), mean ± sample std over seeds (`n=2 of 3` where a "
        "cell has fewer seeds than its column; failed and running runs are counted there).",
        "- Columns: target sparsity · retraining budget (a fraction of the dense budget's "
        "steps).",
        "- Marks, within each column: the schedules sorted by mean, each compared with the next "
        "by a two-sided paired t-test over shared seeds (same seed: same dense model, same "
        f"batches), α = {board.alpha}. **Bold** with ¹ ² ³: that place, separated from both "
        "neighbours; ≈: within noise of a neighbour (the leaderboard's rules, "
        "`benchsuite/leaderboard.py`).",
        "- ALLR is *first* when it has the highest mean, *within noise of the first* when the "
        "paired test against the first is not separated, *behind* otherwise.",
    ]
    out += ["", "## Comparison with the paper (computed from the numbers above)", ""]
    out += [f"- {line}" for line in board.findings]
    if board.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in board.notes]
    return "\n".join(out) + "\n"


def _board_dict(board: StudyBoard) -> dict[str, Any]:
    cells = []
    for s in board.schedules:
        for t in board.targets:
            for b in board.budgets:
                cell = board.cell(s, t, b)
                if cell is None:
                    continue
                cells.append({
                    "schedule": s, "target_sparsity": t, "retrain_budget": b,
                    "n": cell.n, "n_expected": cell.n_expected, "seeds": list(cell.seeds),
                    "run_ids": {str(k): v for k, v in sorted(cell.run_ids.items())},
                    "failed": cell.failed, "running": cell.running,
                    "test_accuracy": _stat_json(cell.stats.get("test_accuracy"),
                                                cell.marks.get("test_accuracy")),
                    "sparsity": _stat_json(cell.stats.get("sparsity")),
                })
    return {
        "schema": SCHEMA,
        "experiment": board.experiment,
        "header": board.header,
        "method": STUDY_METHOD,
        "targets": board.targets,
        "budgets": board.budgets,
        "retrain_steps": {repr(b): n for b, n in board.retrain_steps.items()},
        "dense_steps": board.dense_steps,
        "schedules": board.schedules,
        "alpha": board.alpha,
        "test": "two-sided paired t-test (scipy.stats.ttest_rel) between neighbours by mean",
        "headline": board.headline,
        "findings": board.findings,
        "problems": board.problems,
        "notes": board.notes,
        "columns": [dataclasses.asdict(c) for c in board.columns],
        "cells": cells,
        "comparisons": [
            {"metric": c.metric, "target_sparsity": c.target, "upper": c.upper,
             "lower": c.lower, "shared_seeds": c.shared_seeds, "diff": c.diff,
             "t": c.t if c.t is not None and math.isfinite(c.t) else None,
             "t_infinite": c.t is not None and math.isinf(c.t), "p": c.p, "status": c.status}
            for c in board.comparisons
        ],
    }


def to_json(board: StudyBoard) -> str:
    return json.dumps(_board_dict(board), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render_rich(board: StudyBoard) -> rich.table.Table:
    from rich.table import Table
    from rich.text import Text

    captions = [Text(f"⚠ unfair comparison: {p}", style="bold red") for p in board.problems]
    captions.append(Text(board.headline, style="bold"))
    captions += [Text(line, style="dim") for line in board.findings]
    h = board.header
    table = Table(title=f"benchsuite study: {board.experiment}\n{h['dataset']}, {h['model']}, "
                        f"{h['dense_steps']} dense steps + {h['retraining']}, seeds {h['seeds']}",
                  caption=Text("\n").join(captions), caption_justify="left")
    for i, title in enumerate(_titles(board)):
        table.add_column(title.replace(" · ", "\n"), justify="left" if i == 0 else "right")
    for s in board.schedules:
        row = [Text(_label(s))]
        for t in board.targets:
            for b in board.budgets:
                cell = board.cell(s, t, b)
                mark = Mark() if cell is None else cell.marks.get("test_accuracy", Mark())
                text = "—" if cell is None else _acc_value(cell) + mark.symbol
                row.append(Text(text, style="bold green" if mark.rank == 1 else ""))
        table.add_row(*row)
    return table


def plot(board: StudyBoard) -> Figure:
    """Accuracy against retraining budget, one panel per sparsity, one line per schedule."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(1, len(board.targets))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.0 * ncols + (0 if n % ncols else 1.6), 3.4 * nrows), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    markers = "os^DvP"
    for k, t in enumerate(board.targets):
        ax = axes[k // ncols][k % ncols]
        for i, s in enumerate(board.schedules):
            pts = []
            for b in board.budgets:
                cell = board.cell(s, t, b)
                st = None if cell is None else cell.stats.get("test_accuracy")
                if st is not None:
                    pts.append((b * 100, st.mean, st.std or 0.0))
            if pts:
                x, y, e = zip(*pts, strict=True)
                ax.errorbar(x, y, yerr=e, marker=markers[i % len(markers)], markersize=4,
                            capsize=3, linewidth=1.2, label=_label(s),
                            linestyle="--" if s == "lrw" else "-")  # LRW often lies on FT
        ax.set_title(f"sparsity {_pct(t)}")
        ax.set_xlabel("retraining budget (% of dense steps)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xticks([b * 100 for b in board.budgets])
        ax.grid(True, alpha=0.3)
    spare = [axes[k // ncols][k % ncols] for k in range(n, nrows * ncols)]
    for ax in spare:
        ax.set_axis_off()
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles and spare:  # the legend in the first empty panel
        spare[0].legend(handles, labels, loc="center", title="schedule")
    elif handles:
        fig.legend(handles, labels, loc="center right", fontsize="small")
    fig.suptitle(f"{board.experiment}: accuracy vs retraining budget (error bars: std)")
    right = 1.0 if spare else 1.0 - 1.3 / (4.0 * ncols + 1.6)
    fig.tight_layout(rect=(0, 0, right, 0.95))
    return fig


def publish(board: StudyBoard, out_dir: Path, *, force: bool = False) -> list[Path]:
    """The study board's published files; an unfair study is refused unless forced."""
    if board.problems and not force:
        raise UnfairComparison("; ".join(board.problems))
    return write_published(
        board.experiment, out_dir, to_markdown(board), to_json(board), plot(board)
    )


__all__ = [
    "DEFAULT_BUDGETS",
    "DEFAULT_SPARSITIES",
    "SCHEMA",
    "STUDY_METHOD",
    "Column",
    "StudyBoard",
    "aggregate_study",
    "board_for",
    "experiment_name",
    "is_study",
    "parse_budgets",
    "parse_schedules",
    "plot",
    "publish",
    "render_rich",
    "table1_configs",
    "to_json",
    "to_markdown",
]


def board_for(tracking_uri: str, experiment: str | None = None) -> Any:
    """The experiment's board: a ``StudyBoard`` for a study, else the usual ``Leaderboard``."""
    from .leaderboard import default_experiment, load_runs

    name = experiment or default_experiment(tracking_uri)
    if name is None:
        raise KeyError(f"no experiment with runs at {tracking_uri}")
    runs = load_runs(tracking_uri, name)
    return aggregate_study(runs, name) if is_study(runs) else aggregate(runs, experiment=name)

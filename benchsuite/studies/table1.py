"""The retraining study of the paper's Table 1: its grid of runs and its board.

Zimmer et al. (2023), Table 1: one-shot IMP, the dense model trained for the full budget,
pruned once to 70/80/90 % and retrained for 2.22/5.55/11.11 % of the dense budget with FT,
LRW, SLR, CLR, LLR or ALLR (method ``imp-retrain``). Retraining comes on top of the dense
budget, so these runs are not budget-equal and get their own board: rows = schedules,
columns = sparsity × retraining budget, each cell mean ± std over seeds.

The statistics are the leaderboard's (``aggregation.aggregate``): each retraining budget is
aggregated as one leaderboard whose rows are the schedules, so a column's marks come from the
same paired t-test between neighbours and the same mark rules, and the leaderboard's fairness
checks (same preset, data, version and ``train_steps``) hold within every budget. Across
budgets only ``train_steps`` may differ (T·I + N).

The board's findings compare the small-scale result with the paper's claims
(``benchsuite.study_findings``); its figure is ``plot.study_plot``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchsuite.boards.aggregation import aggregate, derive_header, latest
from benchsuite.boards.format import percent
from benchsuite.boards.leaderboard import Cell, UnfairComparison
from benchsuite.boards.publish import write_published
from benchsuite.boards.render import (
    acc_value,
    comparison_json,
    md_marked,
    n_text,
    stat_json,
    study_caption,
)
from benchsuite.boards.stats import ALPHA, Comparison, Mark
from benchsuite.core.errors import BadInput
from benchsuite.core.record import Kinds, Metrics, Params, RunRecord, Tags, to_float
from benchsuite.execution.grid import Request, expand, parse_numbers
from benchsuite.pruning.schedules import RETRAIN_SCHEDULES
from benchsuite.studies.board import StudyBoard
from benchsuite.studies.table1_findings import (
    column,
    column_title,
    compare_with_paper,
    label,
)
from benchsuite.studies.table1_plot import study_plot

if TYPE_CHECKING:
    import rich.table

    from benchsuite.core.identity import RunConfig
    from benchsuite.data.base import Dataset
    from benchsuite.presets import Preset

STUDY_METHOD = "imp-retrain"
SCHEMA = "benchsuite.study/1"
DEFAULT_SPARSITIES = (0.7, 0.8, 0.9, 0.95, 0.98)  # the paper's three, and where LeNet-5 strains
DEFAULT_BUDGETS = (0.0222, 0.0555, 0.1111)  # Table 1: 2, 5 and 10 of 90 epochs
_BUDGET, _SCHEDULE = Params.HP + "retrain_budget", Params.HP + "schedule"  # its variant
ALLR_INITIAL_LR = "allr_initial_lr"  # what imp logs at each prune (methods/imp.py)


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

    Raises ``BadInput`` for a budget or schedule the preset cannot run.
    """
    variants = [
        {"schedule": s, "retrain_budget": repr(float(b))} for b in budgets for s in schedules
    ]
    request = Request(
        preset,
        [STUDY_METHOD],
        list(sparsities),
        list(seeds),
        {STUDY_METHOD: variants},
        data_dir,
        device,
    )
    return expand(request, data)


def parse_budgets(text: str) -> list[float]:
    return parse_numbers(
        text,
        "--budgets",
        lambda v: math.isfinite(v) and v > 0,
        "give fractions of the dense budget > 0, e.g. 0.0222,0.0555,0.1111",
        "must be a fraction of the dense budget > 0",
    )


def parse_schedules(text: str) -> list[str]:
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in RETRAIN_SCHEDULES]
    if not names or bad:
        raise BadInput(
            f"--schedules {', '.join(bad) or '(empty)'}: choose from {', '.join(RETRAIN_SCHEDULES)}"
        )
    return [s for s in RETRAIN_SCHEDULES if s in names]


# ----------------------------------------------------------------------------- the board


def is_study(runs: Iterable[RunRecord]) -> bool:
    """A study experiment: all its trial runs are the Table 1 setting (mixed with budget-equal
    methods, the usual leaderboard flags the unequal budgets instead)."""
    methods = {r.method for r in runs if r.kind == Kinds.RUN}
    return methods == {STUDY_METHOD}


def _budget(r: RunRecord) -> float | None:
    return to_float(r.params.get(_BUDGET))


def _split_steps(total: int, budget: float) -> tuple[int, int]:
    """(T·I, N) from T·I + N with N = round(budget·T·I): T·I = round(total/(1 + budget))."""
    dense = round(total / (1.0 + budget))
    return dense, total - dense


def aggregate_study(
    runs: Iterable[RunRecord], experiment: str = "", *, alpha: float = ALPHA
) -> StudyBoard:
    """Cells, marks, fairness and the comparison with the paper, from run records (pure).

    Each retraining budget is aggregated as one leaderboard whose rows are the schedules.
    """
    runs = list(runs)
    experiment = experiment or next((r.experiment for r in runs if r.experiment), "")
    notes: list[str] = []
    problems: list[str] = []
    study = _study_runs(runs, notes)
    by_budget: dict[float, list[RunRecord]] = {}
    for r in study:
        relabelled = dataclasses.replace(
            r, params={**r.params, Params.VARIANT: r.params[_SCHEDULE]}
        )
        by_budget.setdefault(_budget(r), []).append(relabelled)  # type: ignore[arg-type]
    budgets = sorted(by_budget)
    cells: dict[tuple[str, float, float], Cell] = {}
    comparisons: list[Comparison] = []
    targets: set[float] = set()
    for b in budgets:
        board = aggregate(by_budget[b], experiment, alpha=alpha)
        problems += [f"at retraining budget {percent(b)}: {p}" for p in board.problems]
        notes += [f"at retraining budget {percent(b)}: {n}" for n in board.notes]
        comparisons += [
            dataclasses.replace(c, metric=f"test_accuracy@{b!r}")
            for c in board.comparisons
            if c.metric == Metrics.TEST_ACCURACY
        ]
        targets.update(board.targets)
        cells.update(
            {(row.variant, t, b): cell for row in board.rows for t, cell in row.cells.items()}
        )
    retrain_steps, dense_steps = _steps(by_budget)
    counted, _ = latest(study, key=lambda r: r.run_key)
    problems += _study_problems(counted, dense_steps)
    schedules = [s for s in RETRAIN_SCHEDULES if any(k[0] == s for k in cells)]
    schedules += sorted({k[0] for k in cells} - set(schedules))
    allr_lr = _allr_initial_lr(counted)
    columns = [
        column(cells, schedules, t, b, comparisons, allr_lr.get((t, b)))
        for t in sorted(targets)
        for b in budgets
    ]
    header = _header(experiment, counted, budgets, retrain_steps, dense_steps)
    board = StudyBoard(
        experiment,
        sorted(targets),
        budgets,
        schedules,
        cells,
        columns,
        comparisons,
        retrain_steps,
        next(iter(dense_steps), None) if len(dense_steps) == 1 else None,
        problems,
        notes,
        [],
        "",
        header,
        alpha,
    )
    board.headline, board.findings = compare_with_paper(board)
    return board


def _allr_initial_lr(runs: list[RunRecord]) -> dict[tuple[float, float], float]:
    """Per (target, budget): ALLR's initial learning rate after the prune ÷ η_max (the preset's
    peak LR), the mean over its finished seeds (the runs log it as ``allr_initial_lr``)."""
    ratios: dict[tuple[float, float], list[float]] = {}
    for r in runs:
        lr0 = to_float(r.metrics.get(ALLR_INITIAL_LR))
        peak = to_float(r.params.get(Params.LR))
        if r.finished and r.params.get(_SCHEDULE) == "allr" and lr0 is not None and peak:
            ratios.setdefault((r.target, _budget(r)), []).append(lr0 / peak)  # type: ignore[arg-type]
    return {k: sum(v) / len(v) for k, v in ratios.items()}


def _study_runs(runs: list[RunRecord], notes: list[str]) -> list[RunRecord]:
    """The study's trial runs that name their retraining budget and schedule."""
    trial = [r for r in runs if r.kind == Kinds.RUN]
    others = sorted({str(r.method) for r in trial if r.method != STUDY_METHOD})
    if others:
        notes.append(f"runs of other methods in this experiment ignored: {', '.join(others)}")
    study = [r for r in trial if r.method == STUDY_METHOD]
    no_budget = [r for r in study if _budget(r) is None or not r.params.get(_SCHEDULE)]
    if no_budget:
        notes.append(f"{len(no_budget)} run(s) without hp.retrain_budget/hp.schedule ignored")
    return [r for r in study if r not in no_budget]


def _steps(by_budget: dict[float, list[RunRecord]]) -> tuple[dict[float, int | None], set[int]]:
    """Each budget's retraining steps N (None where its runs disagree); the dense T·I seen."""
    retrain_steps: dict[float, int | None] = {}
    dense_steps: set[int] = set()
    for b in sorted(by_budget):
        totals = {
            int(v)
            for r in by_budget[b]
            if r.finished and (v := to_float(r.metrics.get(Metrics.TRAIN_STEPS))) is not None
        }
        splits = {_split_steps(total, b) for total in totals}
        retrain_steps[b] = next(iter(splits))[1] if len(splits) == 1 else None
        dense_steps.update(d for d, _ in splits)
    return retrain_steps, dense_steps


def _study_problems(counted: list[RunRecord], dense_steps: set[int]) -> list[str]:
    """Unfair across budgets (within one, the leaderboard's checks hold): only ``train_steps``
    may differ between budgets, by the retraining steps."""
    problems = []
    if len(dense_steps) > 1:
        problems.append(
            "runs differ in their dense budget (T·I steps): "
            + ", ".join(map(str, sorted(dense_steps)))
        )
    for name, values in (
        ("preset", [r.params.get(Params.PRESET) for r in counted]),
        ("epochs", [r.params.get(Params.EPOCHS) for r in counted]),
        ("data fingerprint (benchsuite.data)", [r.tag(Tags.DATA) for r in counted]),
        ("benchsuite.version", [r.tag(Tags.VERSION) for r in counted]),
    ):
        distinct = sorted({str(v) for v in values if v not in (None, "")})
        if len(distinct) > 1:
            problems.append(
                f"runs differ in {name} across retraining budgets: " + ", ".join(distinct)
            )
    return problems


def _header(
    experiment: str,
    latest: list[RunRecord],
    budgets: list[float],
    retrain_steps: dict[float, int | None],
    dense: set[int],
) -> dict[str, str]:
    h = derive_header(experiment, sorted(latest, key=lambda r: (r.start_time, r.run_id)), [], [])
    dense_s = ", ".join(map(str, sorted(dense))) or "unknown"
    steps = ", ".join(
        f"{percent(b)} = {'?' if retrain_steps[b] is None else retrain_steps[b]}" for b in budgets
    )
    h["train_steps"] = f"{dense_s} dense + {steps} retraining"
    h["retraining"] = steps
    h["dense_steps"] = dense_s
    return h


# ----------------------------------------------------------------------------- formatting


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "—"
    text = md_marked(acc_value(cell), cell.marks.get(Metrics.TEST_ACCURACY, Mark()))
    if cell.short or cell.failed or cell.running:
        text += f" _({n_text(cell)})_"
    return text


def _titles(board: StudyBoard) -> list[str]:
    return ["Schedule"] + [column_title(t, b) for t in board.targets for b in board.budgets]


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
        out.append("| " + " | ".join([label(s), *cells]) + " |")
    out += ["", "## Legend", ""]
    out += [
        "- Cells: test top-1 accuracy (%), mean ± sample std over seeds (`n=2 of 3` where a "
        "cell has fewer seeds than its column; failed and running runs are counted there).",
        "- Columns: target sparsity · retraining budget (a fraction of the dense budget's steps).",
        "- Marks, within each column: every pair of schedules is compared by a two-sided "
        "paired t-test over shared seeds (same seed: same dense model, same batches), the "
        "column's p-values corrected by Holm's procedure in two families, the best against "
        f"each other schedule and the remaining pairs, α = {board.alpha}. "
        "**Bold**: the best group (the highest mean and every schedule not separated from it); "
        "a superscript: the rank with ties (the leaderboard's rules, docs/leaderboards.md).",
        "- *Separated* (ahead or behind) means a corrected test separates the two schedules; "
        "*not separated* means it does not, which is not evidence that they are equal.",
        "- ALLR's initial LR: the learning rate ALLR restarts retraining at, "
        "clip(d/√p·η_max, budget-aware floor, η_max) (docs/methods.md, imp), as a fraction of "
        "η_max, mean over seeds.",
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
                cells.append(
                    {
                        "schedule": s,
                        "target_sparsity": t,
                        "retrain_budget": b,
                        "n": cell.n,
                        "n_expected": cell.n_expected,
                        "seeds": list(cell.seeds),
                        "run_ids": {str(k): v for k, v in sorted(cell.run_ids.items())},
                        "failed": cell.failed,
                        "running": cell.running,
                        "test_accuracy": stat_json(
                            cell.stats.get(Metrics.TEST_ACCURACY),
                            cell.marks.get(Metrics.TEST_ACCURACY),
                        ),
                        "sparsity": stat_json(cell.stats.get(Metrics.SPARSITY)),
                    }
                )
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
        "test": (
            "two-sided paired t-test (scipy.stats.ttest_rel) between every pair of a column's "
            "schedules, Holm-corrected (statsmodels multipletests) in two families per column: "
            "the best against each other schedule, and the remaining pairs"
        ),
        "headline": board.headline,
        "findings": board.findings,
        "problems": board.problems,
        "notes": board.notes,
        "columns": [dataclasses.asdict(c) for c in board.columns],
        "cells": cells,
        "comparisons": [comparison_json(c) for c in board.comparisons],
    }


def to_json(board: StudyBoard) -> str:
    return json.dumps(_board_dict(board), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render_rich(board: StudyBoard) -> rich.table.Table:
    from rich.table import Table
    from rich.text import Text

    h = board.header
    table = Table(
        title=f"benchsuite study: {board.experiment}\n{h['dataset']}, {h['model']}, "
        f"{h['dense_steps']} dense steps + {h['retraining']}, seeds {h['seeds']}",
        caption=study_caption(board.problems, board.headline, board.findings),
        caption_justify="left",
    )
    for i, title in enumerate(_titles(board)):
        table.add_column(title.replace(" · ", "\n"), justify="left" if i == 0 else "right")
    for s in board.schedules:
        row = [Text(label(s))]
        for t in board.targets:
            for b in board.budgets:
                cell = board.cell(s, t, b)
                mark = Mark() if cell is None else cell.marks.get(Metrics.TEST_ACCURACY, Mark())
                text = "—" if cell is None else acc_value(cell) + mark.symbol
                row.append(Text(text, style="bold green" if mark.best else ""))
        table.add_row(*row)
    return table


def publish(board: StudyBoard, out_dir: Path, *, force: bool = False) -> list[Path]:
    """The study board's published files; an unfair study is refused unless forced."""
    if board.problems and not force:
        raise UnfairComparison("; ".join(board.problems))
    return write_published(
        board.experiment, out_dir, to_markdown(board), to_json(board), study_plot(board)
    )

"""The comparison of the paper's Table 2 on any preset: its grid of runs and its board.

Zimmer et al. (2023), Table 2: BIMP against the pruning-stable methods GMP, GSM, DPF, DNW, LC,
STR and DST at equal training budget, 70/80/90 % sparsity, with training img/s. Unlike Table 1
these are ordinary budget-equal runs (``execution.grid``'s ``Request``/``expand``), so the study
resumes by run key like ``benchsuite run``, and the board's cells, marks, fairness checks and
img/s are the leaderboard's (``aggregation.aggregate``). What the study adds: the paper's rows
in the paper's order, with the marks among its eight methods only; three reference rows that
are never ranked with them (dense, the one-shot floor, RigL: a sparse-to-sparse method outside
the paper's table); the paper's own numbers beside the board's; and a comparison with the paper
computed from the numbers (``table2_findings``).

An experiment is a Table 2 study when a run of it was recorded by ``benchsuite study table2``
(its command tag); ``publish`` then writes this layout.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchsuite.boards.aggregation import aggregate
from benchsuite.boards.format import img_per_s_text, percent, two_dp
from benchsuite.boards.leaderboard import (
    FLOOR_METHOD,
    REFERENCE_METHOD,
    Cell,
    Row,
    UnfairComparison,
)
from benchsuite.boards.publish import write_published
from benchsuite.boards.render import (
    acc_value,
    cell_json,
    comparison_json,
    finite,
    footnoted_cells,
    mark_json,
    md_marked,
    n_text,
    stat_json,
    study_caption,
)
from benchsuite.boards.stats import ALPHA, Mark
from benchsuite.core.errors import BadInput
from benchsuite.core.record import Kinds, Metrics, RunRecord, Tags
from benchsuite.execution.grid import Request, expand
from benchsuite.studies.table2_board import Table2Board
from benchsuite.studies.table2_findings import (
    PAPER,
    PAPER_ACCURACY,
    PAPER_IMG_PER_S,
    PAPER_METHODS,
    PAPER_STR_SPARSITY,
    columns,
    compare_with_paper,
    label,
)
from benchsuite.studies.table2_plot import table2_plot

if TYPE_CHECKING:
    import rich.table

    from benchsuite.core.identity import RunConfig
    from benchsuite.data.base import Dataset
    from benchsuite.presets import Preset

SCHEMA = "benchsuite.table2/1"
COMMAND = ("study", "table2")  # the words after `benchsuite` that mark an experiment as one
RIGL = "rigl"
REFERENCE_ROWS = (REFERENCE_METHOD, FLOOR_METHOD, RIGL)
METHODS = (*PAPER_METHODS, *REFERENCE_ROWS)  # the study's rows, in display order
DEFAULT_SPARSITIES = (0.7, 0.8, 0.9)  # the paper's Table 2
ROLE = {REFERENCE_METHOD: "reference", FLOOR_METHOD: "floor", RIGL: "reference"}


# ----------------------------------------------------------------------------- the grid


def experiment_name(preset: Preset) -> str:
    return f"{preset.name}-{preset.epochs}ep-table2"


def parse_methods(text: str) -> list[str]:
    """A comma list of the study's rows (``all``: every one), in the board's order."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if "all" in names:
        names = list(METHODS)
    bad = [m for m in names if m not in METHODS]
    if not names or bad:
        raise BadInput(
            f"--methods {', '.join(bad) or '(empty)'}: choose from all, {', '.join(METHODS)}"
        )
    return [m for m in METHODS if m in names]


def table2_configs(
    preset: Preset,
    data: Dataset,
    sparsities: Sequence[float],
    methods: Sequence[str],
    seeds: Sequence[int],
    *,
    data_dir: str | None = None,
    device: str = "cpu",
) -> list[RunConfig]:
    """Seeds × sparsities × methods with their default hyperparameters (and the preset's
    calibration), dense once per seed; every plan checked (``BadInput`` if one cannot run)."""
    request = Request(
        preset,
        list(methods),
        list(sparsities),
        list(seeds),
        {m: [{}] for m in methods},
        data_dir,
        device,
    )
    return expand(request, data)


# ----------------------------------------------------------------------------- the board


def _recorded_by_study(run: RunRecord) -> bool:
    try:
        words = shlex.split(run.tag(Tags.COMMAND) or "")
    except ValueError:
        return False
    return tuple(words[1:3]) == COMMAND


def is_table2(runs: Iterable[RunRecord]) -> bool:
    """A Table 2 study: at least one of its trial runs was recorded by `study table2` (runs
    recorded by `run` into the same experiment, resumed by run key, count with them)."""
    return any(r.kind == Kinds.RUN and _recorded_by_study(r) for r in runs)


def aggregate_table2(
    runs: Iterable[RunRecord], experiment: str = "", *, alpha: float = ALPHA
) -> Table2Board:
    """Cells, marks (among the paper's eight), fairness and the comparison with the paper (pure).

    Only the default variant of each of the study's rows counts; other runs are named in a note.
    """
    runs = list(runs)
    experiment = experiment or next((r.experiment for r in runs if r.experiment), "")
    shown = [r for r in runs if r.method in METHODS and r.variant == "default"]
    kept = {id(r) for r in shown}
    left_out = sorted(
        {
            r.method if r.variant == "default" else f"{r.method} ({r.variant})"
            for r in runs
            if r.kind == Kinds.RUN and id(r) not in kept and r.method is not None
        }
    )
    full = aggregate(shown, experiment, alpha=alpha)
    ranked = [r for r in shown if r.method in PAPER_METHODS or r.method == REFERENCE_METHOD]
    board = aggregate(ranked, experiment, alpha=alpha)
    order = {m: i for i, m in enumerate(METHODS)}
    board.rows.sort(key=lambda row: order[row.method])
    references = sorted(
        (row for row in full.rows if row.method in (FLOOR_METHOD, RIGL)),
        key=lambda row: order[row.method],
    )
    for row in references:  # shown for reference: no place among the eight
        for cell in row.cells.values():
            cell.marks = {m: Mark() for m in cell.marks}
        if row.img_per_s is not None:
            row.img_per_s.mark = Mark()
    notes = list(full.notes)
    if left_out:
        notes.append(
            "runs in this experiment that are not rows of the Table 2 layout, left out: "
            + ", ".join(left_out)
        )
    table = Table2Board(
        experiment,
        full.targets,
        board,
        references,
        [],
        "",
        [],
        full.problems,
        notes,
        full.header,
        alpha,
    )
    table.columns = columns(table)
    table.headline, table.findings = compare_with_paper(table)
    return table


# ----------------------------------------------------------------------------- formatting


def row_label(row: Row) -> str:
    role = ROLE.get(row.method)
    extra = {"floor": " (floor)", "reference": " (reference)"}.get(role or "", "")
    return label(row.method) + extra


def _speedup_text(cell: Cell) -> str:
    st = cell.stats.get(Metrics.THEORETICAL_SPEEDUP)
    return "—" if st is None else f"{two_dp(st.mean)}×"


def _sparsity_text(cell: Cell) -> str:
    st = cell.stats.get(Metrics.SPARSITY)
    return "—" if st is None else f"{two_dp(st.mean * 100)}%"


def _img_per_s_text(row: Row) -> str:
    tp = row.img_per_s
    if tp is None:
        return "—"
    if tp.source == "in-trial":
        return img_per_s_text(tp.value) + "†"
    return md_marked(img_per_s_text(tp.value), tp.mark)


def footnotes(board: Table2Board) -> list[tuple[int, Row, Cell]]:
    return footnoted_cells(board.rows, board.targets)


def _acc_text(row: Row, cell: Cell, notes: dict[tuple[str, float], int]) -> str:
    mark = cell.marks.get(Metrics.TEST_ACCURACY, Mark())
    text = md_marked(acc_value(cell), mark)
    if cell.short or cell.failed or cell.running:
        text += f" _({n_text(cell)})_"
    if (row.method, cell.target) in notes:
        text += f" [{notes[(row.method, cell.target)]}]"
    return text


def _titles(targets: list[float]) -> list[str]:
    titles = ["Method", "img/s"]
    for t in targets:
        p = percent(t)
        titles += [f"{p} Acc", f"{p} Speedup", f"{p} Sparsity"]
    return titles


def _table_lines(board: Table2Board) -> list[str]:
    notes = {(row.method, cell.target): k for k, row, cell in footnotes(board)}
    titles = _titles(board.targets)
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in board.rows:
        cells = [row_label(row), _img_per_s_text(row)]
        for t in board.targets:
            cell = row.cell(t)
            if cell is None:
                cells += ["—"] * 3
                continue
            marked = cell.marks.get(Metrics.THEORETICAL_SPEEDUP, Mark())
            cells += [
                _acc_text(row, cell, notes),
                md_marked(_speedup_text(cell), marked),
                _sparsity_text(cell),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _paper_lines() -> list[str]:
    titles = ["Method", "img/s", *(f"{percent(t)} Acc" for t in PAPER_ACCURACY)]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for m in PAPER_METHODS:
        accs = []
        for t, by_method in PAPER_ACCURACY.items():
            text = two_dp(by_method[m])
            if m == "str" and PAPER_STR_SPARSITY[t] > t * 100 + 0.5:
                text += f" (at {PAPER_STR_SPARSITY[t]:.2f}%)"
            accs.append(text)
        lines.append(f"| {label(m)} | {img_per_s_text(PAPER_IMG_PER_S[m])} | {' | '.join(accs)} |")
    return lines


def _legend(board: Table2Board) -> list[str]:
    h = board.header
    return [
        "**Acc**: test top-1 accuracy (%), mean ± sample std over seeds (`n=2 of 3`: fewer seeds "
        "than the column; failed and running runs are counted there). **Speedup**: theoretical, "
        "dense ÷ sparse multiply-adds per sample (mean). **Sparsity**: achieved (mean).",
        "**img/s**: training throughput measured in isolation, one method at a time, the mean over "
        f"interleaved timing rounds ({h.get('throughput_device', 'unknown')}); † in-trial, "
        "measured while trials shared the cores, never marked.",
        "**Marks** (the leaderboard's rules, docs/leaderboards.md), among the paper's eight "
        "methods only: every pair in a column is tested by a two-sided paired t-test over shared "
        "seeds (img/s: over the timing rounds), Holm-corrected over the column, "
        f"α = {board.alpha:g}. **Bold**: the best group, the best mean and every method not "
        "separated from it; a superscript elsewhere is the rank with ties (1 + the methods "
        "separated above it).",
        f"`{label(REFERENCE_METHOD)}` is the unpruned network (every column, never ranked); "
        f"`{label(FLOOR_METHOD)}` the floor, dense training then one global magnitude prune to "
        f"the target; `{label(RIGL)}` a sparse-to-sparse method outside the paper's table. The "
        "three are shown for reference and never ranked with the eight.",
        "**[n]**: a cell left out of the marks: a layer of the network ended empty (layer "
        "collapse) or the mean achieved sparsity overshoots the target by more than 0.5 pp.",
        "**Comparison with the paper**: per column, the paper's order of its eight methods against "
        "the board's (by mean), Kendall's τ-b between the paper's values and the board's means "
        "(scipy.stats.kendalltau), and every pair of methods tested by a paired t-test over "
        "shared seeds (scipy.stats.ttest_rel; img/s: over the timing rounds) with Holm's "
        "correction over the column's pairs (statsmodels multipletests). A pair is in the "
        "paper's order (or reversed) *beyond noise* only when its Holm-adjusted p < α; "
        "otherwise its order is not established, which is not agreement.",
    ]


def to_markdown(board: Table2Board) -> str:
    h = board.header
    out = [f"# Table 2 study (the paper's layout): {board.experiment}", ""]
    out += [
        f"- **Dataset:** {h['dataset']}",
        f"- **Model:** {h['model']}",
        f"- **Preset:** {h['preset']}",
        f"- **Budget:** {h['epochs']} epochs = {h['train_steps']} optimizer steps per run "
        f"(batch size {h['batch_size']}), the same for every method",
        f"- **Seeds:** {h['seeds']}",
        f"- **Hardware / device (trials):** {h['device']}",
        f"- **img/s measured on:** {h['throughput_device']}",
        f"- **benchsuite version:** {h['version']}",
        f"- **Newest run:** {h['newest_run']}",
        f"- **Hyperparameters tuned:** {h['tuned']}",
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
    out += _table_lines(board)
    marked = footnotes(board)
    if marked:
        out += ["", "## Cells left out of the marks", ""]
        out += [
            f"- [{k}] {label(row.method)} at {percent(cell.target)}: {'; '.join(cell.flags())}"
            for k, row, cell in marked
        ]
    out += ["", f"## The paper's numbers ({PAPER})", ""]
    out += _paper_lines()
    out += ["", "## Comparison with the paper (computed from the numbers above)", ""]
    out += [f"- {line}" for line in board.findings]
    out += ["", "## Legend", ""] + [f"- {line}" for line in _legend(board)]
    if board.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in board.notes]
    return "\n".join(out) + "\n"


def _row_dict(row: Row) -> dict[str, Any]:
    tp = row.img_per_s
    cells = {}
    for t, cell in sorted(row.cells.items()):
        cells[repr(t)] = {
            **cell_json(t, cell),
            "sparsity": stat_json(cell.stats.get(Metrics.SPARSITY)),
            "flags": [] if row.reference else cell.flags(),
        }
    return {
        "label": row_label(row),
        "method": row.method,
        "role": ROLE.get(row.method, "compared"),
        "img_per_s": None
        if tp is None
        else {
            "value": tp.value,
            "source": tp.source,
            "rounds": list(tp.rounds),
            "run_ids": list(tp.run_ids),
            "mark": mark_json(tp.mark),
        },
        "cells": cells,
    }


def _column_dict(column) -> dict[str, Any]:
    data = dataclasses.asdict(column)
    for pair in data["pairs"]:
        pair["t"] = finite(pair["t"])
    return data


def _board_dict(board: Table2Board) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "experiment": board.experiment,
        "header": board.header,
        "targets": board.targets,
        "alpha": board.alpha,
        "headline": board.headline,
        "findings": board.findings,
        "problems": board.problems,
        "notes": board.notes,
        "rows": [_row_dict(row) for row in board.rows],
        "paper": {
            "source": PAPER,
            "test_accuracy": {repr(t): v for t, v in PAPER_ACCURACY.items()},
            "img_per_s": PAPER_IMG_PER_S,
            "str_sparsity_percent": {repr(t): v for t, v in PAPER_STR_SPARSITY.items()},
        },
        "comparison_test": "paired t-test (scipy.stats.ttest_rel) per pair of the paper's methods, "
        "Holm-corrected per column (statsmodels multipletests); Kendall's tau-b "
        "(scipy.stats.kendalltau)",
        "columns": [_column_dict(c) for c in board.columns],
        "marks": [comparison_json(c) for c in board.board.comparisons],
    }


def to_json(board: Table2Board) -> str:
    return json.dumps(_board_dict(board), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render_rich(board: Table2Board) -> rich.table.Table:
    from rich.table import Table
    from rich.text import Text

    h = board.header
    table = Table(
        title=f"benchsuite study table2: {board.experiment}\n{h['dataset']}, {h['model']}, "
        f"{h['epochs']} epochs = {h['train_steps']} steps, seeds {h['seeds']}",
        caption=study_caption(board.problems, board.headline, board.findings),
        caption_justify="left",
    )
    for i, title in enumerate(_titles(board.targets)):
        table.add_column(title.replace(" ", "\n", 1) if i > 1 else title, justify="right")
    for row in board.rows:
        tp = row.img_per_s
        ips = "—" if tp is None else img_per_s_text(tp.value) + tp.mark.symbol
        cells = [Text(row_label(row), style="italic" if row.method in ROLE else ""), Text(ips)]
        for t in board.targets:
            cell = row.cell(t)
            if cell is None:
                cells += [Text("—")] * 3
                continue
            mark = cell.marks.get(Metrics.TEST_ACCURACY, Mark())
            style = "bold green" if mark.best else ("red" if not cell.ranked else "")
            cells += [
                Text(acc_value(cell) + mark.symbol + f" ({n_text(cell)})", style=style),
                Text(_speedup_text(cell)),
                Text(_sparsity_text(cell)),
            ]
        table.add_row(*cells, end_section=row.method == PAPER_METHODS[-1])
    return table


def publish(board: Table2Board, out_dir: Path, *, force: bool = False) -> list[Path]:
    """The Table 2 board's published files; an unfair board is refused unless forced."""
    if board.problems and not force:
        raise UnfairComparison("; ".join(board.problems))
    return write_published(
        board.experiment, out_dir, to_markdown(board), to_json(board), table2_plot(board)
    )

"""A ``Leaderboard`` as the published markdown and JSON, and as a rich table.

Layout (like Table 2 of the BIMP paper): one row per method variant, ``dense`` first as the
reference row (shown in every column group, never ranked). For each target sparsity a column
group: test accuracy ``mean ± std (n)``, its 95 % interval, theoretical speedup (mean),
measured speedup (mean, at the large batch / at batch 1), train cost (``train_cost``, × dense,
mean) and achieved sparsity (mean, %); plus one training img/s column.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from benchsuite.boards.format import configs_name, img_per_s_text, percent, two_dp
from benchsuite.boards.leaderboard import (
    FLOOR_METHOD,
    OVERSHOOT_PP,
    REFERENCE_METHOD,
    Cell,
    Leaderboard,
    Row,
)
from benchsuite.boards.stats import IMG_S_REL_THRESHOLD, Mark, Stat
from benchsuite.boards.tuning_section import markdown_lines as tuning_lines
from benchsuite.core.record import Metrics

if TYPE_CHECKING:  # rich stays lazy: the CLI imports this module often
    import rich.table

JSON_SCHEMA = "benchsuite.leaderboard/1"


def n_text(cell: Cell) -> str:
    parts = [f"n={cell.n}" + (f" of {cell.n_expected}" if cell.short else "")]
    if cell.failed:
        parts.append(f"{len(cell.failed)} failed")
    if cell.running:
        parts.append(f"{len(cell.running)} running")
    return ", ".join(parts)


def acc_value(cell: Cell) -> str:
    st = cell.stats.get(Metrics.TEST_ACCURACY)
    if st is None:
        return "—"
    return two_dp(st.mean) if st.std is None else f"{two_dp(st.mean)} ± {two_dp(st.std)}"


def _ci_text(cell: Cell | None) -> str:
    st = None if cell is None else cell.stats.get(Metrics.TEST_ACCURACY)
    if st is None or st.ci95 is None:
        return "—"
    return f"[{two_dp(st.ci95[0])}, {two_dp(st.ci95[1])}]"


def _speedup_value(cell: Cell) -> str:
    st = cell.stats.get(Metrics.THEORETICAL_SPEEDUP)
    return "—" if st is None else f"{two_dp(st.mean)}×"


UNAVAILABLE = "n/a‡"


def _measured_value(cell: Cell) -> str:
    st = cell.stats.get(Metrics.MEASURED_SPEEDUP)
    if st is None:
        return UNAVAILABLE if cell.measured_unavailable else "—"
    one = cell.stats.get(Metrics.MEASURED_SPEEDUP_B1)
    return f"{two_dp(st.mean)}×" + ("" if one is None else f" / {two_dp(one.mean)}×")


def _unavailable(board: Leaderboard) -> list[str]:
    """The distinct reasons for the cells without a measured speedup."""
    reasons = {
        c.measured_unavailable
        for r in board.rows
        for c in r.cells.values()
        if c.measured_unavailable
    }
    return sorted(reasons)


def _train_cost_text(cell: Cell | None) -> str:
    st = None if cell is None else cell.stats.get(Metrics.TRAIN_COST)
    return "—" if st is None else f"{st.mean:.3g}×"


def _sparsity_text(cell: Cell | None) -> str:
    st = None if cell is None else cell.stats.get(Metrics.SPARSITY)
    return "—" if st is None else f"{two_dp(st.mean * 100)}%"


def md_marked(value: str, mark: Mark) -> str:
    if mark.rank is not None:
        return f"**{value}**{mark.symbol}"
    return f"{value} ≈" if mark.within_noise else value


def _column_titles(targets: list[float]) -> list[str]:
    titles = ["Method", "img/s"]
    for t in targets:
        p = percent(t)
        titles += [
            f"{p} Acc",
            f"{p} CI",
            f"{p} Speedup",
            f"{p} Measured",
            f"{p} Train cost",
            f"{p} Sparsity",
        ]
    return titles


def footnotes(board: Leaderboard) -> list[tuple[int, Row, Cell]]:
    """The cells left out of the marks, numbered in reading order (row, then column)."""
    out: list[tuple[int, Row, Cell]] = []
    for row in board.rows:
        for t in board.targets:
            cell = None if row.reference else row.cells.get(t)
            if cell is not None and not cell.ranked:
                out.append((len(out) + 1, row, cell))
    return out


def _footnote_numbers(board: Leaderboard) -> dict[tuple[str, float], int]:
    return {(row.label, cell.target): k for k, row, cell in footnotes(board)}


def footnote_text(row: Row, cell: Cell) -> str:
    return f"{row.label} at {percent(cell.target)}: " + "; ".join(cell.flags())


def _uses_in_trial(board: Leaderboard) -> bool:
    return any(r.img_per_s is not None and r.img_per_s.source == "in-trial" for r in board.rows)


def _legend_lines(board: Leaderboard) -> list[str]:
    lines = [
        "**Acc**: test top-1 accuracy (%), mean ± sample std over seeds, with n = seeds that "
        "finished (`n=2 of 3`: fewer seeds than the column has; failed and still-running runs "
        "are counted next to it). **CI**: 95 % interval of the mean, mean ± t(0.975, n−1)·std/√n "
        "(Student t, clipped to [0, 100]; none with n < 2).",
        "**Speedup**: *theoretical* speedup = multiply-adds per sample of the dense model ÷ "
        "those of the finalized sparse model (mean over seeds). It is a count, not a time: "
        "see **Measured**.",
        "**Measured**: *measured* speedup = inference latency of the dense model ÷ that of the "
        "run's deployable form, on the device the run trained on "
        f"({board.header.get('latency', 'not measured')}), at the large batch / at batch 1 "
        "(mean over seeds; each seed the median over interleaved timing rounds, "
        "docs/performance.md). The deployable form of an unstructured run is the masked "
        "model itself: its zeros sit in dense tensors that dense kernels multiply, so it "
        "measures ≈ 1.0× whatever its theoretical speedup (the dense row's own figure shows "
        "the timing noise). A channel run's is the smaller model with its channels removed; an "
        "N:M run's, torch's semi-structured 2:4 kernels, which exist on CUDA GPUs of compute "
        "capability ≥ 8.0 only.",
        "**Train cost**: multiply-adds of the training steps at the density each step ran "
        "with (forward + backward = 3× the forward; RigL's dense-gradient steps added) ÷ "
        "those of the dense model for the same steps (mean over seeds; dense = 1×). Also "
        "theoretical: masked dense kernels compute every product, so the wall time does not "
        "shrink with it (docs/methods.md, the cost of training).",
        "**Sparsity**: achieved fraction of prunable weights that are exactly zero (mean, %); "
        "never marked.",
        "**img/s**: training throughput, images per second of the method's training steps "
        "(Σ images ÷ Σ step time after warm-up), measured in isolation, one method at a time "
        f"on an otherwise idle device ({board.header.get('throughput_device', 'unknown')}); "
        "the mean over interleaved timing rounds, compared between neighbours by a paired "
        "t-test over the rounds.",
    ]
    for reason in _unavailable(board):
        lines.append(f"**‡ n/a**: no measured speedup: {reason}.")
    if _uses_in_trial(board):
        lines.append(
            "**†**: no isolated measurement for this row; median in-trial "
            "`train_img_per_s`, measured while trials shared the cores (contended), "
            "not comparable with isolated figures and never marked."
        )
    lines.append(
        "**Marks**: within each column the non-reference rows are sorted by mean and each is "
        "compared with the next by a two-sided paired t-test over the seeds both have "
        f"(seeds are paired: same initial weights and batches), α = {board.alpha}. "
        "**Bold** with ¹ ² ³: that place, separated (p < α) from both neighbours. "
        "≈: within noise of (or tied with) a neighbour, so not ranked. Unmarked top-3 cells "
        "share fewer than 2 seeds with their neighbour (untested). img/s: the same test over "
        "the timing rounds (a record without rounds: separated when the faster is more than "
        f"{IMG_S_REL_THRESHOLD:.0%} faster)."
    )
    lines.append(
        "**[n]**: a footnoted cell is left out of the marks: neither compared with its "
        "neighbours nor ranked (accuracy and speedup); the other cells of its column are ranked "
        "among themselves. *Layer collapse*: in at least one seed a prunable layer ends with "
        "no non-zero weight, so no signal passes it and the network is broken (often at "
        "chance): the method's failure, not noise; the footnote names the layers. *Sparsity "
        f"overshoot*: the mean achieved sparsity exceeds the target by more than {OVERSHOOT_PP:g} "
        "pp (the harness's projection can only add zeros, never take them back): a sparser "
        "model is not the same comparison (lower accuracy, higher speedup than its column)."
    )
    if any(r.reference for r in board.rows):
        lines.append(
            f"`{REFERENCE_METHOD}` is the unpruned reference (sparsity 0), shown in every "
            "column group and never ranked."
        )
    if any(r.method == FLOOR_METHOD for r in board.rows):
        lines.append(
            f"`{FLOOR_METHOD}` is the floor: dense training for the whole budget, then "
            "the harness's final projection to the target, no retraining. It is ranked "
            "like any method; a method that does not beat it gained nothing over "
            "pruning the trained dense model once."
        )
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_table(board: Leaderboard) -> list[str]:
    notes = _footnote_numbers(board)
    titles = _column_titles(board.targets)
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in board.rows:
        tp = row.img_per_s
        if tp is None:
            ips = "—"
        elif tp.source == "in-trial":
            ips = img_per_s_text(tp.value) + "†"
        else:
            ips = md_marked(img_per_s_text(tp.value), tp.mark)
        cells = [_md_escape(row.label + (" (reference)" if row.reference else "")), ips]
        for t in board.targets:
            cell = row.cell(t)
            if cell is None:
                cells += ["—"] * 6
                continue
            acc = md_marked(acc_value(cell), cell.marks[Metrics.TEST_ACCURACY])
            n = n_text(cell)
            acc += f" _({n})_" if cell.short or cell.failed or cell.running else f" ({n})"
            if (row.label, t) in notes and not row.reference:
                acc += f" [{notes[(row.label, t)]}]"
            cells += [
                acc,
                _ci_text(cell),
                md_marked(_speedup_value(cell), cell.marks[Metrics.THEORETICAL_SPEEDUP]),
                md_marked(_measured_value(cell), cell.marks[Metrics.MEASURED_SPEEDUP]),
                _train_cost_text(cell),
                _sparsity_text(cell),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(board: Leaderboard, header: dict[str, str] | None = None) -> str:
    """The published document: header, table, legend, and any problems published with force."""
    h = {**board.header, **(header or {})}
    out = [f"# Leaderboard: {h.get('experiment') or board.experiment}", ""]
    out += [
        f"- **Dataset:** {h['dataset']}",
        f"- **Model:** {h['model']}",
        f"- **Preset:** {h['preset']}",
        f"- **Budget:** {h['epochs']} epochs = {h['train_steps']} optimizer steps per run "
        f"(batch size {h['batch_size']}), the same for every method",
        f"- **Seeds:** {h['seeds']}",
        f"- **Hardware / device (trials):** {h['device']}",
        f"- **img/s measured on:** {h['throughput_device']}",
        f"- **Sparsity patterns:** {h.get('patterns', 'unstructured')}; **latency measured at:** "
        f"{h.get('latency', 'not measured')}",
        f"- **benchsuite version:** {h['version']}",
        f"- **Newest run:** {h['newest_run']}",
        f"- **Hyperparameters tuned:** {h['tuned']}"
        + (" (see **Tuning** below)" if board.tuning else ""),
        "- **Reproduce:**",
        "",
        "```",
        *h["command"].splitlines(),
        "```",
        "",
    ]
    if board.problems:
        out += ["> **Warning: unfair comparison** (published with `--force`):"]
        out += [f"> - {p}" for p in board.problems]
        out += [""]
    out += _markdown_table(board)
    marked = footnotes(board)
    if marked:
        out += ["", "## Cells left out of the marks", ""]
        out += [f"- [{k}] {_md_escape(footnote_text(row, cell))}" for k, row, cell in marked]
    if board.tuning:
        out += ["", *tuning_lines(board.tuning, board.targets, configs_name(board.experiment))]
    out += ["", "## Legend", ""]
    out += [f"- {line}" for line in _legend_lines(board)]
    if board.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in board.notes]
    return "\n".join(out) + "\n"


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def stat_json(st: Stat | None, mark: Mark | None = None) -> dict[str, Any] | None:
    if st is None:
        return None
    out: dict[str, Any] = {
        "mean": st.mean,
        "std": st.std,
        "n": st.n,
        "ci95": list(st.ci95) if st.ci95 else None,
    }
    if mark is not None:
        out["mark"] = {"rank": mark.rank, "within_noise": mark.within_noise}
    return out


def _board_dict(board: Leaderboard, header: dict[str, str] | None = None) -> dict[str, Any]:
    notes = _footnote_numbers(board)
    rows = []
    for row in board.rows:
        cells = {}
        for target, cell in sorted(row.cells.items()):
            cells[repr(target)] = {
                "target_sparsity": target,
                "n": cell.n,
                "n_expected": cell.n_expected,
                "seeds": list(cell.seeds),
                "run_ids": {str(s): rid for s, rid in sorted(cell.run_ids.items())},
                "failed": cell.failed,
                "running": cell.running,
                "test_accuracy": stat_json(
                    cell.stats.get(Metrics.TEST_ACCURACY), cell.marks.get(Metrics.TEST_ACCURACY)
                ),
                "theoretical_speedup": stat_json(
                    cell.stats.get(Metrics.THEORETICAL_SPEEDUP),
                    cell.marks.get(Metrics.THEORETICAL_SPEEDUP),
                ),
                "measured_speedup": stat_json(
                    cell.stats.get(Metrics.MEASURED_SPEEDUP),
                    cell.marks.get(Metrics.MEASURED_SPEEDUP),
                ),
                "measured_speedup_b1": stat_json(cell.stats.get(Metrics.MEASURED_SPEEDUP_B1)),
                "measured_unavailable": cell.measured_unavailable,
                "train_cost": stat_json(cell.stats.get(Metrics.TRAIN_COST)),
                "sparsity": stat_json(cell.stats.get(Metrics.SPARSITY)),
                "collapsed": {str(s): list(v) for s, v in sorted(cell.collapsed.items())},
                "overshoot": cell.overshoot,
                "left_out": not row.reference and not cell.ranked,  # of the marks: footnoted
                "footnote": None if row.reference else notes.get((row.label, target)),
                "flags": [] if row.reference else cell.flags(),
            }
        tp = row.img_per_s
        rows.append(
            {
                "label": row.label,
                "method": row.method,
                "variant": row.variant,
                "reference": row.reference,
                "tuned": row.tuned,
                "img_per_s": None
                if tp is None
                else {
                    "value": tp.value,
                    "source": tp.source,
                    "device": tp.device,
                    "threads": tp.threads,
                    "run_ids": list(tp.run_ids),
                    "rounds": list(tp.rounds),
                    "mark": {"rank": tp.mark.rank, "within_noise": tp.mark.within_noise},
                },
                "cells": cells,
            }
        )
    return {
        "schema": JSON_SCHEMA,
        "experiment": board.experiment,
        "header": {**board.header, **(header or {})},
        "targets": board.targets,
        "alpha": board.alpha,
        "img_per_s_rel_threshold": IMG_S_REL_THRESHOLD,
        "overshoot_pp": OVERSHOOT_PP,
        "footnotes": [
            {
                "number": k,
                "label": row.label,
                "target_sparsity": cell.target,
                "text": footnote_text(row, cell),
            }
            for k, row, cell in footnotes(board)
        ],
        "test": "two-sided paired t-test (scipy.stats.ttest_rel) between neighbours by mean",
        "problems": board.problems,
        "notes": board.notes,
        "rows": rows,
        **({"tuning": board.tuning} if board.tuning else {}),
        "comparisons": [
            {
                "metric": c.metric,
                "target_sparsity": c.target,
                "upper": c.upper,
                "lower": c.lower,
                "shared_seeds": c.shared_seeds,
                "diff": c.diff,
                "t": _finite(c.t),
                "t_infinite": c.t is not None and math.isinf(c.t),
                "p": c.p,
                "status": c.status,
            }
            for c in board.comparisons
        ],
    }


def to_json(board: Leaderboard, header: dict[str, str] | None = None) -> str:
    """Unrounded numbers behind every table cell, with the MLflow run ids they came from."""
    return (
        json.dumps(_board_dict(board, header), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )


def render_rich(board: Leaderboard) -> rich.table.Table:
    """The terminal view: same cells as the markdown, marks as styles, problems in red."""
    from rich.table import Table
    from rich.text import Text

    captions: list[Text] = []
    for p in board.problems:
        captions.append(Text(f"⚠ unfair comparison: {p}", style="bold red"))
    if _uses_in_trial(board):
        captions.append(
            Text("† in-trial img/s (contended), no isolated measurement", style="yellow")
        )
    captions.append(
        Text(
            f"marks: ¹²³ beyond noise (paired t-test, α={board.alpha}), "
            "≈ within noise of a neighbour",
            style="dim",
        )
    )
    marked = footnotes(board)
    for k, row, cell in marked:
        captions.append(
            Text(
                f"[{k}] {footnote_text(row, cell)} (not ranked)",
                style="red" if cell.collapsed else "yellow",
            )
        )
    if marked:
        captions.append(
            Text(
                "[n] cells are left out of the marks: layer collapse, or achieved "
                f"sparsity above the target + {OVERSHOOT_PP:g} pp",
                style="dim",
            )
        )
    for reason in _unavailable(board):
        captions.append(Text(f"‡ n/a: no measured speedup: {reason}", style="dim"))
    for n in board.notes:
        captions.append(Text(n, style="dim"))
    notes = {(row.label, cell.target): k for k, row, cell in marked}
    h = board.header
    title = (
        f"benchsuite leaderboard: {board.experiment}\n{h['dataset']}, {h['model']}, "
        f"{h['epochs']} epochs = {h['train_steps']} steps, seeds {h['seeds']}"
    )
    table = Table(title=title, caption=Text("\n").join(captions), caption_justify="left")
    for i, title in enumerate(_column_titles(board.targets)):
        table.add_column(
            title.replace(" ", "\n", 1) if i > 1 else title, justify="left" if i == 0 else "right"
        )

    def marked(value: str, mark: Mark) -> Text:
        styles = {1: "bold green", 2: "bold cyan", 3: "bold magenta"}
        if mark.rank is not None:
            return Text(value + mark.symbol, style=styles[mark.rank])
        return Text(value + (" ≈" if mark.within_noise else ""))

    for row in board.rows:
        tp = row.img_per_s
        if tp is None:
            ips = Text("—")
        elif tp.source == "in-trial":
            ips = Text(img_per_s_text(tp.value) + "†", style="yellow")
        else:
            ips = marked(img_per_s_text(tp.value), tp.mark)
        cells: list[Text] = [Text(row.label, style="italic" if row.reference else ""), ips]
        for t in board.targets:
            cell = row.cell(t)
            if cell is None:
                cells += [Text("—")] * 6
                continue
            acc = marked(acc_value(cell), cell.marks[Metrics.TEST_ACCURACY])
            style = (
                "bold red" if cell.failed else ("yellow" if cell.short or cell.running else "dim")
            )
            acc.append(f" ({n_text(cell)})", style=style)
            if not row.reference and (row.label, t) in notes:
                acc.append(
                    f" [{notes[(row.label, t)]}]",
                    style="bold red" if cell.collapsed else "bold yellow",
                )
            cells += [
                acc,
                Text(_ci_text(cell)),
                marked(_speedup_value(cell), cell.marks[Metrics.THEORETICAL_SPEEDUP]),
                marked(_measured_value(cell), cell.marks[Metrics.MEASURED_SPEEDUP]),
                Text(_train_cost_text(cell)),
                Text(_sparsity_text(cell)),
            ]
        table.add_row(*cells, end_section=row.reference)
    return table

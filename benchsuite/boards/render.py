"""A ``Leaderboard`` as the published markdown and JSON, and as a rich table.

Layout (like Table 2 of the BIMP paper): one row per method variant, ``dense`` first as the
reference row (shown in every column group, never ranked). For each target sparsity a column
group: test accuracy ``mean ± std (n)``, its 95 % interval, theoretical speedup (mean),
measured speedup (mean, at the large batch / at batch 1), train cost (``train_cost``, × dense,
mean) and achieved sparsity (mean, %); plus one training img/s column.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

from benchsuite.boards.findings import (
    across_targets,
    best_group,
    compared,
    delta_findings,
    findings,
)
from benchsuite.boards.format import configs_name, img_per_s_text, percent, two_dp
from benchsuite.boards.leaderboard import (
    CHANCE_PP,
    FLOOR_METHOD,
    OVERSHOOT_PP,
    REFERENCE_METHOD,
    Cell,
    Leaderboard,
    Row,
)
from benchsuite.boards.stats import Comparison, Mark, Stat
from benchsuite.boards.tuning_section import markdown_lines as tuning_lines
from benchsuite.core.record import Metrics

if TYPE_CHECKING:  # rich stays lazy: the CLI imports this module often
    import rich.table
    import rich.text

JSON_SCHEMA = "benchsuite.leaderboard/1"


def n_text(cell: Cell) -> str:
    parts = [f"n={cell.n}" + (f" of {cell.n_expected}" if cell.short else "")]
    if cell.failed:
        parts.append(f"{len(cell.failed)} failed")
    if cell.running:
        parts.append(f"{len(cell.running)} running")
    return ", ".join(parts)


def acc_value(cell: Cell) -> str:
    """mean ± std, or seed by seed where a seed failed (a bimodal cell's mean says nothing)."""
    st = cell.stats.get(Metrics.TEST_ACCURACY)
    if st is None:
        return "—"
    if cell.seed_by_seed:
        values = cell.by_seed[Metrics.TEST_ACCURACY]
        return "seeds " + " / ".join(two_dp(values[s]) for s in sorted(values))
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
    """Bold in the best group; elsewhere the rank with ties as a superscript."""
    if mark.best:
        return f"**{value}**"
    return f"{value} {mark.symbol}" if mark.symbol else value


def shown_targets(board: Leaderboard) -> list[float | None]:
    """The column groups: one per target; a board of reference runs only (``run --methods
    dense``) has no target, and gets one group without a target for the reference's cell."""
    if board.targets or not any(row.cells for row in board.rows):
        return list(board.targets)
    return [None]


def _column_titles(targets: list[float | None]) -> list[str]:
    titles = ["Method", "img/s"]
    for t in targets:
        p = "" if t is None else percent(t) + " "
        titles += [
            f"{p}Acc",
            f"{p}CI",
            f"{p}Speedup",
            f"{p}Measured",
            f"{p}Train cost",
            f"{p}Sparsity",
        ]
    return titles


def footnotes(board: Leaderboard) -> list[tuple[int, Row, Cell]]:
    """The cells left out of the marks, numbered in reading order (row, then column)."""
    return footnoted_cells(board.rows, board.targets)


def footnoted_cells(rows: list[Row], targets: list[float]) -> list[tuple[int, Row, Cell]]:
    """Of any board's rows: the cells left out of the marks (collapse, overshoot), numbered."""
    out: list[tuple[int, Row, Cell]] = []
    for row in rows:
        for t in targets:
            cell = None if row.reference else row.cells.get(t)
            if cell is not None and not cell.ranked:
                out.append((len(out) + 1, row, cell))
    return out


def _footnote_numbers(board: Leaderboard) -> dict[tuple[str, float], int]:
    return {(row.label, cell.target): k for k, row, cell in footnotes(board)}


def footnote_text(row: Row, cell: Cell) -> str:
    return f"{row.label} at {percent(cell.target)}: " + "; ".join(cell.flags())


def _uses(board: Leaderboard, source: str) -> bool:
    """Whether a row's img/s comes from ``source`` (``Throughput.source``)."""
    return any(r.img_per_s is not None and r.img_per_s.source == source for r in board.rows)


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
        "the mean over interleaved timing rounds, compared by paired t-tests over the rounds "
        "(Holm-corrected, as the accuracy columns).",
    ]
    for reason in _unavailable(board):
        lines.append(f"**‡ n/a**: no measured speedup: {reason}.")
    if _uses(board, "in-trial"):
        lines.append(
            "**†**: no isolated measurement for this row; median in-trial "
            "`train_img_per_s`, measured while trials shared the cores (contended), "
            "not comparable with isolated figures and never marked."
        )
    if _uses(board, "contended"):
        lines.append(
            "**†** (timed after the grid): contended, its timing phase could not have the "
            "machine to itself (another benchsuite command trained or timed meanwhile, or other "
            "processes kept the CPUs busy; the record's `benchsuite.contended` tag says which); "
            "not comparable with isolated figures and never marked."
        )
    lines.append(
        "**Marks**: within each column every pair of compared rows is tested by a two-sided "
        "paired t-test over the seeds both have (seeds are paired: same initial weights and "
        "batches), and the column's p-values are corrected by Holm's procedure "
        f"(α = {board.alpha}) in two families: the best against each other row (the best "
        "group) and the remaining pairs (the ranks below it). **Bold**: the *best group*, the "
        "best mean and every row not separated from it by a corrected test (the column cannot "
        "tell them apart); its size "
        "is in the **Best group** line below the table. A superscript outside it is the rank "
        "with ties: 1 + the rows separated from it and above it (equal superscripts: no "
        "corrected test tells those rows apart). img/s: the same tests over the timing rounds. "
        "The **Across targets** section ranks the methods over all columns (Friedman test, "
        "Nemenyi critical difference, Demšar 2006)."
    )
    lines.append(
        "**[n]**: a footnoted cell is left out of the marks: not compared and not ranked "
        "(accuracy and speedup); the other cells of its column are ranked among themselves. "
        "*Did not learn*: in at least one seed the test accuracy ends within "
        f"{CHANCE_PP:g} pp of chance (100 ÷ classes); such a cell (and a collapsed one) is "
        "printed seed by seed, since the mean of a bimodal cell describes no seed. *Layer "
        "collapse*: in at least one seed a prunable layer ends with no non-zero weight, so no "
        "signal passes it: the method's failure, not noise; the footnote names the layers. "
        "*Sparsity "
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
    targets = shown_targets(board)
    titles = _column_titles(targets)
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in board.rows:
        tp = row.img_per_s
        if tp is None:
            ips = "—"
        elif tp.source != "isolated":
            ips = img_per_s_text(tp.value) + "†"
        else:
            ips = md_marked(img_per_s_text(tp.value), tp.mark)
        cells = [_md_escape(row.label + (" (reference)" if row.reference else "")), ips]
        for t in targets:
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
    out += ["", *_best_group_lines(board)]
    marked = footnotes(board)
    if marked:
        out += ["", "## Cells left out of the marks", ""]
        out += [f"- [{k}] {_md_escape(footnote_text(row, cell))}" for k, row, cell in marked]
    out += _findings_lines(board)
    if board.deltas:
        out += ["", *_delta_lines(board)]
    if board.tuning:
        out += ["", *tuning_lines(board.tuning, board.targets, configs_name(board.experiment))]
    out += ["", "## Legend", ""]
    out += [f"- {line}" for line in _legend_lines(board)]
    if board.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in board.notes]
    return "\n".join(out) + "\n"


def _best_group_lines(board: Leaderboard) -> list[str]:
    """Each column's best group by name, with its size (what the bold marks)."""
    parts = []
    for t in board.targets:
        group = best_group(board, t)
        n = len(compared(board, t))
        if group:
            parts.append(
                f"{percent(t)}: {_md_escape(', '.join(r.label for r in group))} "
                f"({len(group)} of {n})"
            )
        else:
            parts.append(f"{percent(t)}: none (nothing could be compared)")
    return ["**Best group** (accuracy; bold): " + "; ".join(parts) + "."]


def _findings_lines(board: Leaderboard) -> list[str]:
    result = across_targets(board, board.alpha)
    out = [
        "",
        "## Findings",
        "",
        "Generated from the corrected tests above; nothing else is claimed.",
        "",
    ]
    out += [f"- {_md_escape(line)}" for line in findings(board, board.alpha)]
    if result is not None:
        out += ["", "## Across targets", ""]
        out += [
            f"Average rank of each method over {result.blocks} blocks (every target × seed; "
            "1 = the highest test accuracy of a block). Friedman test "
            + (
                "not applicable (no spread)"
                if result.p is None
                else f"χ² = {result.chi2:.2f}, p = {result.p:.3g}"
            )
            + f"; Nemenyi critical difference (Demšar 2006) CD = {result.cd:.2f} at "
            f"α = {board.alpha}: methods whose average ranks differ by less than CD are not "
            "separated (the bars of the figure's CD diagram).",
            "",
            "| Method | Average rank | Not separated from (within CD) |",
            "|---|---|---|",
        ]
        for m in result.methods:
            near = [
                x
                for x in result.methods
                if x != m
                and abs(result.average_rank[x] - result.average_rank[m]) < (result.cd or 0)
            ]
            out.append(
                f"| {_md_escape(m)} | {result.average_rank[m]:.2f} | "
                f"{_md_escape(', '.join(near)) or '—'} |"
            )
        if result.left_out:
            out += [
                "",
                "Not ranked across targets (a block without a value): "
                + _md_escape(", ".join(result.left_out))
                + ".",
            ]
    return out


def _delta_lines(board: Leaderboard) -> list[str]:
    out = [
        "## Tuned − defaults",
        "",
        "Test accuracy of the tuned row minus the defaults row, paired by seed (same initial "
        "weights and batches): mean difference in points and its 95 % interval (Student t, "
        "per cell); **bold**: separated from 0 by a paired t-test after Holm's correction over "
        "the table's cells.",
        "",
        "| Method | " + " | ".join(percent(t) for t in board.targets) + " |",
        "|---|" + "---|" * len(board.targets),
    ]
    by_method: dict[str, dict[float, Any]] = {}
    for d in board.deltas or []:
        by_method.setdefault(d.method, {})[d.target] = d
    for method in sorted(by_method):
        cells = []
        for t in board.targets:
            d = by_method[method].get(t)
            if d is None:
                cells.append("—")
            elif d.same:
                cells.append(f"0 (defaults kept, n={d.seeds})")
            elif d.ci95 is None:
                cells.append(f"{d.mean:+.2f} (n={d.seeds})")
            else:
                text = f"{d.mean:+.2f} [{d.ci95[0]:+.2f}, {d.ci95[1]:+.2f}]"
                cells.append((f"**{text}**" if d.separated else text) + f" (n={d.seeds})")
        out.append(f"| {method} | " + " | ".join(cells) + " |")
    return out + ["", *[f"- {line}" for line in delta_findings(board.deltas or [])]]


def finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def mark_json(mark: Mark) -> dict[str, Any]:
    return {"best_group": mark.best, "rank": mark.rank, "best_group_size": mark.group_size}


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
        out["mark"] = mark_json(mark)
    return out


def comparison_json(c: Comparison) -> dict[str, Any]:
    """One tested pair, as every published board writes it: the evidence behind its marks."""
    return {
        "metric": c.metric,
        "target_sparsity": c.target,
        "upper": c.upper,
        "lower": c.lower,
        "shared_seeds": c.shared_seeds,
        "diff": c.diff,
        "t": finite(c.t),
        "t_infinite": c.t is not None and math.isinf(c.t),
        "p": c.p,
        "p_holm": c.p_holm,
        "status": c.status,
        "family": c.family,
    }


def cell_json(target: float, cell: Cell) -> dict[str, Any]:
    """What every published board says of a cell: its seeds and runs, accuracy and speedup."""
    return {
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
    }


def _board_dict(board: Leaderboard, header: dict[str, str] | None = None) -> dict[str, Any]:
    notes = _footnote_numbers(board)
    rows = []
    for row in board.rows:
        cells = {}
        for target, cell in sorted(row.cells.items()):
            cells[repr(target)] = {
                **cell_json(target, cell),
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
                "at_chance": list(cell.at_chance),
                "by_seed": {
                    str(seed): v
                    for seed, v in sorted(cell.by_seed.get(Metrics.TEST_ACCURACY, {}).items())
                },
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
                    "mark": mark_json(tp.mark),
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
        "chance_pp": CHANCE_PP,
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
        "test": (
            "two-sided paired t-test (scipy.stats.ttest_rel) between every pair of a column's "
            "rows, Holm-corrected (statsmodels multipletests) in two families per column: the "
            "best against each other row, and the remaining pairs (each comparison's family)"
        ),
        "problems": board.problems,
        "notes": board.notes,
        "rows": rows,
        **({"tuning": board.tuning} if board.tuning else {}),
        "best_groups": {repr(t): [r.label for r in best_group(board, t)] for t in board.targets},
        "findings": findings(board, board.alpha),
        "across_targets": _across_json(board),
        **(
            {"tuned_minus_default": [dataclasses.asdict(d) for d in board.deltas]}
            if board.deltas
            else {}
        ),
        "comparisons": [comparison_json(c) for c in board.comparisons],
    }


def _across_json(board: Leaderboard) -> dict[str, Any] | None:
    result = across_targets(board, board.alpha)
    if result is None:
        return None
    return {
        "blocks": result.blocks,
        "average_rank": {m: result.average_rank[m] for m in result.methods},
        "friedman_chi2": result.chi2,
        "friedman_p": result.p,
        "nemenyi_cd": result.cd,
        "cliques": result.cliques,
        "left_out": result.left_out,
    }


def to_json(board: Leaderboard, header: dict[str, str] | None = None) -> str:
    """Unrounded numbers behind every table cell, with the MLflow run ids they came from."""
    return (
        json.dumps(_board_dict(board, header), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )


def study_caption(problems: list[str], headline: str, findings: list[str]) -> rich.text.Text:
    """A study's terminal caption: what makes it unfair, its headline, then its findings."""
    from rich.text import Text

    lines = [Text(f"⚠ unfair comparison: {p}", style="bold red") for p in problems]
    lines.append(Text(headline, style="bold"))
    lines += [Text(line, style="dim") for line in findings]
    return Text("\n").join(lines)


def render_rich(board: Leaderboard) -> rich.table.Table:
    """The terminal view: same cells as the markdown, marks as styles, problems in red."""
    from rich.table import Table
    from rich.text import Text

    captions: list[Text] = []
    for p in board.problems:
        captions.append(Text(f"⚠ unfair comparison: {p}", style="bold red"))
    if _uses(board, "in-trial"):
        captions.append(
            Text("† in-trial img/s (contended), no isolated measurement", style="yellow")
        )
    if _uses(board, "contended"):
        captions.append(
            Text(
                "† timed while the machine was busy (contended), no isolated measurement",
                style="yellow",
            )
        )
    captions.append(
        Text(
            f"bold: best group (not separated from the best; paired t-tests, Holm, "
            f"α={board.alpha}); superscript: rank with ties",
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
                "[n] cells are left out of the marks: layer collapse, a seed at chance, "
                f"or achieved sparsity above the target + {OVERSHOOT_PP:g} pp",
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
    targets = shown_targets(board)
    for i, title in enumerate(_column_titles(targets)):
        table.add_column(
            title.replace(" ", "\n", 1) if i > 1 else title, justify="left" if i == 0 else "right"
        )

    def marked(value: str, mark: Mark) -> Text:
        if mark.best:
            return Text(value, style="bold green")
        return Text(value + (f" {mark.symbol}" if mark.symbol else ""))

    for row in board.rows:
        tp = row.img_per_s
        if tp is None:
            ips = Text("—")
        elif tp.source != "isolated":
            ips = Text(img_per_s_text(tp.value) + "†", style="yellow")
        else:
            ips = marked(img_per_s_text(tp.value), tp.mark)
        cells: list[Text] = [Text(row.label, style="italic" if row.reference else ""), ips]
        for t in targets:
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

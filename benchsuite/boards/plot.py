"""The published figures: the leaderboard's (accuracy over achieved sparsity, and the drop
from dense)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from benchsuite.boards.findings import AcrossTargets, across_targets
from benchsuite.boards.format import percent
from benchsuite.boards.leaderboard import (
    FLOOR_METHOD,
    OVERSHOOT_PP,
    REFERENCE_METHOD,
    Cell,
    Leaderboard,
    Row,
)
from benchsuite.boards.stats import Stat
from benchsuite.core.record import Metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# chosen here: drops below a tenth of a point are below what 3 seeds resolve (stds 0.1-0.5 pp)
DROP_FLOOR_PP = 0.1
_SPARSITY_TICKS = (0, 50, 80, 90, 95, 98, 99, 99.5, 99.8, 99.9, 99.95, 99.98, 99.99)
_MARKERS = "os^DvPX*<>ph"
_SPEEDUP_TICKS = (0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100)


def _density_scale(x: Any) -> Any:
    """Sparsity (%) -> −log10(1 − sparsity): equal steps for 90 → 99 → 99.9 %."""
    return -np.log10(np.clip(100.0 - np.asarray(x, dtype=float), 1e-4, None) / 100.0)


def _density_inverse(y: Any) -> Any:
    return 100.0 - 100.0 * np.power(10.0, -np.asarray(y, dtype=float))


def _plot_points(row: Row, targets: list[float]) -> list[tuple[float, float, float, Cell]]:
    """(achieved sparsity %, mean accuracy, std, cell) of a row's cells, sparsest last."""
    pts = []
    for t in targets:
        cell = row.cells.get(t)
        if cell is None or not {Metrics.TEST_ACCURACY, Metrics.SPARSITY} <= cell.stats.keys():
            continue
        acc = cell.stats[Metrics.TEST_ACCURACY]
        pts.append((cell.stats[Metrics.SPARSITY].mean * 100, acc.mean, acc.std or 0.0, cell))
    return sorted(pts, key=lambda p: p[0])


@dataclass
class _Drawn:
    """What the method lines leave behind for the marks, the limits and the notes."""

    xs: list[float] = field(default_factory=list)
    drops: list[float] = field(default_factory=list)  # whisker ends, for the zoom's limits
    left_out: list[str] = field(default_factory=list)
    collapsed: list[tuple[float, float]] = field(default_factory=list)
    overshoot: list[tuple[Any, float, float]] = field(default_factory=list)  # (axes, x, y)


def plot(board: Leaderboard) -> Figure:
    """Two panels over achieved sparsity on a log scale of 1 − sparsity (90, 95, 98, 99 %
    evenly spread): test accuracy over the full range, and the accuracy drop from the dense
    reference on a log scale, where methods a few tenths of a point apart stay apart. Cells
    with a collapsed layer are drawn (crossed) only in the full-range panel, so a network at
    chance never squashes the others; sparsity overshoots are ringed in both."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ranking = across_targets(board, board.alpha)
    height = 5.0 if ranking is None else 5.0 + 0.9 + 0.16 * len(ranking.methods)
    fig = Figure(figsize=(13.0, height), dpi=120)
    FigureCanvasAgg(fig)  # no pyplot: no global state, no GUI backend
    rows = [r for r in board.rows if not r.reference]
    if ranking is None:
        full, zoom = fig.subplots(1, 2)
    else:
        grid = fig.add_gridspec(2, 2, height_ratios=[5.0, height - 5.0])
        full, zoom = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        colours = {row.label: _colour(i, row) for i, row in enumerate(rows)}
        _cd_diagram(fig.add_subplot(grid[1, :]), ranking, board.alpha, colours)
    ref = next((r for r in board.rows if r.reference), None)
    ref_cell = None if ref is None else ref.cell(0.0)
    ref_acc = None if ref_cell is None else ref_cell.stats.get(Metrics.TEST_ACCURACY)
    drawn = _Drawn()
    for i, row in enumerate(rows):
        _draw_row(full, zoom, i, row, board.targets, ref_acc, drawn)
    if ref_acc is not None and ref is not None:
        full.axhline(
            ref_acc.mean, color="0.3", linestyle=":", linewidth=1, label=f"{ref.label} (reference)"
        )
        if ref_acc.std:
            full.axhspan(
                ref_acc.mean - ref_acc.std,
                ref_acc.mean + ref_acc.std,
                color="0.5",
                alpha=0.15,
                linewidth=0,
            )
            if ref_acc.std > DROP_FLOOR_PP:  # a drop inside it is within dense's seed spread
                zoom.axhspan(DROP_FLOOR_PP / 2, ref_acc.std, color="0.5", alpha=0.15, linewidth=0)
    extra = _draw_flags(full, drawn)
    _set_axes(full, zoom, drawn, ref_acc)
    _notes(zoom, ref_acc, drawn.left_out)
    fig.suptitle(f"{board.experiment}: test accuracy vs achieved sparsity")
    handles, labels = full.get_legend_handles_labels()
    handles += extra
    labels += [h.get_label() for h in extra]
    if handles:
        zoom.legend(
            handles,
            labels,
            fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
        )
    fig.tight_layout()
    return fig


def _colour(i: int, row: Row) -> str:
    """Row ``i``'s colour, the same in the accuracy panels and the rank diagram."""
    return "black" if row.method == FLOOR_METHOD else f"C{i % 10}"


def _draw_row(
    full: Any,
    zoom: Any,
    i: int,
    row: Row,
    targets: list[float],
    ref_acc: Stat | None,
    drawn: _Drawn,
) -> None:
    """One method's line in both panels (collapsed cells only in the full one)."""
    pts = _plot_points(row, targets)
    if not pts:
        return
    floor_row = row.method == FLOOR_METHOD
    style = {
        "marker": _MARKERS[i % len(_MARKERS)],
        "markersize": 4,
        "capsize": 3,
        "linewidth": 1.2,
        # beyond ten rows the colour cycle repeats: vary the line style too
        "linestyle": "--" if floor_row or i >= 10 else "-",
        "color": _colour(i, row),
        "label": row.label + (" (floor)" if floor_row else ""),
    }
    x, y, e, cells = zip(*pts, strict=True)
    drawn.xs += x
    full.errorbar(x, y, yerr=e, **style)
    for px, py, _, cell in pts:
        if cell.collapsed:
            drawn.collapsed.append((px, py))
        if cell.overshoot:
            drawn.overshoot.append((full, px, py))
    if ref_acc is None:
        return
    kept = [p for p in pts if not p[3].collapsed]
    drawn.left_out += [f"{row.label} at {percent(p[3].target)}" for p in pts if p[3].collapsed]
    if not kept:
        return
    zx, zy, zlo, zhi = [], [], [], []
    for px, acc, std, cell in kept:
        drop = max(ref_acc.mean - acc, DROP_FLOOR_PP)  # at or above dense: the floor
        zx.append(px)
        zy.append(drop)
        zlo.append(min(std, drop - DROP_FLOOR_PP / 2))
        zhi.append(std)
        drawn.drops += [drop + std, drop - zlo[-1]]
        if cell.overshoot:
            drawn.overshoot.append((zoom, px, drop))
    # "_label": found by name, kept out of the legend (the full panel's lines carry it)
    zoom.errorbar(zx, zy, yerr=[zlo, zhi], **{**style, "label": f"_{row.label}"})


def _draw_flags(full: Any, drawn: _Drawn) -> list[Any]:
    """Cross collapsed cells, ring overshoots; their legend entries."""
    from matplotlib.lines import Line2D

    extra: list[Any] = []
    if drawn.collapsed:
        cx, cy = zip(*drawn.collapsed, strict=True)
        full.plot(
            cx,
            cy,
            linestyle="none",
            marker="X",
            markersize=11,
            markeredgecolor="red",
            markerfacecolor="none",
            markeredgewidth=1.5,
        )
        extra.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="X",
                markersize=9,
                markeredgecolor="red",
                markerfacecolor="none",
                label="layer collapse (not ranked)",
            )
        )
    if drawn.overshoot:
        for ax, px, py in drawn.overshoot:
            ax.plot(
                [px],
                [py],
                linestyle="none",
                marker="o",
                markersize=11,
                markeredgecolor="orange",
                markerfacecolor="none",
                markeredgewidth=1.5,
            )
        extra.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markersize=9,
                markeredgecolor="orange",
                markerfacecolor="none",
                label=f"sparsity > target + {OVERSHOOT_PP:g} pp (not ranked)",
            )
        )
    return extra


def _set_axes(full: Any, zoom: Any, drawn: _Drawn, ref_acc: Stat | None) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    for ax in (full, zoom):
        ax.set_xscale("function", functions=(_density_scale, _density_inverse))
        if drawn.xs:
            lo, hi = _density_scale(min(drawn.xs)), _density_scale(max(drawn.xs))
            pad = max(0.08 * (hi - lo), 0.05)
            ax.set_xlim(*_density_inverse([lo - pad, hi + pad]))
        ax.xaxis.set_major_locator(FixedLocator(list(_SPARSITY_TICKS)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("achieved sparsity (%), log scale of 1 − sparsity")
        ax.grid(True, alpha=0.3)
    full.set_ylabel("test accuracy (%)")
    full.set_title("full range (error bars: std over seeds)", fontsize="medium")
    zoom.set_yscale("log")
    zoom.set_ylabel(f"accuracy drop from {REFERENCE_METHOD} (pp, log scale)")
    zoom.set_title("where the methods differ: drop from dense", fontsize="medium")
    if drawn.drops:
        low = min(drawn.drops + ([ref_acc.std] if ref_acc is not None and ref_acc.std else []))
        zoom.set_ylim(max(DROP_FLOOR_PP / 2, 0.7 * low), max(drawn.drops) * 1.5)
        zoom.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        for axis_fmt in (zoom.yaxis.set_major_formatter, zoom.yaxis.set_minor_formatter):
            axis_fmt(FuncFormatter(lambda v, _: f"{v:g}"))
        zoom.grid(True, which="minor", alpha=0.15)


def _notes(zoom: Any, ref_acc: Stat | None, left_out: list[str]) -> None:
    """The zoom panel's notes: the drop floor, the grey band, the cells left out."""
    notes = [f"drops ≤ {DROP_FLOOR_PP:g} pp (at or above dense): drawn at {DROP_FLOOR_PP:g}"]
    if ref_acc is None:
        notes = [f"no {REFERENCE_METHOD} reference runs: no drop to show"]
    if ref_acc is not None and ref_acc.std and ref_acc.std > DROP_FLOOR_PP:
        notes.append("grey band: within dense's seed std")
    if left_out:
        notes.append("left out (layer collapse): " + ", ".join(left_out))
    zoom.text(
        1.01,
        0.0,
        "\n".join(textwrap.fill(n, 48) for n in notes),
        transform=zoom.transAxes,
        fontsize="x-small",
        va="bottom",
        ha="left",
        color="0.3",
    )


def _cd_diagram(ax: Any, ranking: AcrossTargets, alpha: float, colours: dict[str, str]) -> None:
    """Demšar's critical-difference diagram of the methods' average ranks across the board's
    blocks, drawn by scikit-posthocs from Nemenyi's pairwise tests (its bars join methods the
    test does not separate)."""
    import pandas as pd
    import scikit_posthocs as sp

    columns = list(ranking.average_rank)
    frame = pd.DataFrame(ranking.matrix, columns=columns)
    significance = sp.posthoc_nemenyi_friedman(frame)
    ranks = pd.Series(ranking.average_rank)
    sp.critical_difference_diagram(ranks, significance, ax=ax, alpha=alpha, color_palette=colours)
    p_text = "" if ranking.p is None else f", Friedman p = {ranking.p:.2g}"
    ax.set_title(
        f"average rank across {ranking.blocks} blocks (target × seed; 1 = best){p_text}; "
        f"bars: not separated (Nemenyi, α = {alpha}, CD = {ranking.cd:.2f})",
        fontsize="small",
    )


def structured(board: Leaderboard) -> bool:
    """A board with runs of a structured sparsity pattern (N:M, channel)."""
    return any(p != "unstructured" for p in board.header.get("patterns", "").split(", ") if p)


def _speed_points(row: Row, targets: list[float], metric: str) -> list[tuple[float, float, float]]:
    """(mean speedup, mean accuracy, accuracy std) of a row's cells with both, by speedup."""
    pts = []
    for t in targets:
        cell = row.cell(t) if row.reference else row.cells.get(t)
        if cell is None or not {Metrics.TEST_ACCURACY, metric} <= cell.stats.keys():
            continue
        acc = cell.stats[Metrics.TEST_ACCURACY]
        pts.append((cell.stats[metric].mean, acc.mean, acc.std or 0.0))
        if row.reference:
            break
    return sorted(pts)


_PATTERN_LINES = ("-", "--", "-.", (0, (5, 2, 1, 2, 1, 2)))


def plot_speed(board: Leaderboard) -> Figure:
    """Test accuracy against the *measured* speedup at the large batch (left) and against the
    theoretical speedup (right), both on a log scale: the distance between a method's two
    points is what its zeros fail to buy. Rows without a measured figure (N:M without a
    sparse kernel) are only in the right panel, and listed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig = Figure(figsize=(13.0, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    measured, theory = fig.subplots(1, 2, sharey=True)
    missing = []
    # A method keeps one colour across its patterns and a pattern one line style and marker, so
    # "gmp" and "gmp (2:4)" read as one method at two patterns (14 rows would repeat a cycle).
    methods = list(dict.fromkeys(r.method for r in board.rows if not r.reference))
    patterns = list(dict.fromkeys(r.pattern for r in board.rows if not r.reference))
    for row in board.rows:
        k = patterns.index(row.pattern) if row.pattern in patterns else 0
        colour = f"C{methods.index(row.method) % 10}" if row.method in methods else "0.3"
        style = {
            "marker": _MARKERS[k % len(_MARKERS)],
            "markersize": 5,
            "capsize": 3,
            "linewidth": 1.2,
            "linestyle": ":" if row.reference else _PATTERN_LINES[k % len(_PATTERN_LINES)],
            "color": "black" if row.method == FLOOR_METHOD else colour,
        }
        for ax, metric in (
            (measured, Metrics.MEASURED_SPEEDUP),
            (theory, Metrics.THEORETICAL_SPEEDUP),
        ):
            pts = _speed_points(row, board.targets, metric)
            if not pts:
                if ax is measured and not row.reference:
                    missing.append(row.label)
                continue
            x, y, e = zip(*pts, strict=True)
            label = row.label + (" (reference)" if row.reference else "")
            ax.errorbar(x, y, yerr=e, label=label if ax is theory else f"_{label}", **style)
    for ax, title in (
        (measured, "measured speedup (large batch, mean over seeds)"),
        (theory, "theoretical speedup (multiply-adds)"),
    ):
        ax.set_xscale("log")
        ax.axvline(1.0, color="0.5", linewidth=0.8)
        ax.xaxis.set_major_locator(FixedLocator(list(_SPEEDUP_TICKS)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.set_xlabel(title)
        ax.grid(True, alpha=0.3)
    measured.set_ylabel("test accuracy (%), error bars: std over seeds")
    measured.set_title(f"measured on {board.header.get('device', 'unknown')}", fontsize="medium")
    theory.set_title("what the zeros promise", fontsize="medium")
    if missing:
        measured.text(
            0.01,
            0.01,
            textwrap.fill(
                "no measured speedup (no kernel on this device): " + ", ".join(missing), 70
            ),
            transform=measured.transAxes,
            fontsize="x-small",
            va="bottom",
            color="0.3",
        )
    fig.suptitle(f"{board.experiment}: test accuracy vs speedup, measured and theoretical")
    handles, labels = theory.get_legend_handles_labels()
    if handles:
        theory.legend(
            handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0)
        )
    fig.tight_layout()
    return fig

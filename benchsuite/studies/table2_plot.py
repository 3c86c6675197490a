"""The Table 2 study's figure: the board's value against the paper's, one panel per column."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchsuite.core.record import Metrics
from benchsuite.studies.table2_board import Table2Board
from benchsuite.studies.table2_findings import IMG_S, label

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def table2_plot(board: Table2Board) -> Figure:
    """Board (mean, error bar: std over seeds) against the paper, one point per method; a
    column whose points rise to the right orders the methods as the paper does."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = [c for c in board.columns if c.paper_order] or board.columns[:1]
    n = max(1, len(cols))
    fig = Figure(figsize=(4.2 * n, 3.9), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    rows = {r.method: r for r in board.rows}
    for ax, col in zip(axes, cols):
        for m in col.paper_order:
            x, y = col.paper_values[m], col.board_means[m]
            err = 0.0
            if col.target is not None:
                cell = rows[m].cells.get(col.target)
                st = None if cell is None else cell.stats.get(Metrics.TEST_ACCURACY)
                err = (st.std or 0.0) if st is not None else 0.0
            ax.errorbar([x], [y], yerr=[err], marker="o", markersize=4, capsize=3, color="C0")
            ax.annotate(label(m), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        tau = "—" if col.tau is None else f"{col.tau:.2f}"
        p = "" if col.tau_p is None or not math.isfinite(col.tau_p) else f", p = {col.tau_p:.2g}"
        what = "training img/s" if col.column == IMG_S else f"test accuracy (%) at {col.column}"
        ax.set_title(f"{col.column}: Kendall τ = {tau}{p}", fontsize=9)
        ax.set_xlabel(f"paper (ResNet-50, ImageNet): {what}", fontsize=8)
        ax.set_ylabel(f"this board: {what}", fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{board.experiment}: the board against the paper's Table 2")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig

"""The Table 1 study's figure: accuracy against retraining budget, one panel per sparsity."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchsuite.boards.format import percent
from benchsuite.core.record import Metrics
from benchsuite.studies.board import StudyBoard
from benchsuite.studies.table1_findings import label

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def study_plot(board: StudyBoard) -> Figure:
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
                st = None if cell is None else cell.stats.get(Metrics.TEST_ACCURACY)
                if st is not None:
                    pts.append((b * 100, st.mean, st.std or 0.0))
            if pts:
                x, y, e = zip(*pts, strict=True)
                ax.errorbar(
                    x,
                    y,
                    yerr=e,
                    marker=markers[i % len(markers)],
                    markersize=4,
                    capsize=3,
                    linewidth=1.2,
                    label=label(s),
                    linestyle="--" if s == "lrw" else "-",
                )  # LRW often lies on FT
        ax.set_title(f"sparsity {percent(t)}")
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

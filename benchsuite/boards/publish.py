"""An experiment's runs -> its leaderboard -> the terminal, or published files.

Reading the store (``load_runs``, through ``tracking.Reader``) is separate from the pure
``aggregate`` step (``benchsuite.aggregation``), so all the statistics are testable on
hand-made ``RunRecord`` objects. The rules: ``benchsuite.aggregation`` (which runs count,
cells left out, fairness) and ``benchsuite.marks`` (statistics and marks); the layout:
``benchsuite.report``; the figure: ``benchsuite.plot``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from benchsuite.boards.aggregation import aggregate
from benchsuite.boards.findings import delta_findings, findings
from benchsuite.boards.format import configs_name, percent, published_stem
from benchsuite.boards.leaderboard import FLOOR_METHOD, Leaderboard, UnfairComparison
from benchsuite.boards.plot import plot, plot_speed, structured
from benchsuite.boards.render import (
    JSON_SCHEMA,
    acc_value,
    md_marked,
    to_json,
    to_markdown,
)
from benchsuite.core.errors import BadInput
from benchsuite.core.record import Metrics, RunRecord
from benchsuite.store.tracking import Reader

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_INDEX_START = "<!-- benchsuite:index:start -->"
_INDEX_END = "<!-- benchsuite:index:end -->"
# boards listed in the index: the leaderboard, the Table 1 and Table 2 studies (studies/)
_INDEX_SCHEMAS = (JSON_SCHEMA, "benchsuite.study/1", "benchsuite.table2/1")


def experiments(tracking_uri: str) -> list[str]:
    """Names of the active experiments that hold at least one run, sorted."""
    return Reader(tracking_uri).experiments()


def newest_experiment(tracking_uri: str) -> str | None:
    """The experiment whose newest run started last: what the user most likely just ran."""
    return Reader(tracking_uri).newest_experiment()


def load_runs(tracking_uri: str, experiment: str) -> list[RunRecord]:
    """All runs of one experiment (trial runs and throughput records), every attempt."""
    return Reader(tracking_uri).runs(experiment)


def leaderboard_for(tracking_uri: str, experiment: str | None = None) -> Leaderboard:
    """Load and aggregate one experiment (the most recent one if none is named)."""
    name = experiment or newest_experiment(tracking_uri)
    if name is None:
        raise KeyError(f"no experiment with runs at {tracking_uri}")
    return aggregate(load_runs(tracking_uri, name), experiment=name)


def _index_lines(out_dir: Path) -> list[str]:
    lines = []
    for path in sorted(out_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("schema") not in _INDEX_SCHEMAS:
            continue
        h = data.get("header", {})
        lines.append(
            f"- [{data.get('experiment', path.stem)}]({path.stem}.md): {h.get('dataset')}, "
            f"{h.get('model')}, {h.get('epochs')} epochs ({h.get('train_steps')} steps), "
            f"seeds {h.get('seeds')}, newest run {h.get('newest_run')}"
        )
    return lines


def _write_index(out_dir: Path) -> Path:
    """Rebuild the index from the published JSON files; keep any text outside the markers."""
    path = out_dir / "README.md"
    block = "\n".join([_INDEX_START, *_index_lines(out_dir), _INDEX_END])
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if _INDEX_START in old and _INDEX_END in old:
        head, rest = old.split(_INDEX_START, 1)
        tail = rest.split(_INDEX_END, 1)[1]
        text = head + block + tail
    else:
        text = (
            "# Published leaderboards\n\n"
            "Written by `benchsuite publish`; one line per experiment.\n\n" + block + "\n"
        )
    if text != old:
        path.write_text(text, encoding="utf-8")
    return path


def write_published(
    experiment: str, out_dir: Path, markdown: str, json_text: str, figure: Figure
) -> list[Path]:
    """Write <experiment>.md/.json/.png and the README index (the leaderboard's and the study
    board's). Byte-identical on republishing: nothing depends on the clock, ordering is fixed,
    and the PNG carries no software/date metadata.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = published_stem(experiment)
    md, js, png = (out_dir / f"{stem}{ext}" for ext in (".md", ".json", ".png"))
    md.write_text(markdown, encoding="utf-8")
    js.write_text(json_text, encoding="utf-8")
    figure.savefig(png, format="png", metadata={"Software": None})
    return [md, js, png, _write_index(out_dir)]


def readme_markers(experiment: str) -> tuple[str, str]:
    return f"<!-- results:{experiment} -->", f"<!-- /results:{experiment} -->"


def readme_excerpt(board: Leaderboard, link: str) -> str:
    """The README's results excerpt of a board: test accuracy per target (bold: the best group;
    seed by seed where a seed failed) and the board's findings, every word from its statistics."""
    titles = ["method", *(percent(t) for t in board.targets)]
    lines = [
        f"From [{board.experiment}]({link}) (test top-1 %, mean ± std over seeds "
        f"{board.header.get('seeds', '?')}; **bold**: the best group of the column, the methods "
        "no Holm-corrected paired t-test separates from its best mean):",
        "",
        "| " + " | ".join(titles) + " |",
        "|" + " --- |" * len(titles),
    ]
    for row in board.rows:
        cells = []
        for t in board.targets:
            cell = row.cell(t)
            if cell is None:
                cells.append("—")
                continue
            text = acc_value(cell)
            if not row.reference and cell.ranked:
                text = md_marked(text, cell.marks[Metrics.TEST_ACCURACY])
            elif not row.reference:
                text += " (" + "; ".join(f.split(":")[0] for f in cell.flags()) + ")"
            cells.append(text)
        name = row.label + (" (reference)" if row.reference else "")
        name += " (floor)" if row.method == FLOOR_METHOD else ""
        lines.append("| " + " | ".join([name, *cells]) + " |")
    said = [*findings(board, board.alpha), *delta_findings(board.deltas or [])]
    lines += ["", *[f"- {line}" for line in said]]
    return "\n".join(lines)


def update_readme(path: Path, experiment: str, excerpt: str) -> None:
    """Replace what lies between the experiment's markers in ``path`` (``readme_markers``)."""
    start, end = readme_markers(experiment)
    text = Path(path).read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise BadInput(f"--readme {path}: no {start} ... {end} markers to write between")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    Path(path).write_text(f"{head}{start}\n{excerpt}\n{end}{tail}", encoding="utf-8")


def publish(
    board: Leaderboard, out_dir: Path, header: dict[str, str] | None = None, *, force: bool = False
) -> list[Path]:
    """The leaderboard's published files; an unfair table is refused unless forced."""
    if board.problems and not force:
        raise UnfairComparison("; ".join(board.problems))
    figure = plot_speed(board) if structured(board) else plot(board)
    paths = write_published(
        board.experiment, out_dir, to_markdown(board, header), to_json(board, header), figure
    )
    if board.tuning:  # the configurations the tuned rows ran, so anyone can rerun them
        configs = Path(out_dir) / configs_name(board.experiment)
        kept = {k: v for k, v in board.tuning.items() if k != "untuned"}
        configs.write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        paths.append(configs)
    return paths

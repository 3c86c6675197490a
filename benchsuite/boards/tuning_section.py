"""A tuned board's account of its tuning: what was searched, with how many trials, what won.

A board with tuned rows (``run --tuned``) is only as fair as its tuning, so ``publish`` reads
the tuned-configurations file the rows came from (``benchsuite tune`` writes it) and prints, per
method and target, the ranges searched, the trials that finished and the configuration chosen,
and which methods were not tuned and why. The file itself is published beside the board, so
``run --tuned-configs`` reruns exactly those configurations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchsuite.boards.leaderboard import Leaderboard
from benchsuite.tuning.search import TUNED_DIR, read_tuned, search_space, tuned_file


def tuning_for(
    board: Leaderboard, path: Path | None = None, root: Path | None = None
) -> dict[str, Any] | None:
    """The tuning behind ``board``'s tuned rows (None when it has none), from ``path`` (default
    the preset's file under ``root``, .benchsuite/tuned); checked against the board's preset
    and budget."""
    if not any(row.tuned for row in board.rows):
        return None
    h = board.header
    path = path or tuned_file(str(h.get("preset")), int(h.get("epochs") or 0), root or TUNED_DIR)
    hint = "pass --tuned-configs PATH (the file `benchsuite tune` saved)"
    expected = {"preset": h.get("preset"), "epochs": h.get("epochs")}
    payload = read_tuned(path, expected, f"{board.experiment} has tuned rows; {path}", hint)
    payload["untuned"] = {
        row.method: _why_untuned(row.method) for row in board.rows if row.tuned is False
    }
    return payload


def _why_untuned(method: str) -> str:
    try:
        space = search_space(method)
    except KeyError:
        return "not tuned"
    if not space:
        return "no tunable hyperparameters"
    return "its only knobs are calibrated per target (so that it lands on the target)"


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2f} %"


def _config_text(entry: dict[str, Any]) -> str:
    chosen = entry.get("chosen")
    if chosen is None:
        return "no configuration finished on every seed"
    if chosen == 0:
        return "the defaults"
    return ", ".join(f"{k}={v}" for k, v in sorted((entry.get("hparams") or {}).items()))


def markdown_lines(tuning: dict[str, Any], targets: list[float], configs_name: str) -> list[str]:
    """The board's "Tuning" section."""
    seeds = tuning.get("seeds") or []
    seed_text = ", ".join(map(str, seeds)) if seeds else "the tuning seeds"
    out = [
        "## Tuning",
        "",
        f"- **Search:** up to {tuning.get('configs_per_method')} configurations per method and "
        f"target, the defaults first and the others drawn at random from the ranges below; "
        f"every configuration trained on the same tuning seeds ({seed_text}, none of them a "
        "benchmark seed) and scored by its mean validation accuracy of the finalized model; "
        "the test split was never read. The highest mean was chosen; a tie, or no "
        "configuration above the defaults, kept the defaults (so the chosen one is never below "
        "them on validation). The chosen configuration was then trained on the board's seeds.",
        f"- **Configurations:** `{configs_name}`; rerun them with "
        f"`benchsuite run --tuned-configs {configs_name} ...`.",
    ]
    if tuning.get("untuned"):
        out.append(
            "- **Not tuned** (their defaults and the preset's calibration): "
            + "; ".join(f"{m}: {why}" for m, why in sorted(tuning["untuned"].items()))
        )
    out += [
        "",
        "| Method | Searched | " + " | ".join(f"{t:.0%} chosen" for t in targets) + " |",
        "|---|---|" + "---|" * len(targets),
    ]
    for method, entries in sorted(tuning.get("methods", {}).items()):
        spaces = {k: v for e in entries.values() for k, v in e.get("space", {}).items()}
        searched = "; ".join(f"{k}: {v}" for k, v in sorted(spaces.items()))
        cells = []
        for target in targets:
            e = entries.get(f"{target:g}")
            if e is None:
                cells.append("—")
                continue
            cells.append(
                f"{_config_text(e)} (val {_percent(e.get('val_accuracy'))} vs defaults "
                f"{_percent(e.get('default_val_accuracy'))}; {len(e.get('configs', []))} "
                f"configurations, {e.get('finished')}/{e.get('trials')} trials)"
            )
        out.append(f"| {method} | {searched} | " + " | ".join(cells) + " |")
    return out + [""]

"""Execute the grid of runs: skip what already FINISHED, isolate failures, show progress."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .data import Dataset
from .runner import execute, key_for
from .tracking import Tracker
from .train import RunConfig


@dataclass
class Outcome:
    finished: int = 0
    failed: int = 0
    skipped: int = 0


def run_grid(
    configs: list[RunConfig],
    data: Dataset,
    tracking_uri: str,
    experiment: str,
    *,
    cache_dir: Path | None = None,
    command: str = "",
    console: Console | None = None,
) -> Outcome:
    tracker = Tracker(tracking_uri, experiment)
    done = tracker.finished_keys()
    todo = [c for c in configs if key_for(c, data) not in done]
    tracker.mark_stale({key_for(c, data) for c in todo})
    outcome = Outcome(skipped=len(configs) - len(todo))
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("runs", total=len(todo), status="")
        for config in todo:
            label = config.label()

            def on_epoch(p, label=label) -> None:
                progress.update(
                    task,
                    status=f"{outcome.failed} failed | running {label} epoch {p.epoch}/{p.epochs} "
                    f"val {p.val_accuracy:.2f}%",
                )

            status, _, error = execute(
                config, tracker, dataset=data, cache_dir=cache_dir, command=command, on_epoch=on_epoch
            )
            if status == "FINISHED":
                outcome.finished += 1
            else:
                outcome.failed += 1
                progress.console.print(f"[red]FAILED[/red] {label}: {error}")
            progress.advance(task)
    return outcome

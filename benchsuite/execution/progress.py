"""The live view of a grid: one overall bar with its ETA, one bar per running trial, and one
line per ended trial. Both executors (``orchestrate``, ``executor``) feed it the same events.

Built on rich's ``Progress``: the overall bar counts epochs of every trial still to run, so its
ETA (rich's ``TimeRemainingColumn``) accounts for concurrency. Names are printed as text,
never as markup (``imp[schedule=ft]`` stays as written).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

MAX_ROWS = 16  # running trials shown; the overall bar counts every one


class _Progress(Progress):
    """rich's Progress with a line of counts above its bars."""

    def __init__(self, head: Any, *columns: ProgressColumn, **options: Any) -> None:
        self.head = head  # before Progress renders a first frame
        super().__init__(*columns, **options)

    def get_renderables(self) -> Iterable[Any]:
        yield self.head()
        yield self.make_tasks_table(self.tasks)


class _Name(ProgressColumn):
    """A task's description as plain text, and its latest validation accuracy."""

    def render(self, task: Task) -> Text:
        val = task.fields.get("val")
        return Text(task.description + ("" if val is None else f"  val {val:.2f}%"))


@dataclass
class _Trial:
    label: str
    epochs: int
    task: TaskID | None = None
    epoch: int = 0
    attempt: int = 0
    status: str = "PENDING"


class GridProgress:
    """Fed by trial events: ``start``, ``epoch``, ``end``, ``retry``; thread-safe."""

    def __init__(
        self,
        trials: Iterable[tuple[str, str, int]],
        skipped: int,
        console: Console,
        *,
        expected: int | None = None,
        epochs: int = 0,
    ) -> None:
        """``trials``: (key, label, epochs) of every trial to run; or, where a search draws
        them as it goes, ``expected`` trials of ``epochs`` each, added as they start."""
        self.console = console
        self.trials = {key: _Trial(label, epochs) for key, label, epochs in trials}
        self.expected = expected if expected is not None else len(self.trials)
        self.counts = {"finished": 0, "failed": 0, "skipped": skipped}
        self.skipped_before = skipped  # already finished: not among the trials
        self.lock = threading.Lock()
        self.progress = _Progress(
            self._head,
            _Name(),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=2,
        )
        total = sum(t.epochs for t in self.trials.values()) or self.expected * epochs
        self.overall = self.progress.add_task("epochs, all trials", total=total or None)

    def expect(self, trials: int, epochs: int) -> None:
        """A search will draw ``trials`` trials of ``epochs`` each."""
        with self.lock:
            self.expected = trials
            self.progress.update(self.overall, total=trials * epochs or None)

    def __enter__(self) -> GridProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
        if not self.console.is_terminal:
            self.console.line()  # Live's last frame ends without a newline on a plain stream

    def _head(self) -> Text:
        """finished / running / pending / failed / skipped (the ETA is the overall bar's).

        Called while rich renders, also from inside ``add_task``: it takes no lock (a count
        read mid-update shows for half a second at most)."""
        c = dict(self.counts)
        running = sum(t.status == "RUNNING" for t in list(self.trials.values()))
        ended = c["finished"] + c["failed"] + c["skipped"] - self.skipped_before
        pending = max(self.expected - running - ended, 0)
        return Text.assemble(
            ("finished ", "bold"),
            (str(c["finished"]), "green"),
            ("  running ", "bold"),
            (str(running), "cyan"),
            ("  pending ", "bold"),
            str(pending),
            ("  failed ", "bold"),
            (str(c["failed"]), "red" if c["failed"] else ""),
            ("  skipped ", "bold"),
            str(c["skipped"]),
        )

    def start(self, key: str, label: str = "", epochs: int = 0) -> None:
        """A trial (or another attempt of it) starts; a trial unknown so far is added."""
        with self.lock:
            trial = self.trials.setdefault(key, _Trial(label, epochs))
            trial.attempt += 1
            trial.status = "RUNNING"
            self._drop(trial)
            shown = sum(t.task is not None for t in self.trials.values())
            if shown < MAX_ROWS:
                label = trial.label + (f" (attempt {trial.attempt})" if trial.attempt > 1 else "")
                trial.task = self.progress.add_task(label, total=trial.epochs, val=None)

    def epoch(self, key: str, epoch: int, epochs: int, val_accuracy: float) -> None:
        with self.lock:
            trial = self.trials[key]
            self.progress.advance(self.overall, max(0, epoch - trial.epoch))
            trial.epoch = epoch
            if trial.task is not None:
                self.progress.update(trial.task, completed=epoch, total=epochs, val=val_accuracy)

    def retry(self, key: str) -> None:
        """A failed attempt will run again: its epochs are to do again."""
        with self.lock:
            trial = self.trials[key]
            if trial.status == "FAILED":  # counted as failed when it ended
                self.counts["failed"] -= 1
            trial.status = "PENDING"
            self._drop(trial)

    def end(
        self,
        key: str,
        status: str,
        *,
        error: str | None = None,
        val_accuracy: float | None = None,
        took: float | None = None,
        warning: str = "",
    ) -> None:
        """One line per ended trial (its last attempt)."""
        with self.lock:
            trial = self.trials[key]
            self.progress.advance(self.overall, max(0, trial.epochs - trial.epoch))
            trial.epoch = trial.epochs
            self._drop(trial, keep_epochs=True)
            trial.status = status
            if status in ("FINISHED", "FAILED", "SKIPPED"):
                self.counts[status.lower()] += 1
        if warning:
            self.console.print(Text.assemble(("warning ", "yellow"), warning))
        self.console.print(_line(trial.label, status, error, val_accuracy, took), highlight=False)

    def _drop(self, trial: _Trial, *, keep_epochs: bool = False) -> None:
        if trial.task is not None:
            self.progress.remove_task(trial.task)
            trial.task = None
        if not keep_epochs and trial.epoch:
            self.progress.advance(self.overall, -trial.epoch)
            trial.epoch = 0

    def __rich__(self) -> Any:
        return self.progress.get_renderable()


def _line(
    label: str, status: str, error: str | None, val: float | None, took: float | None
) -> Text:
    seconds = f" {took:.1f} s" if took is not None else ""
    if status == "FINISHED":
        acc = f" val {val:.2f}%" if val is not None else ""
        return Text.assemble(("finished", "green"), f" {label}{acc}{seconds}")
    if status == "SKIPPED":
        return Text.assemble(("skipped", "yellow"), f" {label}: {error or ''}")
    first = (error or "?").splitlines()[0] if error else "?"
    return Text.assemble(("FAILED", "red"), f" {label}: {first}{seconds}")

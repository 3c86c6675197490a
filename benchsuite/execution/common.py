"""What every executor shares: the records of a grid's trials, its outcome, the runs still
to do, and the tracker they write to.

An executor takes the grid of run configurations, skips the run keys already FINISHED in the
store, runs the rest through ``runner.execute`` (which claims, trains and records each run)
and returns an ``Outcome``. ``ray_tune.run_grid`` runs them as Ray Tune trials;
``local.run_local`` runs them one after another in this process, with the same interface.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchsuite.core.identity import preset_budget
from benchsuite.core.record import Metrics, Tags
from benchsuite.data.base import Dataset
from benchsuite.execution.progress import GridProgress
from benchsuite.store.claims import claim
from benchsuite.store.sqlite import no_store_yet
from benchsuite.store.tracking import Reader, Tracker, peek_finished_keys
from benchsuite.training.loop import RunConfig
from benchsuite.training.runner import first_line, key_for, record_failure, run_params, run_tags

# A search (``tuning``): from the bases (resolved) and the run-key function, a Tune searcher
# that draws the trials, with ``total``: how many it draws.
Search = Callable[[list[RunConfig], Callable[[RunConfig], str]], Any]

ALREADY_FINISHED = "already finished"  # store.claim's reason for a key FINISHED in the store


@dataclass
class TrialRecord:
    """What the driver knows about one run after it ended (the last attempt)."""

    label: str
    key: str
    status: str = "PENDING"  # FINISHED, FAILED, SKIPPED (claimed elsewhere), INTERRUPTED
    error: str | None = None
    attempts: int = 0
    node: str = ""
    resources: dict[str, float] = field(default_factory=dict)
    started: float | None = None  # driver clock (time.time) of the last attempt's start
    wall_s: float | None = None  # driver clock: trial started → trial ended
    trial_s: float | None = None  # inside the trial: entry → run recorded
    train_s: float | None = None  # train_run's own wall time (the loop, evaluation, finalize)
    step_s: float | None = None  # optimizer-step time (images ÷ img/s)
    val_accuracy: float | None = None  # of the finalized model
    test_reads: int | None = None  # test-split passes made inside the trial
    hard: bool = False  # the trial's process died; the driver recorded the failure

    def final(self, report: dict[str, Any]) -> None:
        """Take a trial's final report (``final_report``)."""
        self.status = str(report["status"])
        self.error = report.get("error") or None
        self.node = str(report.get("node", ""))
        self.resources = dict(report.get("resources") or {})
        self.trial_s = report.get("trial_s")
        self.train_s = report.get("train_s")
        self.step_s = report.get("step_s")
        self.val_accuracy = report.get("final_val_accuracy")
        self.test_reads = report.get("test_reads")
        self.hard = False


@dataclass
class Outcome:
    finished: int = 0
    failed: int = 0
    skipped: int = 0
    adopted: int = 0  # finished in another experiment of the store: recorded here, not trained
    interrupted: int = 0
    retried: int = 0
    trials: list[TrialRecord] = field(default_factory=list)
    wall_s: float = 0.0
    claimed: int = 0  # skipped in a trial: finished or being run by another command meanwhile
    claims: list[str] = field(default_factory=list)  # label: why, for each of those
    configs: list[RunConfig] = field(default_factory=list)  # as run (threads, device resolved)
    results: Any = None  # Ray Tune's ResultGrid (``orchestrate.run_grid``)

    def summary(self) -> str:
        """One line: how many runs finished, failed, were skipped, retried, interrupted."""
        claimed = (
            f", {self.claimed} skipped (another command finished or is running them)"
            if self.claimed
            else ""
        )
        retried = f", {self.retried} retried" if self.retried else ""
        stopped = f", {self.interrupted} interrupted" if self.interrupted else ""
        adopted = (
            f", {self.adopted} copied (finished in another experiment of the store)"
            if self.adopted
            else ""
        )
        return (
            f"{self.finished} finished, {self.failed} failed, {self.skipped} skipped "
            f"(already finished){adopted}{claimed}{retried}{stopped}"
        )

    def tally(self, records: list[TrialRecord], started: float) -> Outcome:
        for rec in records:
            self.trials.append(rec)
            if rec.status == "FINISHED":
                self.finished += 1
            elif rec.status == "FAILED":
                self.failed += 1
            elif rec.status == "SKIPPED" and rec.error == ALREADY_FINISHED:
                self.skipped += 1  # finished by another command meanwhile, or earlier (search)
            elif rec.status == "SKIPPED":
                self.claimed += 1
                self.claims.append(f"{rec.label}: {rec.error}")
            else:
                self.interrupted += 1
        self.wall_s = time.perf_counter() - started
        return self


class GridState:
    """The trials' records and the progress view, kept from the trials' events: Ray Tune's
    (``orchestrate``'s watcher) or the in-process executor's, the same events either way."""

    def __init__(self, records: dict[str, TrialRecord], view: GridProgress) -> None:
        self.records = records
        self.view = view
        self.retried = 0
        self.configs: dict[str, RunConfig] = {}  # of every trial started, by run key

    def apply(self, event: str, key: str, payload: dict[str, Any]) -> None:
        if event == "start" and key not in self.records:  # a search's trial, drawn just now
            self.records[key] = TrialRecord(payload["label"], key)
        rec = self.records.get(key)
        if rec is None:
            return
        now = time.time()
        if event == "start":
            self.configs[key] = payload["config"]
            rec.status, rec.started, rec.attempts = "RUNNING", now, rec.attempts + 1
            self.view.start(key, payload.get("label", ""), payload.get("epochs", 0))
        elif event == "epoch":
            self.view.epoch(
                key, int(payload["epoch"]), int(payload["epochs"]), float(payload["val_accuracy"])
            )
        elif event == "final":
            rec.final(payload)
            rec.wall_s = now - rec.started if rec.started else None
            self.view.end(
                key,
                rec.status,
                error=rec.error,
                val_accuracy=rec.val_accuracy,
                took=rec.wall_s,
                warning=payload.get("warning", ""),
            )
        elif payload.get("hard"):  # "retry" or "error" of a trial whose process died
            rec.status, rec.hard, rec.error = "FAILED", True, payload["error"]
            rec.wall_s = now - rec.started if rec.started else None
            self.view.end(key, "FAILED", error=rec.error, took=rec.wall_s)
        if event == "retry":
            self.retried += 1
            self.view.retry(key)


def pending_runs(
    configs: list[RunConfig], data: Dataset, uri: str, experiment: str, kind: str
) -> tuple[list[str], list[int]]:
    """Every config's run key, and the indices of those to run (unfinished, one per key),
    in cache-group order."""
    keys = [key_for(c, data) for c in configs]
    done = peek_finished_keys(uri, experiment, kind)  # creates nothing
    todo = list({k: i for i, k in reversed(list(enumerate(keys))) if k not in done}.values())
    return keys, cache_groups(configs, data, sorted(todo))


def adopt_finished(
    configs: list[RunConfig],
    keys: list[str],
    todo: list[int],
    data: Dataset,
    uri: str,
    experiment: str,
    *,
    kind: str,
    command: str,
) -> list[int]:
    """The runs of ``todo`` still to train, once those whose run key FINISHED in another
    experiment of the same store are recorded here from it (tag ``adopted_from``) instead of
    trained again: a key is the configuration, data, steps and numerics, so its numbers are
    the same. A tuned board then trains only the cells whose tuning changed something.

    The copy is claimed like a trained run, so two commands never both write it; a copy that
    fails ends FAILED and the run is trained instead.
    """
    if not todo or no_store_yet(uri):
        return todo
    found = Reader(uri).finished_elsewhere({keys[i] for i in todo}, kind, besides=experiment)
    if not found:
        return todo
    tracker, adopted = Tracker(uri, experiment), set()
    for i in todo:
        if (source := found.get(keys[i])) is None:
            continue
        tags = run_tags(
            configs[i], data, command=command, node=source.tag(Tags.NODE, ""), kind=kind
        )
        tags[Tags.ADOPTED_FROM] = f"{source.experiment}/{source.run_id}"
        run = claim(tracker, keys[i], kind, configs[i].label(), run_params(configs[i]), tags)
        if isinstance(run, str):
            continue  # finished or held by another command meanwhile: its trial will say so
        try:
            run.adopt(source)
        except Exception as exc:  # noqa: BLE001 - the run is trained instead
            run.end("FAILED", f"copying {tags[Tags.ADOPTED_FROM]} failed: {first_line(exc)}")
            continue
        run.end("FINISHED")
        adopted.add(i)
    return [i for i in todo if i not in adopted]


def cache_groups(configs: list[RunConfig], data: Dataset, todo: list[int]) -> list[int]:
    """Order trials so that one run of each shared dense prefix (IMP variants) goes first.

    Later runs of the same prefix then find its checkpoint instead of recomputing it, as far as
    the concurrency allows; the order changes nothing else.
    """
    seen: set[tuple[Any, ...]] = set()
    leaders, followers = [], []
    for i in todo:
        c = configs[i]
        try:
            budget = preset_budget(c.preset, data)
            plan = c.method_cls().plan(budget, c.hp(), c.target, c.preset.schedule)
            group = (plan.cache_key, plan.cache_epoch, c.seed) if plan.cache_key else None
        except Exception:  # noqa: BLE001 - ordering is only a heuristic
            group = None
        if group is not None and group in seen:
            followers.append(i)
        else:
            leaders.append(i)
            if group is not None:
                seen.add(group)
    return leaders + followers


def open_tracker(uri: str, experiment: str, redo: set[str]) -> Tracker:
    """The store, with runs of ``redo`` keys left RUNNING by a killed command ended KILLED."""
    tracker = Tracker(uri, experiment)
    tracker.mark_stale(redo)
    return tracker


def record_failed(
    tracker: Tracker,
    key: str,
    config: RunConfig,
    data: Dataset,
    error: str,
    *,
    since_ms: int,
    owner: dict[str, str],
    command: str = "",
    node: str = "unknown",
    kind: str = "run",
) -> str | None:
    """A failed run is in the store, FAILED with its error, whoever could write it: its run
    left RUNNING (the trial's process died, or its store writes failed) is ended here, and a
    run that never got a record gets one. Returns why the store could not take it (None when
    it did): a full disk fails the driver's writes as it failed the trial's."""
    try:
        if tracker.fail_running(key, error, since_ms=since_ms, owner=owner):
            return None
        mine = [r for r in tracker.runs_of(key, kind) if r.start_time >= since_ms]
        if not any(r.status == "FAILED" for r in mine):
            record_failure(config, tracker, data, error, command=command, node=node, kind=kind)
    except Exception as exc:  # noqa: BLE001 - the run's error is already on the command's line
        return f"{type(exc).__name__}: {first_line(exc)}"
    return None


def end_leftovers(tracker: Tracker | None, owner: dict[str, str], since_ms: int) -> None:
    """Whatever this command claimed and is still RUNNING once the grid is over was stopped
    (Ctrl-C, a trial cancelled by Tune): KILLED, so nothing is left RUNNING."""
    if tracker is None:
        return
    try:
        tracker.fail_running(None, "interrupted", since_ms=since_ms, status="KILLED", owner=owner)
    except KeyboardInterrupt:  # a second Ctrl-C: a later command ends them (stale claims)
        pass
    except Exception:  # noqa: BLE001 - the store fails (a full disk): a later command ends them
        pass


def final_report(status: str, result: Any, error: str | None, **extra: Any) -> dict[str, Any]:
    """A trial's last report: its status and the figures the driver keeps (``TrialRecord``)."""
    report: dict[str, Any] = {"final": True, "status": status, "error": error or "", **extra}
    if result is not None:
        m = result.metrics
        report["warning"] = result.tags.get(Tags.CACHE_WARNING, "")
        report["final_val_accuracy"] = m[Metrics.VAL_ACCURACY]
        report["train_s"] = m[Metrics.WALL_TIME_S]
        if m.get(Metrics.TRAIN_IMG_PER_S):
            report["step_s"] = m[Metrics.TRAIN_IMAGES] / m[Metrics.TRAIN_IMG_PER_S]
    return report

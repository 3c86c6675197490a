"""Run the grid of runs as Ray Tune trials: one ``Tuner`` over the run configurations.

The run configurations themselves are the search space (``tune.grid_search`` over them, in
cache-group order); every trial (a function trainable) trains through the one loop
(``runner.execute``) and records its own MLflow run, so a run is recorded the same way on
whichever node it ran. Ray Tune schedules (``tune.with_resources``, fractional GPUs
included), retries a failed trial (``FailureConfig(max_failures=retries)``) and returns the
trials' final reports in its ``ResultGrid``. A ``tune.Callback`` feeds the progress view and
ends the run of a trial whose process died (OOM, SIGKILL) FAILED, since that trial cannot.

Resume is by run key: keys already FINISHED are not even submitted (``executor.pending_runs``),
and a trial whose key another command finished or holds meanwhile reports SKIPPED.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from benchsuite.core.record import Kinds, Metrics
from benchsuite.data.base import Dataset
from benchsuite.execution.cluster import (
    Cluster,
    ResourceError,
    Resources,
    check_data_dir,
    check_resources,
    current_cluster,
    predicted_local_cluster,
    quiet_ray_environment,
    ray_instance,
    resolve_gpus,
    resolve_numerics,
)
from benchsuite.execution.common import (
    ALREADY_FINISHED,
    GridState,
    Outcome,
    Search,
    TrialRecord,
    adopt_finished,
    end_leftovers,
    final_report,
    open_tracker,
    pending_runs,
    record_failed,
)
from benchsuite.execution.progress import GridProgress
from benchsuite.store.owners import claimant
from benchsuite.store.sqlite import absolute_uri, is_sqlite
from benchsuite.store.tracking import Tracker, preload
from benchsuite.training.loop import Progress, RunConfig
from benchsuite.training.runner import execute, first_line, key_for

Event = Callable[[str, str, dict[str, Any]], None]  # (event, run key, payload)


@dataclass(frozen=True)
class RunKeys:
    """``runner.key_for`` without the dataset, for a search (Tune pickles it with its state):
    the data's fingerprint and steps per epoch are all a run key needs of it."""

    fingerprint: str
    steps: tuple[tuple[int, int], ...]  # (batch size, steps per epoch)

    @classmethod
    def of(cls, data: Dataset, configs: list[RunConfig]) -> RunKeys:
        sizes = sorted({c.preset.batch_size for c in configs})
        return cls(data.fingerprint, tuple((b, data.steps_per_epoch(b)) for b in sizes))

    def steps_per_epoch(self, batch_size: int) -> int:
        return dict(self.steps)[batch_size]

    def __call__(self, config: RunConfig) -> str:
        return key_for(config, self)  # type: ignore[arg-type] - the two fields it reads


class RunFailed(RuntimeError):
    """Raised by a trial whose run failed (and is recorded FAILED), so Tune retries it."""


@dataclass(frozen=True)
class Job:
    """What every trial shares; shipped once through Ray's object store."""

    data: Dataset
    tracking_uri: str
    experiment: str
    cache_dir: str | None
    command: str
    kind: str
    owner: dict[str, str]  # the claimant of every run of this command (store.claimant)


def _in_ray_worker() -> bool:
    ray = sys.modules.get("ray")
    try:
        return ray is not None and ray._private.worker.global_worker.mode == ray.WORKER_MODE
    except AttributeError:
        return False


if _in_ray_worker():
    # A trial actor imports this module while it starts (unpickling ``trial``): the MLflow import
    # now, so its ~1-2 s fall in the actor's start-up, not in every trial's wall time. The
    # driver imports it lazily instead, overlapped with starting Ray.
    preload()

_DATA: dict[str, Dataset] = {}  # per worker process: one copy, its test split loaded once
_TRACKERS: dict[tuple[str, str], Tracker] = {}


def trial(config: dict[str, Any], job: Job) -> None:
    """One run inside a Ray worker: report every epoch, then a final report.

    ``config["run"]`` is the run's configuration and key, and ``score``: the name under which
    the final report carries the finalized model's validation accuracy (a search's metric),
    also where the run was FINISHED before. A failed run is recorded FAILED by ``execute``,
    reported, then raised (``RunFailed``) so that Tune retries it.
    """
    import ray
    import torch
    from ray import tune

    started = time.perf_counter()
    run_config: RunConfig = config["run"]["config"]
    torch.set_num_threads(run_config.threads)
    context = ray.get_runtime_context()
    node = context.get_node_id()
    data = _DATA.setdefault(job.data.fingerprint, job.data)
    tracker_key = (job.tracking_uri, job.experiment)
    reads = data.test_reads

    def on_epoch(p: Progress) -> None:
        tune.report(
            {
                "epoch": p.epoch,
                "epochs": p.epochs,
                "val_accuracy": p.val_accuracy,
                "sparsity": p.sparsity,
                "train_loss": p.train_loss,
            }
        )

    try:
        if tracker_key not in _TRACKERS:
            _TRACKERS[tracker_key] = Tracker(*tracker_key)
        status, result, error = execute(
            run_config,
            _TRACKERS[tracker_key],
            dataset=data,
            cache_dir=Path(job.cache_dir) if job.cache_dir else None,
            command=job.command,
            node=node,
            on_epoch=on_epoch,
            kind=job.kind,
            owner=job.owner,
        )
    except Exception as exc:  # noqa: BLE001 - the store failed (a full disk): the driver says why
        status, result, error = "FAILED", None, f"{type(exc).__name__}: {first_line(exc)}"
    report = final_report(
        status,
        result,
        error,
        node=node,
        resources=context.get_assigned_resources(),
        test_reads=data.test_reads - reads,
        trial_s=time.perf_counter() - started,
    )
    score = config["run"].get("score")
    if score and status == "SKIPPED" and error == ALREADY_FINISHED and tracker_key in _TRACKERS:
        runs = _TRACKERS[tracker_key].runs_of(config["run"]["key"], job.kind)  # newest first
        stored = next((r.metrics for r in runs if r.finished), {})
        report["final_val_accuracy"] = stored.get(Metrics.VAL_ACCURACY)
    if score and report.get("final_val_accuracy") is not None:
        report[score] = report["final_val_accuracy"]
    tune.report(report)
    if status == "FAILED":
        raise RunFailed(error)


# --------------------------------------------------------------------------- the driver's view


def _error_text(error: Any) -> str:
    text = str(error or "the trial's process died")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    # Ray's messages end with the cause; keep it short but keep the cause.
    return (lines[-1] if lines else text)[:500]


def _make_watcher(
    emit: Event, uri: str, experiment: str, owner: dict[str, str], since_ms: int
) -> Any:
    from ray import tune

    class Watcher(tune.Callback):
        """Turns Tune's trial events into progress events; ends the run of a trial whose
        process died before a retry starts (else the retry would find its key RUNNING)."""

        def __init__(self) -> None:
            self.finals: set[str] = set()  # trials whose current attempt reported its end
            self.tracker: Tracker | None = None

        def __getstate__(self) -> dict[str, Any]:  # Tune saves callbacks with its state
            return {"finals": set(), "tracker": None}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.finals.discard(trial.trial_id)
            config = trial.config["run"]["config"]
            emit(
                "start",
                trial.config["run"]["key"],
                {"label": config.label(), "epochs": config.preset.epochs, "config": config},
            )

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("final"):
                self.finals.add(trial.trial_id)
                emit("final", trial.config["run"]["key"], dict(result))
            elif "epoch" in result:
                emit("epoch", trial.config["run"]["key"], dict(result))

        def on_trial_recover(self, iteration, trials, trial, **info):
            payload = self._failure(trial)
            try:  # a run its trial could not end (died, or its store writes failed): FAILED
                self.tracker = self.tracker or Tracker(uri, experiment)
                key = trial.config["run"]["key"]
                self.tracker.fail_running(key, payload["error"], since_ms=since_ms, owner=owner)
            except Exception:  # noqa: BLE001 - the store fails (a full disk): the retry says so
                pass
            emit("retry", trial.config["run"]["key"], payload)

        def on_trial_error(self, iteration, trials, trial, **info):
            emit("error", trial.config["run"]["key"], self._failure(trial))

        def _failure(self, trial: Any) -> dict[str, Any]:
            try:
                error = trial.get_pickled_error() or trial.get_error()
            except Exception as exc:  # noqa: BLE001 - the reason is best effort; the status is not
                error = exc
            return {"error": _error_text(error), "hard": trial.trial_id not in self.finals}

    return Watcher()


class _Emitter:
    """Pickles to a no-op: Tune saves its callbacks with the experiment; the view stays here."""

    def __init__(self, emit: Event) -> None:
        self.emit = emit

    def __call__(self, event: str, key: str, payload: dict[str, Any]) -> None:
        self.emit(event, key, payload)

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.emit = _ignore


def _ignore(event: str, key: str, payload: dict[str, Any]) -> None:
    pass


class _QueueEmitter:
    """For Ray Client, where Tune (and so the callback) runs on the cluster: events go through
    a Ray queue that the driver drains."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def __call__(self, event: str, key: str, payload: dict[str, Any]) -> None:
        self.queue.put_nowait((event, key, payload))


# --------------------------------------------------------------------------- the grid


def run_grid(
    configs: list[RunConfig],
    data: Dataset,
    tracking_uri: str,
    experiment: str,
    *,
    cache_dir: Path | None = None,
    command: str = "",
    console: Console | None = None,
    resources: Resources | None = None,
    kind: str = Kinds.RUN,
    search: Search | None = None,
) -> Outcome:
    """Run every configuration whose run_key has not FINISHED yet, as Ray Tune trials.

    With ``search``, ``configs`` are its bases (numerics and device resolved here) and the
    search draws the trials; those FINISHED before run again only to report their score.
    Raises ``ResourceError`` (before anything is recorded) for requests no node can satisfy.
    A Ctrl-C at any moment ends the grid: its runs end KILLED, ``interrupted`` counts them.
    """
    started = time.perf_counter()
    resources = resources or Resources()
    uri = absolute_uri(tracking_uri)
    if resources.address is not None and is_sqlite(uri):
        raise ResourceError(
            f"--tracking-uri {tracking_uri}: a local sqlite store cannot be shared by the nodes "
            "of a cluster; run an MLflow server and pass --tracking-uri http://HOST:PORT"
        )
    quiet_ray_environment()
    import ray

    local = resources.address is None
    known = current_cluster(local=local) if ray.is_initialized() else None
    known = predicted_local_cluster(resources) if known is None and local else known
    configs = resolve_numerics(configs, resources, known)
    keys, todo = pending_runs(configs, data, uri, experiment, kind) if search is None else ([], [])
    outcome = Outcome(skipped=0 if search else len(configs) - len(todo), configs=configs)
    if search is None and not todo:
        return outcome
    if known is not None:  # check before anything starts or is written
        check_resources(resources, resolve_gpus(resources, known), known)
    if search is None:
        left = adopt_finished(
            configs, keys, todo, data, uri, experiment, kind=kind, command=command
        )
        outcome.adopted, todo = len(todo) - len(left), left
        if not todo:
            return outcome
    redo = {keys[i] for i in todo}
    prepare = _overlap_startup(uri, experiment, redo if known is not None else None)
    records = {keys[i]: TrialRecord(configs[i].label(), keys[i]) for i in todo}
    state = GridState(
        records,
        GridProgress(
            ((keys[i], configs[i].label(), configs[i].preset.epochs) for i in todo),
            outcome.skipped,
            console or Console(),
        ),
    )
    owner, since_ms = claimant(), int(time.time() * 1000) - 1000
    job = Job(
        data,
        uri,
        experiment,
        str(Path(cache_dir).resolve()) if cache_dir else None,
        command,
        kind,
        owner,
    )
    tracker: Tracker | None = None
    scratch = tempfile.mkdtemp(prefix="benchsuite-tune-")  # Tune's storage, removed at the end
    try:
        with ray_instance(resources, scratch) as cluster:
            gpus = _checked_gpus(resources, cluster, configs)
            configs = outcome.configs = _on_device(configs, resources, gpus)
            tracker = prepare.result() if prepare else open_tracker(uri, experiment, redo)
            if search is None:
                space: Any = [{"key": keys[i], "config": configs[i]} for i in todo]
                state.configs.update((run["key"], run["config"]) for run in space)
            else:
                space = search(configs, RunKeys.of(data, configs))
                state.view.expect(space.total, max(c.preset.epochs for c in configs))
            with state.view:
                outcome.results = _fit(job, space, resources, gpus, cluster, state, scratch)
            _record_failures(job, tracker, records, state.configs, since_ms, state.view.console)
    except KeyboardInterrupt:  # before, between or after Tune's own handling of Ctrl-C
        for rec in records.values():
            if rec.status in ("PENDING", "RUNNING"):
                rec.status = "INTERRUPTED"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        end_leftovers(tracker or _tracker_if_ready(prepare), owner, since_ms)
    outcome.retried = state.retried
    if search is not None:  # drawn trials Tune never started (Ctrl-C)
        outcome.interrupted = max(0, state.view.expected - len(records))
    return outcome.tally(list(records.values()), started)


def _overlap_startup(uri: str, experiment: str, redo: set[str] | None) -> Future | None:
    """Import Ray Tune and open the store (MLflow's import, a new database) while Ray
    starts, which mostly waits for its processes. The store is opened now only where the
    resources were checked already (``redo`` given)."""
    pool = ThreadPoolExecutor(2)
    pool.submit(importlib.import_module, "ray.tune")
    prepare = None if redo is None else pool.submit(open_tracker, uri, experiment, redo)
    pool.shutdown(wait=False)
    return prepare


def _tracker_if_ready(prepare: Future | None) -> Tracker | None:
    if prepare is None or not prepare.done() or prepare.exception() is not None:
        return None
    return prepare.result()


def _checked_gpus(resources: Resources, cluster: Cluster, configs: list[RunConfig]) -> float:
    """GPUs per trial, checked against the cluster, whose nodes must all hold the data."""
    gpus = resolve_gpus(resources, cluster)
    check_resources(resources, gpus, cluster)
    if not cluster.local:
        for data_dir in sorted({c.data_dir for c in configs if c.data_dir}):
            check_data_dir(data_dir, cluster)
    return gpus


def _on_device(configs: list[RunConfig], resources: Resources, gpus: float) -> list[RunConfig]:
    """Trials that hold a GPU train on it (unless ``--device`` says otherwise)."""
    if resources.device is not None:
        return configs
    device = "cuda" if gpus > 0 else "cpu"
    return [c if c.device == device else dataclasses.replace(c, device=device) for c in configs]


def _record_failures(
    job: Job,
    tracker: Tracker,
    records: dict[str, TrialRecord],
    configs: dict[str, RunConfig],
    since_ms: int,
    console: Console,
) -> None:
    """Every failed run is FAILED in the store with its error: a trial whose process died, or
    whose store writes failed, could not end its own MLflow run, so the driver ends it, or
    records a FAILED run where it had none (a run is never dropped)."""
    for key, rec in records.items():
        if rec.status != "FAILED":
            continue
        why = record_failed(
            tracker,
            key,
            configs[key],
            job.data,
            rec.error or "trial died",
            since_ms=since_ms,
            owner=job.owner,
            command=job.command,
            node=rec.node or "unknown",
            kind=job.kind,
        )
        if why:
            console.print(
                f"warning: {rec.label}: the store did not take its failure ({why})",
                markup=False,
                highlight=False,
            )


def _fit(
    job: Job,
    space: list[dict[str, Any]] | Any,
    resources: Resources,
    gpus: float,
    cluster: Cluster,
    state: GridState,
    scratch: str,
) -> Any:
    """One ``Tuner.fit``: a grid over the runs (a list of run key and config), or a search
    (a Tune searcher); the records then hold each run's last attempt. Returns the
    ``ResultGrid``."""
    from ray import tune

    emit: Event = _Emitter(state.apply)
    queue = None
    if cluster.client:  # with Ray Client the callback runs on the cluster: events come by queue
        from ray.util.queue import Queue

        queue = Queue()
        emit = _QueueEmitter(queue)
    since_ms = int(time.time() * 1000) - 1000
    grid = isinstance(space, list)
    watcher = _make_watcher(emit, job.tracking_uri, job.experiment, job.owner, since_ms)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trial, job=job), resources.bundle(gpus)),
        param_space={"run": tune.grid_search(space)} if grid else {},
        tune_config=tune.TuneConfig(
            search_alg=None if grid else space,
            num_samples=1 if grid else space.total,
            max_concurrent_trials=resources.max_concurrent,
            reuse_actors=True,
            trial_dirname_creator=lambda t: t.trial_id,  # not the configs' long reprs
        ),
        run_config=tune.RunConfig(
            name=job.kind,
            storage_path=scratch,
            verbose=0,
            callbacks=[watcher],
            failure_config=tune.FailureConfig(max_failures=resources.retries),
        ),
    )
    results = _fit_quietly(tuner, queue, state)
    for result in results:
        run = (result.config or {}).get("run")
        if run is None:
            continue  # a trial Tune never started (Ctrl-C before it): INTERRUPTED below
        rec, report = state.records[run["key"]], result.metrics or {}
        if result.error is not None and (rec.hard or not report.get("final")):
            rec.status, rec.hard = "FAILED", True
            rec.error = rec.error or _error_text(result.error)
        elif report.get("final") and rec.status != "RUNNING":
            rec.final(report)  # the last attempt's report, as the watcher saw it
    for rec in state.records.values():
        if rec.status in ("PENDING", "RUNNING"):  # stopped before it ended (Ctrl-C)
            rec.status = "INTERRUPTED"
    return results


def _fit_quietly(tuner: Any, queue: Any, state: GridState) -> Any:
    """``tuner.fit()`` with Tune's own error log off (errors are shown once, by the view);
    with Ray Client, draining the watcher's events meanwhile."""
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.CRITICAL)
    try:
        if queue is None:
            return tuner.fit()
        box: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: box.update(grid=tuner.fit()), daemon=True)
        worker.start()
        while worker.is_alive() or not queue.empty():
            while not queue.empty():
                state.apply(*queue.get_nowait())
            worker.join(0.5)
        return box["grid"]
    finally:
        tune_logger.setLevel(level)

"""The only module that imports MLflow: a writer (``Tracker``, ``TrackedRun``) and a reader.

The names a run is written with are ``benchsuite.record``'s; here is how they are stored.
Runs leave this module as ``record.RunRecord`` (plain data), never as MLflow objects. It talks
to MLflow through ``MlflowClient`` (no global active run), so several trials in one process
or on several Ray nodes can write at once. SQLite stores can answer "database is locked"
under concurrent writers; every call is retried with backoff.
"""

from __future__ import annotations

import functools
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from benchsuite.core.record import TAG, Kinds, RunRecord, Tags
from benchsuite.store.owners import alive, owned_by
from benchsuite.store.sqlite import (
    check_mlflow_file,
    check_store,
    is_sqlite,
    locked,
    no_store_yet,
    read_only_uri,
    sqlite_path,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# mlflow is imported where it is used: importing it costs ~1.5 s, which the orchestrator
# overlaps with starting Ray instead of paying it when the command starts.

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
__all__ = [
    "DEFAULT_TRACKING_URI",
    "TAG",
    "Reader",
    "TrackedRun",
    "Tracker",
    "peek_finished_keys",
    "preload",
    "retry_locked",
]

T = TypeVar("T")


def retry_locked(fn: Callable[..., T]) -> Callable[..., T]:
    """Retry a store call that failed because SQLite was locked by another writer."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        for attempt in range(12):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - only lock errors are retried
                if "locked" not in str(exc).lower() or attempt == 11:
                    raise
                time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    return wrapper


def artifact_root(uri: str, experiment: str) -> str | None:
    """Beside a local SQLite store, artifacts go to ``mlartifacts/`` next to the database."""
    if not is_sqlite(uri):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlartifacts" / experiment).as_uri()


def preload() -> None:
    """Import what opening a store needs (~1-2 s), e.g. while a Ray trial actor starts."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import mlflow.tracking  # noqa: F401


def peek_finished_keys(uri: str, experiment: str, kind: str = Kinds.RUN) -> set[str]:
    """Finished run_keys without creating anything (no database file, no experiment)."""
    if no_store_yet(uri):
        return set()
    from mlflow.tracking import MlflowClient

    check_mlflow_file(uri)
    client = MlflowClient(tracking_uri=uri)
    with locked(uri):  # the first call opens (and may migrate) the store
        if retry_locked(client.get_experiment_by_name)(experiment) is None:
            return set()
    return Tracker(uri, experiment).finished_keys(kind)


class Tracker:
    """One MLflow experiment: where the runs of one benchmark go."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.experiment = experiment
        from mlflow.tracking import MlflowClient

        db = sqlite_path(uri)
        if db is not None and not db.exists():
            check_store(uri)  # created whole or not at all
        check_mlflow_file(uri)  # someone else's SQLite file is never migrated
        self.client = MlflowClient(tracking_uri=uri)
        with locked(uri):  # a new SQLite store is created (migrated) here: one process at a time
            self.experiment_id = self._experiment_id()

    @retry_locked
    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment, artifact_location=artifact_root(self.uri, self.experiment)
            )
        except Exception:  # another process created it first
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    @retry_locked
    def start_run(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> TrackedRun:
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={TAG + k: str(v) for k, v in tags.items()},
        )
        tracked = TrackedRun(self.client, run.info.run_id)
        tracked.log_params(params)
        return tracked

    @retry_locked
    def runs(self) -> list[RunRecord]:
        """All runs of the experiment (every status), newest first."""
        found = self.client.search_runs(
            [self.experiment_id], max_results=50_000, order_by=["attributes.start_time DESC"]
        )
        return [_record(r, self.experiment) for r in found]

    @retry_locked
    def runs_of(self, key: str, kind: str = Kinds.RUN) -> list[RunRecord]:
        """The runs (every status) of one run_key and kind, newest first."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG}{Tags.RUN_KEY}` = '{key}'",
            max_results=1000,
            order_by=["attributes.start_time DESC"],
        )
        records = [_record(r, self.experiment) for r in found]
        return [r for r in records if r.kind == kind]

    def finished_keys(self, kind: str = Kinds.RUN) -> set[str]:
        return set(self.finished(kind))

    def finished(self, kind: str = Kinds.RUN) -> dict[str, dict[str, Any]]:
        """run_key → the newest FINISHED run of that kind: its ``run_id`` and final metrics."""
        found: dict[str, dict[str, Any]] = {}
        for r in self.runs():  # newest first
            if r.finished and r.kind == kind:
                found.setdefault(r.tag(Tags.RUN_KEY, ""), {"run_id": r.run_id, **r.metrics})
        return found

    def fail_running(
        self,
        key: str | None,
        error: str,
        *,
        since_ms: int = 0,
        status: str = "FAILED",
        owner: dict[str, str] | None = None,
    ) -> bool:
        """End the RUNNING run(s) of ``key`` (None: any) started since ``since_ms`` with ``error``.

        For a trial whose process died (OOM, SIGKILL) before it could end its own run
        (FAILED), or one stopped by Ctrl-C (KILLED). ``owner`` (``store.claimant()``) limits
        it to the runs this command claimed: another command's runs are never ended.
        """

        running = [
            r
            for r in self.runs()
            if r.status == "RUNNING"
            and key in (None, r.tag(Tags.RUN_KEY))
            and r.start_time >= since_ms
            and (owner is None or owned_by(r.tags, owner, TAG))
        ]
        for r in running:
            TrackedRun(self.client, r.run_id).end(status, error)
        return bool(running)

    def mark_stale(self, keys: set[str]) -> int:
        """Runs left RUNNING by a killed command (same run_key about to be redone) → KILLED.

        A RUNNING run whose claimant still lives (another command on it) is left alone.
        """

        stale = [
            r
            for r in self.runs()
            if r.status == "RUNNING" and r.tag(Tags.RUN_KEY) in keys and not alive(r.tags, TAG)
        ]
        for r in stale:
            TrackedRun(self.client, r.run_id).end("KILLED", "left RUNNING by a killed command")
        return len(stale)


class TrackedRun:
    """One run being written (names from ``record``; tags get the ``benchsuite.`` prefix)."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @retry_locked
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    @retry_locked
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
        )

    @retry_locked
    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(TAG + k, str(v)) for k, v in tags.items()])

    @retry_locked
    def log_json(self, name: str, obj: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(obj, indent=1, sort_keys=True))
            self.client.log_artifact(self.run_id, str(path))

    @retry_locked
    def log_file(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def adopt(self, source: RunRecord) -> None:
        """Take ``source``'s results: every metric's history (its steps and timestamps), the
        tags this run does not set itself (the results', e.g. the device and numerics), and
        its artifacts. For a run key that finished in another experiment of the same store:
        the same configuration, data, steps and numerics, so the same numbers."""
        from mlflow.entities import RunTag

        client, call = self.client, retry_locked
        history = [
            m for key in source.metrics for m in call(client.get_metric_history)(source.run_id, key)
        ]
        for i in range(0, len(history), 1000):
            call(client.log_batch)(self.run_id, metrics=history[i : i + 1000])
        own = call(client.get_run)(self.run_id).data.tags
        tags = [RunTag(k, v) for k, v in source.tags.items() if k.startswith(TAG) and k not in own]
        for i in range(0, len(tags), 100):
            call(client.log_batch)(self.run_id, tags=tags[i : i + 100])
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(call(client.download_artifacts)(source.run_id, "", tmp))
            if any(local.iterdir()):
                call(client.log_artifacts)(self.run_id, str(local))

    @retry_locked
    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        from mlflow.entities import RunStatus

        if error is not None:
            self.client.set_tag(self.run_id, TAG + Tags.ERROR, error[:5000])
        self.client.set_terminated(
            self.run_id, status=RunStatus.to_string(RunStatus.from_string(status))
        )


def _record(run: Any, experiment: str = "") -> RunRecord:
    """An MLflow run as plain data (MLflow's own ``mlflow.*`` tags left out)."""
    info, data = run.info, run.data
    return RunRecord(
        run_id=info.run_id,
        status=str(info.status),
        start_time=int(info.start_time or 0),
        end_time=None if info.end_time is None else int(info.end_time),
        params=dict(data.params),
        metrics={k: float(v) for k, v in data.metrics.items()},
        tags={k: v for k, v in data.tags.items() if not k.startswith("mlflow.")},
        experiment=experiment,
    )


def _paged(search: Callable[[str | None], Any]) -> list[Any]:
    """Every item of a paged MLflow search (``search(page_token)`` returns one page)."""
    out: list[Any] = []
    token = None
    while True:
        page = search(token)
        out.extend(page)
        token = page.token
        if not token:
            return out


class Reader:
    """A store read, never written: its experiments, their runs, a run's artifacts. A SQLite
    store is opened read-only (``sqlite.read_only_uri``), without its lock."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=read_only_uri(uri))

    def _experiments(self) -> list[Any]:
        return _paged(lambda t: self.client.search_experiments(max_results=1000, page_token=t))

    def experiments(self) -> list[str]:
        """Names of the active experiments that hold at least one run, sorted."""
        return sorted(
            e.name
            for e in self._experiments()
            if self.client.search_runs([e.experiment_id], max_results=1)
        )

    def newest_experiment(self) -> str | None:
        """The experiment whose newest run started last: what the user most likely just ran."""
        ids = [e.experiment_id for e in self._experiments()]
        if not ids:
            return None
        newest = self.client.search_runs(
            ids, max_results=1, order_by=["attributes.start_time DESC"]
        )
        if not newest:
            return None
        return self.client.get_experiment(newest[0].info.experiment_id).name

    def runs(self, experiment: str, filter_string: str = "") -> list[RunRecord]:
        """Every run of ``experiment`` (every kind and status; MLflow's order, newest first).

        Raises ``KeyError`` when the store has no such experiment.
        """
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            raise KeyError(f"no MLflow experiment named {experiment!r} at {self.uri}")
        found = _paged(
            lambda t: self.client.search_runs(
                [exp.experiment_id], filter_string, max_results=1000, page_token=t
            )
        )
        return [_record(r, experiment) for r in found]

    def finished_elsewhere(self, keys: set[str], kind: str, besides: str) -> dict[str, RunRecord]:
        """Run key (of ``keys``) → the newest FINISHED run of ``kind`` with that key in an
        experiment other than ``besides``."""
        names = {e.experiment_id: e.name for e in self._experiments() if e.name != besides}
        if not keys or not names:
            return {}
        found = _paged(
            lambda t: self.client.search_runs(
                list(names),
                "attributes.status = 'FINISHED'",
                max_results=1000,
                order_by=["attributes.start_time DESC"],
                page_token=t,
            )
        )
        out: dict[str, RunRecord] = {}
        for run in found:
            rec = _record(run, names[run.info.experiment_id])
            if rec.kind == kind and rec.run_key in keys:
                out.setdefault(rec.run_key, rec)
        return out

    def download(self, run_id: str, name: str, dst: Path) -> Path:
        """A run's artifact ``name`` (an ``record.Artifacts`` name), copied into ``dst``."""
        return Path(self.client.download_artifacts(run_id, name, str(dst)))

    def read_json(self, run_id: str, name: str) -> Any | None:
        """A run's JSON artifact, or None when it has none (or it cannot be read)."""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                return json.loads(self.download(run_id, name, Path(tmp)).read_text("utf-8"))
        except Exception:  # noqa: BLE001 - no artifact (or unreadable): nothing to read
            return None

"""The only module that knows MLflow's names: experiments, runs, params, metrics, tags.

It talks to MLflow through ``MlflowClient`` (no global active run), so several trials in one
process or on several Ray nodes can write at once. SQLite stores can answer "database is
locked" under concurrent writers; every call is retried with backoff.
"""

from __future__ import annotations

import functools
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TAG = "benchsuite."
FINAL_METRICS = (
    "test_accuracy", "test_top5", "val_accuracy", "sparsity", "theoretical_speedup",
    "flops_dense", "flops_sparse", "train_img_per_s", "train_steps", "train_images", "wall_time_s",
)  # fmt: skip

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


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def artifact_root(uri: str, experiment: str) -> str | None:
    """Beside a local SQLite store, artifacts go to ``mlartifacts/`` next to the database."""
    if not is_sqlite(uri):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlartifacts" / experiment).as_uri()


class Tracker:
    """One MLflow experiment: where the runs of one benchmark go."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=uri)
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
    def runs(self) -> list[Any]:
        """All runs of the experiment (every status), newest first."""
        return self.client.search_runs(
            [self.experiment_id], max_results=50_000, order_by=["attributes.start_time DESC"]
        )

    def finished_keys(self) -> set[str]:
        return {
            r.data.tags.get(TAG + "run_key", "")
            for r in self.runs()
            if r.info.status == "FINISHED" and r.data.tags.get(TAG + "kind", "run") == "run"
        }

    def mark_stale(self, keys: set[str]) -> int:
        """Runs left RUNNING by a killed command (same run_key about to be redone) → KILLED."""
        stale = [
            r for r in self.runs()
            if r.info.status == "RUNNING" and r.data.tags.get(TAG + "run_key") in keys
        ]  # fmt: skip
        for r in stale:
            TrackedRun(self.client, r.info.run_id).end("KILLED", "left RUNNING by a killed command")
        return len(stale)


class TrackedRun:
    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @retry_locked
    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    @retry_locked
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
        )

    @retry_locked
    def set_tags(self, tags: dict[str, str]) -> None:
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

    @retry_locked
    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        if error is not None:
            self.client.set_tag(self.run_id, TAG + "error", error[:5000])
        self.client.set_terminated(
            self.run_id, status=RunStatus.to_string(RunStatus.from_string(status))
        )

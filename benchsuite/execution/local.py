"""The plain in-process executor (no Ray): ``ray_tune.run_grid``'s interface and records, one
run after another in this process: for tests, notebooks and debugging (a breakpoint in a method
stops here).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from benchsuite.core.record import Kinds
from benchsuite.data.base import Dataset
from benchsuite.execution.cluster import (
    Cluster,
    ResourceError,
    Resources,
    resolve_numerics,
)
from benchsuite.execution.common import (
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
from benchsuite.store.sqlite import absolute_uri
from benchsuite.store.tracking import Tracker
from benchsuite.training.loop import Progress, RunConfig
from benchsuite.training.runner import execute, first_line


def run_local(
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
    """``run_grid`` without Ray: every unfinished run in turn, in this process.

    ``resources`` gives the torch threads (``cpus_per_trial``), the device and ``retries``;
    an ``address`` and a ``search`` (a Ray Tune searcher) are refused. A Ctrl-C ends the grid:
    its runs end KILLED.
    """
    import torch

    started = time.perf_counter()
    resources = resources or Resources()
    if resources.address is not None:
        raise ResourceError(f"--address {resources.address}: the in-process executor uses no Ray")
    if search is not None:
        raise ResourceError(
            "a search draws its trials through Ray Tune: run it without --in-process"
        )
    uri = absolute_uri(tracking_uri)
    gpus = float(torch.cuda.device_count() if resources.num_gpus is None else resources.num_gpus)
    node = {"NodeID": "local", "Resources": {"CPU": float(os.cpu_count() or 1), "GPU": gpus}}
    here = Cluster([node], local=True, client=False)
    configs = resolve_numerics(configs, resources, here)
    keys, todo = pending_runs(configs, data, uri, experiment, kind)
    outcome = Outcome(skipped=len(configs) - len(todo), configs=configs)
    left = adopt_finished(configs, keys, todo, data, uri, experiment, kind=kind, command=command)
    outcome.adopted, todo = len(todo) - len(left), left
    if not todo:
        return outcome
    owner, since_ms = claimant(), int(time.time() * 1000) - 1000
    records = {keys[i]: TrialRecord(configs[i].label(), keys[i]) for i in todo}
    state = GridState(
        records,
        GridProgress(
            ((keys[i], configs[i].label(), configs[i].preset.epochs) for i in todo),
            outcome.skipped,
            console or Console(),
        ),
    )
    tracker = None
    threads = torch.get_num_threads()
    try:
        tracker = open_tracker(uri, experiment, set(records))
        with state.view:
            for i in todo:
                torch.set_num_threads(configs[i].threads)
                _attempts(
                    state,
                    keys[i],
                    configs[i],
                    tracker,
                    data,
                    resources.retries,
                    since_ms,
                    cache_dir=cache_dir,
                    command=command,
                    kind=kind,
                    owner=owner,
                )
    except KeyboardInterrupt:
        for rec in records.values():
            if rec.status in ("PENDING", "RUNNING"):
                rec.status = "INTERRUPTED"
    finally:
        torch.set_num_threads(threads)
        end_leftovers(tracker, owner, since_ms)
    outcome.retried = state.retried
    return outcome.tally([records[keys[i]] for i in todo], started)


def _attempts(
    state: GridState,
    key: str,
    config: RunConfig,
    tracker: Tracker,
    data: Dataset,
    retries: int,
    since_ms: int,
    **run: Any,
) -> None:
    """Run one configuration, again while it fails, up to ``retries`` more times, feeding
    ``state`` the same events as the Ray Tune watcher does."""
    for attempt in range(retries + 1):
        if attempt:
            state.apply("retry", key, {"hard": False})
        state.apply(
            "start",
            key,
            {"label": config.label(), "epochs": config.preset.epochs, "config": config},
        )
        reads, t0 = data.test_reads, time.perf_counter()

        def on_epoch(p: Progress) -> None:
            state.apply(
                "epoch", key, {"epoch": p.epoch, "epochs": p.epochs, "val_accuracy": p.val_accuracy}
            )

        try:
            status, result, error = execute(config, tracker, dataset=data, on_epoch=on_epoch, **run)
        except Exception as exc:  # noqa: BLE001 - the store failed before the run existed
            status, result, error = "FAILED", None, f"{type(exc).__name__}: {first_line(exc)}"
        if status == "FAILED":  # its store writes may have failed: FAILED in the store anyway
            why = record_failed(
                tracker,
                key,
                config,
                data,
                error or "",
                since_ms=since_ms,
                owner=run["owner"],
                command=run["command"],
                node="local",
                kind=run["kind"],
            )
            if why:
                error = f"{error} (and the store did not take the failure: {why})"
        state.apply(
            "final",
            key,
            final_report(
                status,
                result,
                error,
                node="local",
                test_reads=data.test_reads - reads,
                trial_s=time.perf_counter() - t0,
            ),
        )
        if status != "FAILED":
            break

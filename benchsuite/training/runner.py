"""Run one configuration and record it as one MLflow run, FAILED with its error if it raises.

Both the sequential path and every Ray Tune trial go through ``execute``, so a run is
recorded the same way wherever it ran.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import traceback
from pathlib import Path
from typing import Any

from benchsuite import __version__
from benchsuite.core.identity import RunConfig, preset_budget, run_key
from benchsuite.core.record import Artifacts, Kinds, Metrics, Params, Tags
from benchsuite.data.base import Dataset, load_dataset
from benchsuite.pruning.deploy import save_program
from benchsuite.pruning.patterns import UNSTRUCTURED
from benchsuite.store.claims import claim
from benchsuite.store.owners import claimant
from benchsuite.store.tracking import TrackedRun, Tracker
from benchsuite.training import turns
from benchsuite.training.loop import EpochCallback, Progress, RunResult, train_run


def run_params(config: RunConfig) -> dict[str, Any]:
    preset = config.preset
    params: dict[str, Any] = {
        Params.METHOD: config.method,
        Params.VARIANT: config.variant(),
        Params.TARGET_SPARSITY: config.target,
        Params.PRESET: preset.name,
        Params.DATASET: preset.dataset,
        Params.MODEL: preset.model,
        Params.EPOCHS: preset.epochs,
        Params.BATCH_SIZE: preset.batch_size,
        Params.LR: preset.optimizer.lr,
        Params.SEED: config.seed,
    }
    if config.pattern != UNSTRUCTURED:
        params[Params.PATTERN] = config.pattern
    for name, value in dataclasses.asdict(config.hp()).items():
        params[f"{Params.HP}{name}"] = value
    return params


def key_for(config: RunConfig, data: Dataset) -> str:
    """The run's key: its configuration and the steps its plan takes on ``data``."""
    budget = preset_budget(config.preset, data)
    plan = config.method_cls().plan(budget, config.hp(), config.target, config.preset.schedule)
    return run_key(config, data.fingerprint, plan.total_steps)


def execute(
    config: RunConfig,
    tracker: Tracker,
    *,
    dataset: Dataset | None = None,
    cache_dir: Path | None = None,
    command: str = "",
    node: str = "local",
    on_epoch: EpochCallback | None = None,
    kind: str = Kinds.RUN,
    owner: dict[str, str] | None = None,
) -> tuple[str, RunResult | None, str | None]:
    """Claim, train and record one run. Returns (status, result, error); never raises for a
    run error, including one in recording its results (a full disk): the run ends FAILED with
    it, or, where the store cannot even take that, the error says so and the caller ends it
    (``execution.common.record_failed``). Status SKIPPED (error: why) where the run key is
    finished or another live command has claimed it (``store.claim``). The claim itself can
    raise (the store fails before the run exists).

    ``kind`` is ``run`` for benchmark runs and ``tune`` for tuning trials (leaderboards and
    resume count only their own kind). ``owner`` names the claimant (default: this process).
    """
    data = dataset or load_dataset(
        config.preset.dataset, config.data_dir, split_seed=config.split_seed
    )
    tags = {
        **(owner or claimant()),
        **run_tags(config, data, command=command, node=node, kind=kind),
    }
    run = claim(tracker, tags[Tags.RUN_KEY], kind, config.label(), run_params(config), tags)
    if isinstance(run, str):
        return "SKIPPED", None, run
    try:
        with turns.training():  # another command's timing phase waits for it (turns.py)
            result = train_run(
                config, dataset=data, cache_dir=cache_dir, on_epoch=recorder(run, on_epoch)
            )
        record_result(run, result)  # a full disk fails here: the run failed, and says why
        run.end("FINISHED")
    except Exception as exc:  # noqa: BLE001 - one run's crash never loses the others
        error = f"{type(exc).__name__}: {exc}"
        try:
            run.end("FAILED", error + "\n" + traceback.format_exc())
        except Exception as store:  # noqa: BLE001 - the store fails too: the caller ends it
            error += f" (ending the run in the store failed too: {type(store).__name__}: "
            error += f"{first_line(store)})"
        return "FAILED", None, error
    return "FINISHED", result, None


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def recorder(run: TrackedRun, on_epoch: EpochCallback | None) -> EpochCallback:
    """Every epoch's curve point to the run (a cached prefix's too); the epochs trained here
    to ``on_epoch`` (Ray Tune's reports, progress displays)."""

    def report(progress: Progress) -> None:
        run.log_metrics(progress.metrics, progress.step)
        if on_epoch is not None and not progress.replayed:
            on_epoch(progress)

    return report


def run_tags(
    config: RunConfig, data: Dataset, *, command: str, node: str, kind: str
) -> dict[str, str]:
    return {
        Tags.VERSION: __version__,
        Tags.RUN_KEY: key_for(config, data),
        Tags.NODE: node,
        Tags.TUNED: str(config.tuned).lower(),
        Tags.DATA: data.fingerprint,
        Tags.COMMAND: command,
        Tags.KIND: kind,
    }


def record_failure(
    config: RunConfig,
    tracker: Tracker,
    data: Dataset,
    error: str,
    *,
    command: str = "",
    node: str = "unknown",
    kind: str = Kinds.RUN,
) -> str:
    """A FAILED run for a trial that died before it could record itself (never dropped)."""
    tags = run_tags(config, data, command=command, node=node, kind=kind)
    run = tracker.start_run(config.label(), run_params(config), tags)
    run.end("FAILED", error)
    return run.run_id


def record_result(run: TrackedRun, result: RunResult) -> None:
    # Final values are logged last, at the final step, so MLflow's latest value is the final one.
    step = int(result.metrics[Metrics.TRAIN_STEPS])
    run.log_metrics(result.metrics, step)
    run.set_tags(result.tags)
    run.log_json(Artifacts.LAYER_SPARSITY, result.layer_sparsity)
    if result.model is not None:
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Artifacts.MODEL
            state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
            save_file(state, str(path), metadata={"format": "pt", "params": json.dumps({})})
            run.log_file(path)
    if result.deployed is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Artifacts.DEPLOYED
            try:
                save_program(result.deployed, result.input_shape, path)
            except Exception as exc:  # noqa: BLE001 - the run and its weights are recorded
                run.set_tags({Tags.DEPLOYED_EXPORT_ERROR: f"{type(exc).__name__}: {exc}"})
            else:
                run.log_file(path)

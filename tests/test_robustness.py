"""Ctrl-C at any moment, a corrupt cache entry, numerics in the run identity, names
that look like markup, intervals inside the metric's range."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from benchsuite.boards.stats import Stat
from benchsuite.cli.app import app
from benchsuite.execution import ray_tune as orchestrate
from benchsuite.execution.cluster import Cluster, Resources, resolve_numerics
from benchsuite.execution.progress import GridProgress
from benchsuite.execution.ray_tune import run_grid
from benchsuite.store.claims import claim
from benchsuite.store.sqlite import check_store
from benchsuite.store.tracking import Tracker
from benchsuite.training.loop import RunConfig, numerics, train_run
from benchsuite.training.runner import key_for, run_params

ROOT = Path(__file__).resolve().parent.parent


def statuses(uri: str, experiment: str) -> list[str]:
    check_store(uri)  # waits for a store another thread is still creating
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else [r.info.status for r in client.search_runs([exp.experiment_id])]


@contextmanager
def no_ray(*args, **kwargs):
    """Stands in for the Ray instance: the tests below interrupt before any trial runs."""
    node = {"NodeID": "local", "Resources": {"CPU": 2.0, "GPU": 0.0}}
    yield Cluster([node], local=True, client=False)


@pytest.mark.integration  # a real MLflow store
@pytest.mark.parametrize("where", ["starting Ray", "before the first trial", "mid-grid"])
def test_ctrl_c_at_any_moment_leaves_nothing_running(
    tiny_preset, tiny_data, tmp_path, monkeypatch, where
):
    uri = f"sqlite:///{tmp_path}/m.db"
    configs = [RunConfig(tiny_preset, "dense", 0.0, s) for s in range(3)]

    @contextmanager
    def interrupted_ray(*args, **kwargs):
        raise KeyboardInterrupt
        yield  # pragma: no cover

    def fit(job, runs, *args, **kwargs):
        tracker = Tracker(job.tracking_uri, job.experiment)
        claimed = runs[:1] if where == "before the first trial" else runs[:2]
        for run in claimed:  # trials that claimed their run (one finished, mid-grid)
            c = run["config"]
            mlflow_run = claim(
                tracker,
                run["key"],
                "run",
                c.label(),
                run_params(c),
                {**job.owner, "run_key": run["key"], "kind": "run"},
            )
            if where == "mid-grid" and run is runs[0]:
                mlflow_run.end("FINISHED")
        raise KeyboardInterrupt

    monkeypatch.setattr(
        orchestrate, "ray_instance", interrupted_ray if where == "starting Ray" else no_ray
    )
    monkeypatch.setattr(orchestrate, "_fit", fit)
    outcome = run_grid(configs, tiny_data, uri, "exp", console=Console(file=open(os.devnull, "w")))
    assert outcome.interrupted == 3 and outcome.finished == 0
    assert "RUNNING" not in statuses(uri, "exp")
    if where != "starting Ray":
        assert "KILLED" in statuses(uri, "exp")


@pytest.mark.slow
def test_sigint_to_the_command_exits_130_with_nothing_running(tmp_path):
    """The real command, interrupted once its store exists (while Ray starts or the first
    trials begin): exit 130, no traceback, nothing left RUNNING."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from benchsuite.cli.console import main; main()",
            "run",
            "--methods",
            "dense",
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--no-throughput",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "mlflow.db").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode in (130, 0), out + err  # 0: it was already done (a fast machine)
    assert "Traceback" not in err, err
    assert "RUNNING" not in statuses(f"sqlite:///{tmp_path}/mlflow.db", "digits-1ep")


@pytest.mark.integration
def test_a_corrupt_cached_dense_checkpoint_is_rebuilt(tiny_preset, tiny_data, tmp_path):
    cfg = RunConfig(tiny_preset, "imp", 0.9, 0, hparams=(("retrain_fraction", "0.25"),))
    first = train_run(cfg, dataset=tiny_data, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.pt")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # truncated
    with pytest.warns(RuntimeWarning, match="is corrupt"):
        again = train_run(cfg, dataset=tiny_data, cache_dir=tmp_path)
    assert again.tags["cached_dense"] == "false" and "corrupt" in again.tags["cache_warning"]
    assert again.metrics["test_accuracy"] == first.metrics["test_accuracy"]
    third = train_run(cfg, dataset=tiny_data, cache_dir=tmp_path)  # the rebuilt entry loads
    assert third.tags["cached_dense"] == "true" and "cache_warning" not in third.tags


def test_numerics_are_part_of_the_run_key(tiny_preset, tiny_data):
    one = RunConfig(tiny_preset, "dense", 0.0, 0)
    two = RunConfig(tiny_preset, "dense", 0.0, 0, threads=2)
    assert key_for(one, tiny_data) != key_for(two, tiny_data)
    assert key_for(one, tiny_data) == key_for(RunConfig(tiny_preset, "dense", 0.0, 0), tiny_data)
    n = numerics(one)
    assert n["torch"] == torch.__version__ and n["threads"] == 1 and n["device"].startswith("cpu")
    amp = RunConfig(tiny_preset.replace(amp=True), "dense", 0.0, 0, device="cuda")
    assert numerics(amp)["amp"] == "bfloat16" and numerics(amp)["threads"] is None
    cpus = resolve_numerics([one], Resources(cpus_per_trial=2.5, device="cpu"), None)
    assert cpus[0].threads == 2


def test_only_what_changes_a_runs_numbers_is_in_its_key(tiny_preset, tiny_data):
    """Another method's calibration and the preset's prose leave a run's key alone; its own
    calibrated value (a resolved hyperparameter) does not."""
    base = RunConfig(tiny_preset, "gmp", 0.9, 0)
    recalibrated = tiny_preset.replace(
        calibration={"str": {"0.9": {"weight_decay": 0.007}}},
        sources={"lr": "reworded"},
        description="another text",
    )
    assert key_for(base, tiny_data) == key_for(RunConfig(recalibrated, "gmp", 0.9, 0), tiny_data)
    str_run = RunConfig(tiny_preset, "str", 0.9, 0)
    calibrated = RunConfig(recalibrated, "str", 0.9, 0, calibrated=(("weight_decay", "0.007"),))
    assert key_for(str_run, tiny_data) != key_for(calibrated, tiny_data)
    longer = RunConfig(tiny_preset.replace(epochs=5), "gmp", 0.9, 0)
    assert key_for(base, tiny_data) != key_for(longer, tiny_data)


def test_the_progress_prints_names_as_text_not_markup(tiny_preset):
    cfg = RunConfig(tiny_preset, "imp", 0.9, 0, hparams=(("schedule", "ft"),))
    console = Console(record=True, width=200, color_system=None)
    view = GridProgress([("k", cfg.label(), 4)], 0, console)
    view.start("k")
    console.print(view)
    view.end("k", "FINISHED", val_accuracy=91.0)
    text = console.export_text()
    assert text.count("imp[schedule=ft]") == 2, text


def test_the_interval_never_leaves_the_metrics_range():
    stat = Stat.of([99.9, 96.0], (0.0, 100.0))
    assert stat.ci95 is not None and stat.ci95[1] == 100.0 and stat.ci95[0] >= 0.0
    assert Stat.of([99.9, 96.0]).ci95[1] > 100.0  # unbounded metrics are left as they are


@pytest.mark.integration  # a real MLflow store
def test_cli_reports_runs_another_command_holds(tmp_path, monkeypatch):
    """A run claimed by another live command is skipped and the summary says so."""
    from benchsuite.execution.common import Outcome
    from benchsuite.store.sqlite import absolute_uri

    def grid(configs, data, uri, experiment, **kwargs):
        Tracker(absolute_uri(uri), experiment)  # the other command's experiment
        return Outcome(claimed=1, claims=["dense@0/s0: being run by another command (pid 7)"])

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(orchestrate, "run_grid", grid)
    result = CliRunner().invoke(app, ["run", "--methods", "dense", "--no-throughput"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "1 skipped (another command finished or is running them)" in out
    assert "skipped dense@0/s0: being run by another command" in out

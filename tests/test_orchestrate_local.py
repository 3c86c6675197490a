"""The in-process executor (``executor.run_local``, ``--in-process``): the same grid, records,
resume, failure isolation, retries and Ctrl-C handling as ``run_grid``, without Ray. And the
reaper that cleans up after a killed command's local Ray instance."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from benchsuite.cli.app import app
from benchsuite.execution import local as executor
from benchsuite.execution import reaper
from benchsuite.execution.cluster import ResourceError, Resources
from benchsuite.execution.local import run_local
from benchsuite.store.owners import process_start
from benchsuite.training.loop import RunConfig
from tests.test_orchestrate import digits_request, write_plugin

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - for the module's lifetime


def runs_of(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


@pytest.mark.integration
def test_runs_every_config_in_process_and_resumes(tiny_preset, tiny_data, tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    configs = [RunConfig(tiny_preset, "dense", 0.0, s) for s in range(2)]
    outcome = run_local(configs, tiny_data, uri, "local", console=QUIET)
    assert (outcome.finished, outcome.failed, outcome.skipped) == (2, 0, 0)
    runs = runs_of(uri, "local")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert {r.data.tags["benchsuite.node"] for r in runs} == {"local"}
    assert all(rec.val_accuracy is not None and rec.attempts == 1 for rec in outcome.trials)
    again = run_local(configs, tiny_data, uri, "local", console=QUIET)
    assert (again.finished, again.skipped) == (0, 2)
    assert "0 finished, 0 failed, 2 skipped (already finished)" in again.summary()


@pytest.mark.integration
def test_a_key_finished_in_another_experiment_is_copied_not_trained(
    tiny_preset, tiny_data, tmp_path
) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    (first,) = run_local([RunConfig(tiny_preset, "gmp", 0.5, 0)], tiny_data, uri, "defaults").trials
    # The tuned board: GMP's tuning kept its defaults (the same key) and a new seed.
    configs = [RunConfig(tiny_preset, "gmp", 0.5, s, tuned=True) for s in (0, 1)]
    outcome = run_local(configs, tiny_data, uri, "tuned", console=QUIET)
    assert (outcome.adopted, outcome.finished, outcome.skipped) == (1, 1, 0)
    assert "1 copied (finished in another experiment of the store)" in outcome.summary()
    client = MlflowClient(uri)
    (source,) = runs_of(uri, "defaults")
    copy = next(r for r in runs_of(uri, "tuned") if r.data.params["seed"] == "0")
    tags = copy.data.tags
    assert tags["benchsuite.adopted_from"] == f"defaults/{source.info.run_id}"
    assert tags["benchsuite.run_key"] == source.data.tags["benchsuite.run_key"] == first.key
    assert tags["benchsuite.tuned"] == "true" and copy.data.params["variant"] == "tuned"
    assert tags["benchsuite.device"] == source.data.tags["benchsuite.device"]
    assert copy.info.status == "FINISHED" and copy.data.metrics == source.data.metrics
    curve = [(m.step, m.value) for m in client.get_metric_history(copy.info.run_id, "val_accuracy")]
    assert curve == [
        (m.step, m.value) for m in client.get_metric_history(source.info.run_id, "val_accuracy")
    ]
    assert len(curve) == tiny_preset.epochs + 1  # every epoch, then the finalized model
    names = {a.path for a in client.list_artifacts(copy.info.run_id)}
    assert {"model.safetensors", "layer_sparsity.json"} <= names
    again = run_local(configs, tiny_data, uri, "tuned", console=QUIET)
    assert (again.adopted, again.finished, again.skipped) == (0, 0, 2)


@pytest.mark.integration
def test_threads_per_trial_are_part_of_the_run(tiny_preset, tiny_data, tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    configs = [RunConfig(tiny_preset, "dense", 0.0, 0)]
    outcome = run_local(
        configs,
        tiny_data,
        uri,
        "t",
        console=QUIET,
        resources=Resources(cpus_per_trial=2, device="cpu"),
    )
    assert outcome.configs[0].threads == 2 and outcome.finished == 1
    (run,) = runs_of(uri, "t")
    assert run.data.tags["benchsuite.device"] == "cpu:2 threads"


def test_an_address_is_refused(tiny_preset, tiny_data, tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    with pytest.raises(ResourceError, match="in-process"):
        run_local(
            [RunConfig(tiny_preset, "dense", 0.0, 0)],
            tiny_data,
            uri,
            "x",
            resources=Resources(address="auto"),
        )
    assert not (tmp_path / "m.db").exists()


@pytest.fixture
def plugin(tmp_path_factory: pytest.TempPathFactory):
    from benchsuite.core import method as method_module

    root = write_plugin(tmp_path_factory.mktemp("plugin"))
    sys.modules.pop("bs_testplugin", None)  # another test's copy has used its flaky marker
    sys.path.insert(0, str(root))
    method_module.method_registry.cache_clear()
    yield root
    sys.path.remove(str(root))
    sys.modules.pop("bs_testplugin", None)
    method_module.method_registry.cache_clear()


@pytest.mark.integration
def test_failures_are_isolated_and_retried(plugin, tmp_path) -> None:
    configs, data = digits_request(["explode", "flaky", "dense"], [0.5], 1, epochs=2)
    uri = f"sqlite:///{tmp_path}/m.db"
    outcome = run_local(configs, data, uri, "fail", console=QUIET, resources=Resources(retries=1))
    assert (outcome.finished, outcome.failed, outcome.retried) == (2, 1, 2)
    by_method: dict[str, list[str]] = {}
    for run in runs_of(uri, "fail"):
        by_method.setdefault(run.data.params["method"], []).append(run.info.status)
    assert sorted(by_method["explode"]) == ["FAILED", "FAILED"]  # both attempts recorded
    assert sorted(by_method["flaky"]) == ["FAILED", "FINISHED"]
    assert by_method["dense"] == ["FINISHED"]
    failed = next(r for r in outcome.trials if r.status == "FAILED")
    assert "boom in epoch 2" in failed.error and failed.attempts == 2


@pytest.mark.integration
def test_ctrl_c_ends_the_grid_with_nothing_running(
    tiny_preset, tiny_data, tmp_path, monkeypatch
) -> None:
    real = executor.execute
    calls = []

    def interrupted(config, tracker, **kwargs):
        calls.append(config)
        if len(calls) == 2:  # the second run: claimed, then Ctrl-C mid-training

            def stop(progress):
                raise KeyboardInterrupt

            kwargs["on_epoch"] = stop
        return real(config, tracker, **kwargs)

    monkeypatch.setattr(executor, "execute", interrupted)
    uri = f"sqlite:///{tmp_path}/m.db"
    configs = [RunConfig(tiny_preset, "dense", 0.0, s) for s in range(3)]
    outcome = run_local(configs, tiny_data, uri, "c", console=QUIET)
    assert (outcome.finished, outcome.interrupted) == (1, 2)
    statuses = sorted(r.info.status for r in runs_of(uri, "c"))
    assert statuses == ["FINISHED", "KILLED"]


@pytest.mark.integration
def test_the_command_runs_in_process(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--in-process",
            "--methods",
            "dense",
            "--epochs",
            "1",
            "--no-throughput",
            "--experiment",
            "cli",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 finished, 0 failed" in " ".join(result.stdout.split())
    (run,) = runs_of(f"sqlite:///{tmp_path}/mlflow.db", "cli")
    assert run.info.status == "FINISHED"


# --------------------------------------------------------------------------- the reaper


def test_the_reaper_kills_recorded_processes_and_removes_the_scratch(tmp_path: Path) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        started = process_start(victim.pid)
        reaper.reap(str(scratch), [(victim.pid, started), (other.pid, "1")])  # 1: not its start
        assert victim.wait(timeout=10) == -9
        assert other.poll() is None  # a pid whose start does not match is another process
        assert not scratch.exists()
    finally:
        victim.kill()
        other.kill()
        other.wait()


def test_the_reaper_does_nothing_when_told_done(tmp_path: Path) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "scratch").mkdir()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "benchsuite.execution.reaper",
                str(tmp_path / "scratch"),
                f"{victim.pid}:{process_start(victim.pid)}",
            ],
            stdin=subprocess.PIPE,
        )
        reaper.stop(proc)
        assert proc.returncode == 0
        time.sleep(0.2)
        assert victim.poll() is None and (tmp_path / "scratch").exists()
    finally:
        victim.kill()
        victim.wait()


DISK_FULL = "database or disk is full"


def full_disk_at_the_final_write(monkeypatch, *, and_after: bool) -> None:
    """The store's disk fills as a run writes its final metrics (SQLite's own error, injected
    where the store writes); with ``and_after`` it stays full, so the FAILED end fails too."""
    import sqlite3

    from benchsuite.store.tracking import TrackedRun

    log_metrics, end = TrackedRun.log_metrics, TrackedRun.end
    full: set[str] = set()

    def failing_log_metrics(self, metrics, step=0):
        if "test_accuracy" in metrics:
            full.add(self.run_id)
            raise sqlite3.OperationalError(DISK_FULL)
        return log_metrics(self, metrics, step)

    def failing_end(self, status="FINISHED", error=None):
        if and_after and self.run_id in full:
            raise sqlite3.OperationalError(DISK_FULL)
        return end(self, status, error)

    monkeypatch.setattr(TrackedRun, "log_metrics", failing_log_metrics)
    monkeypatch.setattr(TrackedRun, "end", failing_end)


@pytest.mark.integration
def test_a_full_disk_at_the_final_write_says_why(tiny_preset, tiny_data, tmp_path, monkeypatch):
    """The run ends FAILED with SQLite's reason, on the command's line and in its error tag."""
    import io

    full_disk_at_the_final_write(monkeypatch, and_after=False)
    uri = f"sqlite:///{tmp_path}/m.db"
    out = io.StringIO()
    configs = [RunConfig(tiny_preset.replace(epochs=1), "dense", 0.0, 0)]
    outcome = run_local(configs, tiny_data, uri, "full", console=Console(file=out, width=300))
    assert (outcome.finished, outcome.failed) == (0, 1)
    assert outcome.trials[0].error.startswith(f"OperationalError: {DISK_FULL}")
    assert f"FAILED dense@0/s0: OperationalError: {DISK_FULL}" in out.getvalue()
    (run,) = runs_of(uri, "full")
    assert run.info.status == "FAILED"
    assert run.data.tags["benchsuite.error"].startswith(f"OperationalError: {DISK_FULL}")


@pytest.mark.integration
def test_a_disk_that_stays_full_still_names_the_cause(
    tiny_preset, tiny_data, tmp_path, monkeypatch
):
    """Nothing can end the run (the trial's end and the executor's both hit the full disk): the
    error on the command's line says so and names the cause; the command does not crash."""
    full_disk_at_the_final_write(monkeypatch, and_after=True)
    uri = f"sqlite:///{tmp_path}/m.db"
    configs = [RunConfig(tiny_preset.replace(epochs=1), "dense", 0.0, 0)]
    outcome = run_local(configs, tiny_data, uri, "full", console=QUIET)
    error = outcome.trials[0].error
    assert outcome.failed == 1 and error.startswith(f"OperationalError: {DISK_FULL}")
    assert f"ending the run in the store failed too: OperationalError: {DISK_FULL}" in error
    assert f"the store did not take the failure: OperationalError: {DISK_FULL}" in error
    (run,) = runs_of(uri, "full")
    assert run.info.status == "RUNNING"  # a later command ends it (its claimant is gone)


@pytest.mark.integration
def test_the_command_line_names_a_full_disk(tmp_path, monkeypatch):
    full_disk_at_the_final_write(monkeypatch, and_after=False)
    monkeypatch.chdir(tmp_path)
    args = ["run", "--methods", "dense", "--epochs", "1", "--in-process", "--no-throughput"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert f"FAILED dense@0/s0: OperationalError: {DISK_FULL}" in result.output

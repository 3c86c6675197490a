"""Ray Tune orchestration on one local Ray instance shared by this module (2 CPUs).

The grid, overlap of trials, failure isolation (raise, NaN, a killed process, retries),
concurrent sqlite writers, and the GPU resource checks. Test-only methods are a tiny plugin
package written into a temporary directory with a ``.dist-info`` entry point, so Ray workers
(which never see this process's monkeypatching) discover them like any third-party plugin.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from benchsuite.cli.app import app
from benchsuite.core import method as method_module
from benchsuite.data.base import load_dataset
from benchsuite.execution.cluster import Cluster, ResourceError, Resources, check_resources
from benchsuite.execution.grid import Request, expand
from benchsuite.execution.ray_tune import run_grid
from benchsuite.presets import load_preset
from tests.local_ray import start_local_ray

PLUGIN = '''
"""Test-only methods: each misbehaves in a different way in its second epoch."""
import math
import os
import signal
from pathlib import Path

import torch

from benchsuite.core.method import PruningMethod


class Explode(PruningMethod):
    name = "explode"
    source = "test"

    def on_epoch_end(self, state):
        if state.epoch == 2:
            raise RuntimeError("boom in epoch 2")


class NanLoss(PruningMethod):
    name = "nanloss"
    source = "test"

    def on_step_end(self, state):
        if state.epoch == 1:  # during epoch 2: the weights, then the loss, turn NaN
            with torch.no_grad():
                for p in state.model.parameters():
                    p.fill_(math.nan)


class Dies(PruningMethod):
    name = "dies"
    source = "test"

    def on_epoch_end(self, state):
        if state.epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # like the OOM killer: no exception, no cleanup


class DiskFull(PruningMethod):
    """The store's disk fills as this run writes its final metrics: SQLite's own error,
    injected into this worker's store writes (once: the space is freed right after)."""

    name = "diskfull"
    source = "test"

    def on_finish(self, state):
        import sqlite3

        from benchsuite.store.tracking import TrackedRun

        real = TrackedRun.log_metrics

        def full(run, metrics, step=0):
            if "test_accuracy" not in metrics:
                return real(run, metrics, step)
            TrackedRun.log_metrics = real
            raise sqlite3.OperationalError("database or disk is full")

        TrackedRun.log_metrics = full


class Flaky(PruningMethod):
    """Fails its first attempt, then works (for --retries)."""

    name = "flaky"
    source = "test"

    def on_epoch_end(self, state):
        marker = Path(__file__).with_name("flaky.attempted")
        if not marker.exists():
            marker.touch()
            raise RuntimeError("flaky first attempt")
'''

ENTRY_POINTS = """\
[benchsuite.methods]
explode = bs_testplugin:Explode
nanloss = bs_testplugin:NanLoss
dies = bs_testplugin:Dies
flaky = bs_testplugin:Flaky
diskfull = bs_testplugin:DiskFull
"""


def write_plugin(root: Path) -> Path:
    package = root / "bs_testplugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "bs_testplugin-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bs-testplugin\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_plugin(tmp_path_factory.mktemp("plugins"))


@pytest.fixture(scope="module")
def local_ray(plugin_dir: Path):
    """One 2-CPU local instance for the module; workers see the test plugin via PYTHONPATH."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_dir), saved]))
    ray = start_local_ray()
    yield ray
    ray.shutdown()
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


@pytest.fixture
def plugin_methods(plugin_dir: Path):
    """The test methods in this process's registry, for this test only."""
    sys.path.insert(0, str(plugin_dir))
    method_module.method_registry.cache_clear()
    yield
    sys.path.remove(str(plugin_dir))
    method_module.method_registry.cache_clear()


def digits_request(methods, sparsities, seeds, epochs=2, variants=None) -> tuple:
    preset = load_preset("digits").replace(epochs=epochs)
    data = load_dataset("digits")
    request = Request(
        preset,
        methods,
        sparsities,
        list(range(seeds)),
        {m: [(variants or {}).get(m, {})] for m in methods},
    )
    return expand(request, data), data


def finished_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return client.search_runs(
        [exp.experiment_id], filter_string="tags.`benchsuite.kind` = 'run'", max_results=1000
    )


# --------------------------------------------------------------------------- the grid


@pytest.fixture(scope="module")
def grid_result(local_ray, tmp_path_factory: pytest.TempPathFactory):
    """imp and bimp × 2 sparsities × 2 seeds at 2 epochs: 8 trials, two at a time."""
    tmp = tmp_path_factory.mktemp("grid")
    configs, data = digits_request(
        ["imp", "bimp"],
        [0.5, 0.8],
        2,
        variants={"imp": {"retrain_fraction": "0.5"}, "bimp": {"cycles": "1"}},
    )
    uri = f"sqlite:///{tmp}/grid.db"
    outcome = run_grid(configs, data, uri, "grid", cache_dir=tmp / "cache")
    return configs, outcome, finished_runs(uri, "grid"), uri


@pytest.mark.slow
def test_grid_runs_every_trial_with_equal_steps(grid_result) -> None:
    configs, outcome, runs, _ = grid_result
    assert len(configs) == 8
    assert (outcome.finished, outcome.failed, outcome.skipped) == (8, 0, 0)
    assert len(runs) == 8
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["benchsuite.run_key"] for r in runs}) == 8
    assert {r.data.metrics["train_steps"] for r in runs} == {2 * 40.0}
    assert {r.data.tags["benchsuite.device"] for r in runs} == {"cpu:1 threads"}
    # the Ray node id, not a placeholder
    assert all(len(r.data.tags["benchsuite.node"]) >= 40 for r in runs)


@pytest.mark.slow
def test_two_trials_overlap_in_time_with_two_cpus(grid_result) -> None:
    _, _, runs, _ = grid_result
    spans = sorted((r.info.start_time, r.info.end_time) for r in runs)
    overlapping = [
        (a, b) for i, a in enumerate(spans) for b in spans[i + 1 :] if b[0] < a[1] and a[0] < b[1]
    ]
    assert overlapping, spans
    # and never more than two at a time: one CPU per trial
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak <= 2


@pytest.mark.slow
def test_rerun_skips_finished_runs(grid_result) -> None:
    """The same configs again: everything skipped, and Ray is not even started."""
    configs, _, _, uri = grid_result
    again = run_grid(configs, load_dataset("digits"), uri, "grid")
    assert (again.finished, again.failed, again.skipped) == (0, 0, 8)


# --------------------------------------------------------------------------- failures


@pytest.mark.slow
def test_failing_methods_are_isolated(local_ray, plugin_methods, tmp_path, monkeypatch) -> None:
    """raise in epoch 2, NaN loss, a killed process: FAILED with the error; the rest finish."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--methods",
            "dense,explode,nanloss,dies",
            "--sparsity",
            "0.5",
            "--epochs",
            "3",
            "--experiment",
            "failures",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "1 finished, 3 failed" in result.output
    runs = {
        r.data.params["method"]: r
        for r in finished_runs(f"sqlite:///{tmp_path}/mlflow.db", "failures")
    }
    assert runs["dense"].info.status == "FINISHED"
    for method in ("explode", "nanloss", "dies"):
        assert runs[method].info.status == "FAILED", method
    assert "boom in epoch 2" in runs["explode"].data.tags["benchsuite.error"]
    assert "NonFiniteLoss" in runs["nanloss"].data.tags["benchsuite.error"]
    assert "epoch 2" in runs["nanloss"].data.tags["benchsuite.error"]
    # the killed trial could not end its own run: the driver did, with Ray's reason
    died = runs["dies"].data.tags["benchsuite.error"].lower()
    assert "died" in died or "exit" in died or "actor" in died, died
    assert "FAILED" in result.output and "explode" in result.output


@pytest.mark.slow
def test_a_full_disk_in_a_trial_reaches_the_command_and_the_run(
    local_ray, plugin_methods, tmp_path, monkeypatch
) -> None:
    """SQLite's "database or disk is full" as a Ray trial writes its final metrics: on the
    command's line and in the run's error tag, not "the trial's process died"."""
    monkeypatch.chdir(tmp_path)
    args = ["run", "--methods", "dense,diskfull", "--sparsity", "0.5", "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--experiment", "full", "--no-throughput"])
    assert result.exit_code == 1, result.output
    assert "1 finished, 1 failed" in result.output
    assert "FAILED diskfull@0.5/s0: OperationalError: database or disk is full" in result.output
    runs = {
        r.data.params["method"]: r for r in finished_runs(f"sqlite:///{tmp_path}/mlflow.db", "full")
    }
    assert runs["diskfull"].info.status == "FAILED"
    error = runs["diskfull"].data.tags["benchsuite.error"]
    assert error.startswith("OperationalError: database or disk is full"), error


@pytest.mark.slow
def test_retries_rerun_failed_trials(local_ray, plugin_methods, plugin_dir, tmp_path) -> None:
    (plugin_dir / "bs_testplugin" / "flaky.attempted").unlink(missing_ok=True)
    configs, data = digits_request(["flaky"], [0.5], 1, epochs=1)
    uri = f"sqlite:///{tmp_path}/retry.db"
    outcome = run_grid(configs, data, uri, "retry", resources=Resources(retries=1))
    assert (outcome.finished, outcome.failed, outcome.retried) == (1, 0, 1)
    statuses = sorted(r.info.status for r in finished_runs(uri, "retry"))
    assert statuses == ["FAILED", "FINISHED"]  # both attempts recorded; the latest counts


# --------------------------------------------------------------------------- concurrency


@pytest.mark.slow
def test_eight_fractional_trials_share_one_sqlite_store(local_ray, tmp_path) -> None:
    configs, data = digits_request(["dense"], [0.5], 8, epochs=1)
    uri = f"sqlite:///{tmp_path}/eight.db"
    outcome = run_grid(configs, data, uri, "eight", resources=Resources(cpus_per_trial=0.25))
    assert (outcome.finished, outcome.failed) == (8, 0)
    runs = finished_runs(uri, "eight")
    assert len(runs) == 8
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(int(r.data.params["seed"]) for r in runs) == list(range(8))
    assert all("test_accuracy" in r.data.metrics for r in runs)
    assert {r.resources.get("CPU") for r in outcome.trials} == {0.25}
    # they really ran side by side (more than two at once on 2 CPUs)
    spans = [(r.info.start_time, r.info.end_time) for r in runs]
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert peak > 2, spans


# --------------------------------------------------------------------------- resources


def test_gpus_per_trial_is_the_trials_resource_request() -> None:
    assert Resources(cpus_per_trial=2, gpus_per_trial=0.5).bundle(0.5) == {"cpu": 2, "gpu": 0.5}
    custom = Resources(custom=(("slot", 1.0),)).bundle(0.0)
    assert custom == {"cpu": 1.0, "gpu": 0.0, "slot": 1.0}


def test_resource_checks_fail_fast() -> None:
    cpu_only = Cluster([{"Resources": {"CPU": 2.0}, "NodeID": "a"}], local=True, client=False)
    with pytest.raises(ResourceError, match="no GPUs"):
        check_resources(Resources(gpus_per_trial=1), 1.0, cpu_only)
    with pytest.raises(ResourceError, match="no Ray node has that much"):
        check_resources(Resources(cpus_per_trial=4), 0.0, cpu_only)
    one_gpu = Cluster([{"Resources": {"CPU": 8.0, "GPU": 1.0}}], local=True, client=False)
    check_resources(Resources(gpus_per_trial=0.5), 0.5, one_gpu)
    with pytest.raises(ResourceError, match="GPU 2"):
        check_resources(Resources(gpus_per_trial=2), 2.0, one_gpu)


@pytest.mark.slow
def test_gpus_where_there_are_none_fail_with_a_clear_error(local_ray, tmp_path) -> None:
    configs, data = digits_request(["dense"], [0.5], 1, epochs=1)
    uri = f"sqlite:///{tmp_path}/gpu.db"
    with pytest.raises(ResourceError, match="the Ray cluster has no GPUs"):
        run_grid(configs, data, uri, "gpu", resources=Resources(gpus_per_trial=1))
    assert not (tmp_path / "gpu.db").exists()  # nothing recorded


def test_cli_refuses_gpus_on_a_machine_without_them(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("benchsuite.execution.cluster.local_gpus", lambda: 0)
    result = CliRunner().invoke(app, ["run", "--methods", "dense", "--gpus-per-trial", "0.5"])
    assert result.exit_code == 2
    assert "--gpus-per-trial 0.5: this machine has no GPU" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_cli_refuses_sqlite_with_a_cluster(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--methods", "dense", "--address", "auto"])
    assert result.exit_code == 2
    assert "--tracking-uri http://" in result.output
    assert len(result.output.strip().splitlines()) <= 2  # one line (wrapped at most once)
    assert not (tmp_path / "mlflow.db").exists()


def test_cli_rejects_bad_resource_values(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args, needle in (
        (["--cpus-per-trial", "0"], "--cpus-per-trial 0 must be > 0"),
        (["--max-concurrent", "0"], "--max-concurrent 0 must be >= 1"),
        (["--retries", "-1"], "--retries -1 must be >= 0"),
    ):
        result = CliRunner().invoke(app, ["run", "--methods", "dense", *args])
        assert result.exit_code == 2, args
        assert needle in result.output

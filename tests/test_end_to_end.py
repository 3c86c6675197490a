"""`benchsuite run` on the embedded digits benchmark, as a user starts it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def benchsuite(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "benchsuite.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_default_benchmark_records_one_mlflow_run_per_method(tmp_path):
    done = benchsuite(
        "run", "--methods", "bimp,imp,dense", "--sparsity", "0.9", "--epochs", "10", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 finished, 0 failed" in done.stdout
    assert (tmp_path / "mlflow.db").exists()  # the default local store in the working directory
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("digits-10ep")
    runs = {
        r.data.params["method"]: r
        for r in client.search_runs(
            [exp.experiment_id], filter_string="tags.`benchsuite.kind` = 'run'"
        )
    }
    assert set(runs) == {"bimp", "imp", "dense"}
    steps = {r.data.metrics["train_steps"] for r in runs.values()}
    assert steps == {10 * 40}  # 1293 digits training images, batch 32
    for name, r in runs.items():
        m, p, t = r.data.metrics, r.data.params, r.data.tags
        assert r.info.status == "FINISHED"
        assert p["preset"] == "digits" and p["dataset"] == "digits" and p["model"] == "small-cnn"
        assert p["epochs"] == "10" and p["batch_size"] == "32" and p["seed"] == "0"
        assert m["train_images"] == 400 * 32
        assert 50 < m["test_accuracy"] <= 100 and 50 < m["val_accuracy"] <= 100
        assert m["test_top5"] >= m["test_accuracy"]
        assert m["train_img_per_s"] > 0 and m["wall_time_s"] > 0
        assert m["flops_dense"] > 0
        assert (
            t["benchsuite.run_key"]
            and t["benchsuite.version"]
            and t["benchsuite.device"].startswith("cpu")
        )
        artifacts = Path(r.info.artifact_uri.removeprefix("file://"))
        state = load_file(artifacts / "model.safetensors")
        weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() > 1]
        zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        assert zeros == pytest.approx(m["sparsity"], abs=1e-9)
        assert (artifacts / "layer_sparsity.json").exists()
        history = client.get_metric_history(r.info.run_id, "val_accuracy")
        assert len(history) == 11 and history[-1].value == m["val_accuracy"]
        if name == "dense":
            assert p["target_sparsity"] == "0.0" and m["sparsity"] == 0.0
            assert m["theoretical_speedup"] == pytest.approx(1.0)
        else:
            assert p["target_sparsity"] == "0.9"
            assert m["sparsity"] == pytest.approx(0.9, abs=1e-3)
            assert m["theoretical_speedup"] > 1.5
            assert m["flops_sparse"] < m["flops_dense"]
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())

    again = benchsuite(
        "run", "--methods", "bimp,imp,dense", "--sparsity", "0.9", "--epochs", "10", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert "0 finished, 0 failed, 3 skipped" in again.stdout
    assert (
        len(client.search_runs([exp.experiment_id], filter_string="tags.`benchsuite.kind` = 'run'"))
        == 3
    )
    # one throughput record per method, made once (not again on the re-run), unless the first
    # was contended (a busy machine): then the re-run timed it again
    timed = client.search_runs([exp.experiment_id], "tags.`benchsuite.kind` = 'throughput'")
    by_method: dict[str, list] = {}
    for r in sorted(timed, key=lambda r: r.info.start_time):
        by_method.setdefault(r.data.params["method"], []).append(r)
    assert sorted(by_method) == ["bimp", "dense", "imp"]
    for records in by_method.values():
        assert len(records) == 1 or (
            len(records) == 2 and "benchsuite.contended" in records[0].data.tags
        )
    assert all(r.data.metrics["img_per_s"] > 0 for r in timed)

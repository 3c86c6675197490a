"""Every registered method end to end on digits: equal steps, the target reached."""

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from benchsuite.core.method import get_method, list_methods
from benchsuite.pruning.patterns import parse_pattern

pytestmark = pytest.mark.slow


def test_all_methods_finish_with_equal_steps_and_their_target(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchsuite.cli",
            "run",
            "--methods",
            "all",
            "--sparsity",
            "0.9",
            "--epochs",
            "10",
            "--no-throughput",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("digits-10ep")
    runs = client.search_runs([exp.experiment_id], "tags.`benchsuite.kind` = 'run'")
    by_method = {r.data.params["method"]: r for r in runs}
    unstructured = parse_pattern("unstructured")
    assert set(by_method) == {
        m
        for m in list_methods()
        if get_method(m).budget_equal and get_method(m).supports(unstructured)
    }
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.metrics["train_steps"] for r in runs} == {10 * 40}
    for name, run in by_method.items():
        sparsity = run.data.metrics["sparsity"]
        if name == "dense":
            assert sparsity == 0.0
        elif get_method(name).targets_sparsity:
            assert sparsity == pytest.approx(0.9, abs=1e-3), name
        else:  # STR, DST, CS: max(achieved, target)
            assert sparsity >= 0.9 - 1e-3, name

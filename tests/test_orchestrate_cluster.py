"""A two-node Ray cluster on this machine against an MLflow server started by the test.

Each node offers one CPU, one (logical) GPU and one ``benchslot``; trials ask for one CPU and
one slot, so two run at once and only on different nodes. Every run must be recorded on the
server with the node it ran on. The server and the cluster are shut down afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchsuite.data.base import load_dataset
from benchsuite.execution.cluster import ResourceError, Resources, quiet_ray_environment
from benchsuite.execution.grid import Request, expand
from benchsuite.execution.ray_tune import run_grid
from benchsuite.presets import load_preset

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root}/server.db",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.time() > deadline:
            server.kill()
            pytest.fail("the MLflow server did not start")
        time.sleep(0.5)
    yield uri
    os.killpg(server.pid, 15)  # the server and its workers (own session)
    server.wait(timeout=30)
    assert server.poll() is not None


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    quiet_ray_environment()
    node = {"num_cpus": 1, "num_gpus": 1, "resources": {"benchslot": 1}}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()
    assert not ray.is_initialized()


def digits_configs(seeds: int, first: int = 0):
    """Each test its own seeds: a run key finished in another test's experiment of the shared
    server would be copied, not trained (execution/common.adopt_finished)."""
    preset = load_preset("digits").replace(epochs=1)
    data = load_dataset("digits")
    request = Request(preset, ["dense"], [0.5], list(range(first, first + seeds)), {"dense": [{}]})
    return expand(request, data), data


def test_two_node_cluster_records_every_run_with_its_node(mlflow_server, two_nodes) -> None:
    import ray

    configs, data = digits_configs(4)
    resources = Resources(address=two_nodes.address, custom=(("benchslot", 1.0),), device="cpu")
    outcome = run_grid(configs, data, mlflow_server, "cluster", resources=resources)
    assert (outcome.finished, outcome.failed) == (4, 0)
    assert not ray.is_initialized()  # the command disconnected; the cluster lives on
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("cluster")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`benchsuite.kind` = 'run'")
    assert len(runs) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    nodes = {r.data.tags["benchsuite.node"] for r in runs}
    cluster_nodes = {n.node_id for n in [two_nodes.head_node, *two_nodes.worker_nodes]}
    assert nodes == cluster_nodes  # both nodes ran trials, and each run names its node
    assert {r.node for r in outcome.trials} == nodes


def test_gpus_per_trial_reaches_rays_request(mlflow_server, two_nodes) -> None:
    """Logical GPUs on both nodes: trials ask for half a GPU each and get it."""
    configs, data = digits_configs(2, first=10)
    resources = Resources(address=two_nodes.address, gpus_per_trial=0.5, device="cpu")
    outcome = run_grid(configs, data, mlflow_server, "gpu-request", resources=resources)
    assert (outcome.finished, outcome.failed) == (2, 0)
    for record in outcome.trials:
        assert record.resources["GPU"] == 0.5
        assert record.resources["CPU"] == 1.0


def test_cluster_checks_data_dir_on_every_node(mlflow_server, two_nodes, tmp_path) -> None:
    configs, data = digits_configs(1, first=20)
    missing = [dataclasses.replace(c, data_dir=str(tmp_path / "nope")) for c in configs]
    resources = Resources(address=two_nodes.address, device="cpu")
    with pytest.raises(ResourceError, match="not a directory on node"):
        run_grid(missing, data, mlflow_server, "data-dir", resources=resources)
    with pytest.raises(ResourceError, match="cannot be shared by the nodes"):
        run_grid(configs, data, f"sqlite:///{tmp_path}/x.db", "x", resources=resources)

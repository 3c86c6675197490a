"""Where trials run: the Ray instance, and every resource check made before anything starts.

Without an address a local Ray instance lives exactly as long as the command: temporary files
under the system temp dir, no dashboard, no usage reporting, and a reaper (``reaper.py``) that
kills what is left of it even when the command itself is killed with SIGKILL. With an address
the command joins an existing cluster and leaves it running.

The checks turn requests Ray would wait on forever (a GPU no node has, a data folder missing on
a node, an address where no cluster answers) into one line each: ``ResourceError`` once Ray is
known, ``BadInput`` for what the command line alone shows (``parse_resources``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchsuite.execution import reaper

if TYPE_CHECKING:
    from benchsuite.core.identity import RunConfig

# Read by Ray in this process and inherited by a local instance's workers.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage reporting
    "RAY_AIR_NEW_OUTPUT": "0",  # the legacy engine is silent at verbose=0 (the new one is not)
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard files per trial
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials keep the command's working directory
}


class ResourceError(ValueError):
    """A resource request the cluster can never satisfy: one line, exit code 2, nothing run."""


@dataclass(frozen=True)
class Resources:
    """Where and how trials run."""

    address: str | None = None  # None: a local instance for this command; "auto"; "ray://h:10001"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 1 when the cluster has GPUs, else 0
    max_concurrent: int | None = None
    retries: int = 0
    custom: tuple[tuple[str, float], ...] = ()  # extra Ray resources per trial (pinning, tests)
    num_cpus: int | None = None  # size of a local instance (default: every core)
    num_gpus: int | None = None  # logical GPUs of a local instance (default: detected)
    device: str | None = None  # None: cuda where trials hold GPUs, else cpu

    def bundle(self, gpus: float) -> dict[str, float]:
        """The trial's request as ``tune.with_resources`` takes it."""
        return {"cpu": self.cpus_per_trial, "gpu": gpus, **dict(self.custom)}


@dataclass
class Cluster:
    """What the trials can get: per alive node, its resources."""

    nodes: list[dict[str, Any]]
    local: bool
    client: bool

    @property
    def gpus(self) -> float:
        return sum(n["Resources"].get("GPU", 0.0) for n in self.nodes)

    @property
    def cpus(self) -> float:
        return sum(n["Resources"].get("CPU", 0.0) for n in self.nodes)

    def describe(self) -> str:
        return f"{len(self.nodes)} node(s), {self.cpus:g} CPU, {self.gpus:g} GPU"


def quiet_ray_environment() -> None:
    for name, value in RAY_ENV.items():
        os.environ.setdefault(name, value)


@contextmanager
def ray_instance(resources: Resources, scratch: str | None = None) -> Iterator[Cluster]:
    """Join the cluster at ``address``, reuse this process's Ray, or start a local instance.

    ``scratch`` (Tune's storage) is removed by the reaper if the command is killed.
    """
    quiet_ray_environment()
    import ray

    if ray.is_initialized():  # the caller's instance (tests, notebooks): theirs to stop
        yield current_cluster(local=resources.address is None)
        return
    reaper_process, caught = None, []
    if resources.address is None:
        with _deferred_sigint(caught):
            ray.init(
                address="local",
                num_cpus=resources.num_cpus,
                num_gpus=resources.num_gpus,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                _temp_dir=os.path.join(tempfile.gettempdir(), "ray"),
                # Tune's trial actors start their own workers: prestarted ones only cost start-up
                _system_config={
                    "enable_worker_prestart": False,
                    "prestart_worker_first_driver": False,
                },
            )
            reaper_process = reaper.start(scratch)
    else:
        try:
            ray.init(address=resources.address, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            cause = exc.__cause__ or exc
            reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
            raise ResourceError(
                f"--address {resources.address}: cannot join the Ray cluster: {reason}"
            ) from None
    try:
        if caught:  # a Ctrl-C while Ray started: acted on now, with Ray's shutdown below
            raise KeyboardInterrupt
        yield current_cluster(local=resources.address is None)
    finally:
        ray.shutdown()
        if reaper_process is not None:
            reaper.stop(reaper_process)


@contextmanager
def _deferred_sigint(caught: list[int]) -> Iterator[None]:
    """Hold a Ctrl-C back while Ray starts its processes: raised inside a fork handler (Ray
    forks with a ``preexec_fn``; logging's handler then runs), a KeyboardInterrupt leaves that
    lock held and the command hangs. ``caught`` says whether one came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def current_cluster(*, local: bool) -> Cluster:
    """The alive nodes of the Ray instance this process is connected to."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return Cluster(nodes, local=local, client=ray.util.client.ray.is_connected())


def predicted_local_cluster(resources: Resources) -> Cluster:
    """What a local instance will offer, known before it starts (so checks come first)."""
    from ray._private.utils import get_num_cpus

    cpus = resources.num_cpus if resources.num_cpus is not None else get_num_cpus()
    gpus = resources.num_gpus if resources.num_gpus is not None else local_gpus()
    node = {"NodeID": "local", "Resources": {"CPU": float(cpus), "GPU": float(gpus)}}
    return Cluster([node], local=True, client=False)


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


# --------------------------------------------------------------------------- the address


def probe_address(address: str, timeout: float = 10.0) -> None:
    """Fail in seconds where ``ray.init(address=...)`` would retry for minutes: nothing
    listens there, or what listens is not a Ray (gRPC, so HTTP/2) server. ``auto`` and
    ``local`` are left to Ray, which answers those quickly itself."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in hostport:
        raise ResourceError(f"--address {address}: give auto, HOST:PORT or ray://HOST:10001")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            # HTTP/2 client preface and an empty SETTINGS frame; a gRPC server answers SETTINGS.
            conn.sendall(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            )
            head = b""
            while len(head) < 9:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ResourceError(
            f"--address {address}: no Ray cluster answers there ({reason})"
        ) from None
    if len(head) < 9 or head[3] != 0x04:
        raise ResourceError(
            f"--address {address}: something answers there, but not a Ray cluster "
            "(give the head node's GCS port, 6379 by default, or ray://HOST:10001)"
        )


# --------------------------------------------------------------------------- resource checks


def resolve_gpus(resources: Resources, cluster: Cluster) -> float:
    """Default: one GPU per trial where the cluster has GPUs, none otherwise."""
    if resources.gpus_per_trial is None:
        return 1.0 if cluster.gpus > 0 else 0.0
    return resources.gpus_per_trial


def check_resources(resources: Resources, gpus: float, cluster: Cluster) -> None:
    """Fail fast where Ray would wait forever for resources that do not exist."""
    if resources.cpus_per_trial < 0 or gpus < 0:
        raise ResourceError("--cpus-per-trial and --gpus-per-trial must be >= 0")
    if gpus > 0 and cluster.gpus == 0:
        raise ResourceError(
            f"--gpus-per-trial {gpus:g}: the Ray cluster has no GPUs ({cluster.describe()}); "
            "use --gpus-per-trial 0, or a cluster with GPUs"
        )
    need = {"CPU": resources.cpus_per_trial, "GPU": gpus, **dict(resources.custom)}
    need = {k: v for k, v in need.items() if v > 0}

    def fits(node: dict[str, Any]) -> bool:
        return all(node["Resources"].get(k, 0.0) >= v for k, v in need.items())

    if not any(fits(n) for n in cluster.nodes):
        asked = ", ".join(f"{k} {v:g}" for k, v in need.items())
        largest = ", ".join(
            f"{k} {max(n['Resources'].get(k, 0.0) for n in cluster.nodes):g}" for k in need
        )
        raise ResourceError(
            f"a trial asks for {asked} but no Ray node has that much (largest: {largest}); "
            "lower --cpus-per-trial / --gpus-per-trial"
        )


def check_data_dir(data_dir: str, cluster: Cluster) -> None:
    """On a cluster, the trials read the data where they run: the directory must be there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def is_dir(path: str) -> bool:
        return os.path.isdir(path)

    refs = {
        n["NodeID"]: is_dir.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(data_dir)
        for n in cluster.nodes
    }
    missing = [
        f"{n['NodeManagerAddress']} ({node[:8]})"
        for node, ok in zip(refs, ray.get(list(refs.values()), timeout=120))
        for n in cluster.nodes
        if n["NodeID"] == node and not ok
    ]
    if missing:
        raise ResourceError(
            f"--data-dir {data_dir}: not a directory on node(s) {', '.join(missing)}; "
            "every node that runs trials needs the dataset at the same path"
        )


def resolve_numerics(
    configs: list[RunConfig], resources: Resources, cluster: Cluster | None
) -> list[RunConfig]:
    """Threads per trial, and the device where it is known before Ray starts: both are in the
    run key (docs/protocol.md, Run identity), so they are set before keys are computed."""
    threads = max(1, int(resources.cpus_per_trial))
    device = resources.device
    if device is None and cluster is not None:
        device = "cuda" if resolve_gpus(resources, cluster) > 0 else "cpu"
    return [dataclasses.replace(c, threads=threads, device=device or c.device) for c in configs]

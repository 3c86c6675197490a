"""Run the grid of runs as Ray Tune trials: resources, resume, failure isolation, progress.

Every run is one Ray Tune trial (a function trainable) that trains through the one loop
(``runner.execute``) and records its own MLflow run, so a run is recorded the same way on
whichever node it ran. The driver schedules (``tune.Tuner``, ``tune.with_resources``),
watches (a ``tune.Callback`` feeds the rich view) and cleans up: a trial whose process died
(OOM, SIGKILL) cannot end its own MLflow run, so the driver ends it FAILED, and ``--retries``
reruns failed trials in further rounds.

Without an address a local Ray instance lives exactly as long as the command: temporary files
under the system temp dir, no dashboard, no usage reporting, and a reaper process that kills
what is left of it even when the command itself is killed with SIGKILL.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .data import Dataset
from .runner import execute, key_for, record_failure
from .store import claimant, process_start
from .tracking import Tracker, is_sqlite, peek_finished_keys, preload
from .train import Progress, RunConfig

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
class TrialRecord:
    """What the driver knows about one run after it ended (the last attempt)."""

    label: str
    key: str
    status: str = "PENDING"  # FINISHED, FAILED, INTERRUPTED
    error: str | None = None
    attempts: int = 0
    node: str = ""
    resources: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None  # driver clock: trial started → trial ended
    trial_s: float | None = None  # inside the trial: entry → run recorded
    train_s: float | None = None  # train_run's own wall time (the loop, evaluation, finalize)
    step_s: float | None = None  # optimizer-step time (images ÷ img/s)
    val_accuracy: float | None = None  # of the finalized model
    test_reads: int | None = None  # test-split passes made inside the trial
    hard: bool = False  # the trial's process died; the driver recorded the failure


@dataclass
class Outcome:
    finished: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: int = 0
    retried: int = 0
    trials: list[TrialRecord] = field(default_factory=list)
    wall_s: float = 0.0
    claimed: int = 0  # skipped in a trial: finished or being run by another command meanwhile
    claims: list[str] = field(default_factory=list)  # label: why, for each of those
    configs: list[RunConfig] = field(default_factory=list)  # as run (threads, device resolved)


# --------------------------------------------------------------------------- the Ray instance


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
        yield _cluster(ray, local=resources.address is None)
        return
    reaper = None
    if resources.address is None:
        ray.init(
            address="local",
            num_cpus=resources.num_cpus,
            num_gpus=resources.num_gpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            _temp_dir=os.path.join(tempfile.gettempdir(), "ray"),
            # Tune's trial actors start their own workers: prestarted ones only cost start-up
            _system_config={"enable_worker_prestart": False, "prestart_worker_first_driver": False},
        )
        reaper = start_reaper(scratch)
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
        yield _cluster(ray, local=resources.address is None)
    finally:
        ray.shutdown()
        if reaper is not None:
            stop_reaper(reaper)


def _cluster(ray: Any, *, local: bool) -> Cluster:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return Cluster(nodes, local=local, client=ray.util.client.ray.is_connected())


# The reaper holds a pipe from the command; at EOF (however the command ended, SIGKILL
# included) it kills the local Ray processes that are still the ones recorded at start, unless
# the command said "done" first. Raylet and GCS die with the command anyway; Ray's agents
# otherwise linger for about a minute, and a lingering worker could still be writing a run.
_REAPER = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
import shutil
scratch, procs = sys.argv[1], [tuple(map(int, p.split(":"))) for p in sys.argv[2:]]
message = sys.stdin.read()
if message.strip() != "done":
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    for pid, start in procs:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[19]) != start:
                    continue
        except (OSError, ValueError, IndexError):
            if os.path.exists("/proc"):
                continue
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def start_reaper(scratch: str | None = None) -> subprocess.Popen | None:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil ships with ray
        return None
    pids = [p.pid for p in psutil.Process().children(recursive=True)]
    args = [f"{pid}:{process_start(pid) or 0}" for pid in pids]  # 0: unknown
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _REAPER, scratch or "", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C for the command is not one for the reaper
    )


def stop_reaper(reaper: subprocess.Popen) -> None:
    try:
        assert reaper.stdin is not None
        reaper.stdin.write(b"done\n")
        reaper.stdin.close()
        reaper.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):  # pragma: no cover
        reaper.kill()


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


# --------------------------------------------------------------------------- the trial


@dataclass(frozen=True)
class Job:
    """Everything a trial needs; shipped once through Ray's object store."""

    configs: list[RunConfig]
    data: Dataset
    tracking_uri: str
    experiment: str
    cache_dir: str | None
    command: str
    kind: str
    owner: dict[str, str]  # the claimant of every run of this command (store.claimant)


def _in_ray_worker() -> bool:
    ray = sys.modules.get("ray")
    try:
        return ray is not None and ray._private.worker.global_worker.mode == ray.WORKER_MODE
    except AttributeError:
        return False


if _in_ray_worker():
    # A trial actor imports this module while it starts (unpickling ``trial``): import mlflow
    # now, so its ~1-2 s fall in the actor's start-up, not in every trial's wall time. The
    # driver imports it lazily instead, overlapped with starting Ray.
    preload()

_DATA: dict[str, Dataset] = {}  # per worker process: one copy, its test split loaded once
_TRACKERS: dict[tuple[str, str], Tracker] = {}


def trial(config: dict[str, Any], job: Job) -> None:
    """One run inside a Ray worker: report every epoch, then a final status.

    A method's error is recorded FAILED by ``execute`` and reported, never raised: the driver
    learns the outcome from the final report, and Ray never retries on its own.
    """
    import ray
    import torch
    from ray import tune

    started = time.perf_counter()
    run_config = job.configs[config["index"]]
    torch.set_num_threads(run_config.threads)
    context = ray.get_runtime_context()
    node = context.get_node_id()
    data = _DATA.setdefault(job.data.fingerprint, job.data)
    tracker_key = (job.tracking_uri, job.experiment)
    if tracker_key not in _TRACKERS:
        _TRACKERS[tracker_key] = Tracker(*tracker_key)
    reads = data.test_reads

    def on_epoch(p: Progress) -> None:
        tune.report(
            {
                "epoch": p.epoch,
                "epochs": p.epochs,
                "val_accuracy": p.val_accuracy,
                "sparsity": p.sparsity,
                "train_loss": p.train_loss,
            }
        )

    status, result, error = execute(
        run_config,
        _TRACKERS[tracker_key],
        dataset=data,
        cache_dir=Path(job.cache_dir) if job.cache_dir else None,
        command=job.command,
        node=node,
        on_epoch=on_epoch,
        kind=job.kind,
        owner=job.owner,
    )
    final: dict[str, Any] = {
        "final": True,
        "status": status,
        "error": error or "",
        "node": node,
        "resources": context.get_assigned_resources(),
        "test_reads": data.test_reads - reads,
        "trial_s": time.perf_counter() - started,
    }
    if result is not None:
        m = result.metrics
        final["warning"] = result.tags.get("cache_warning", "")
        final["final_val_accuracy"] = m["val_accuracy"]
        final["train_s"] = m["wall_time_s"]
        if m.get("train_img_per_s"):
            final["step_s"] = m["train_images"] / m["train_img_per_s"]
    tune.report(final)


# --------------------------------------------------------------------------- progress


@dataclass
class _Row:
    config: RunConfig
    epochs: int
    status: str = "PENDING"
    attempt: int = 0
    epoch: int = 0
    val_accuracy: float | None = None
    node: str = ""
    started: float | None = None
    ended: float | None = None


class Board:
    """The live view: finished / running / pending / failed, each running trial, an ETA.

    Fed by Tune callback events on the driver; the ETA is the remaining epochs over the epoch
    rate seen so far (all trials together, so it accounts for concurrency).
    """

    def __init__(self, configs: list[RunConfig], todo: list[int], skipped: int, console: Console):
        self.console = console
        self.rows = {i: _Row(configs[i], configs[i].preset.epochs) for i in todo}
        self.skipped = skipped
        self.failed_final: set[int] = set()
        self.lock = threading.Lock()
        self.first_start: float | None = None
        self.epochs_done = 0
        self.multi_node = False

    def retry(self, indices: list[int]) -> None:
        with self.lock:
            for i in indices:
                row = self.rows[i]
                row.status, row.epoch, row.val_accuracy = "PENDING", 0, None

    def apply(self, event: str, index: int, payload: dict[str, Any]) -> None:
        now = time.time()
        with self.lock:
            row = self.rows.get(index)
            if row is None:
                return
            if event == "start":
                row.status, row.started, row.ended = "RUNNING", now, None
                row.attempt += 1
                row.epoch, row.val_accuracy = 0, None
                self.first_start = self.first_start or now
            elif event == "epoch":
                row.status = "RUNNING"
                self.epochs_done += max(0, int(payload["epoch"]) - row.epoch)
                row.epoch = int(payload["epoch"])
                row.epochs = int(payload.get("epochs", row.epochs))  # a plan's extra steps
                row.val_accuracy = float(payload["val_accuracy"])
            elif event == "final":
                row.node = str(payload.get("node", ""))[:8]
                row.status = str(payload["status"])
                row.ended = now
                if payload.get("warning"):
                    self.console.print(
                        Text.assemble(("warning ", "yellow"), str(payload["warning"]))
                    )
                self._line(row, payload.get("error") or None, payload.get("final_val_accuracy"))
            elif event == "error":
                row.status, row.ended = "FAILED", now
                self._line(row, str(payload.get("error", "trial died")), None)

    def _line(self, row: _Row, error: str | None, val: float | None) -> None:
        """One line per ended trial; names are text, never markup (``imp[schedule=ft]``)."""
        took = f"{row.ended - row.started:.1f} s" if row.started and row.ended else ""
        label = row.config.label()  # Text, never parsed as markup: [k=v] stays as written
        if row.status == "FINISHED":
            acc = f"val {val:.2f}%" if val is not None else ""
            line = Text.assemble(("finished", "green"), f" {label} {acc} {took}")
        elif row.status == "SKIPPED":
            line = Text.assemble(("skipped", "yellow"), f" {label}: {error or ''}")
        else:
            first = (error or "").splitlines()[0] if error else "?"
            line = Text.assemble(("FAILED", "red"), f" {label}: {first} {took}")
        self.console.print(line, highlight=False)

    def counts(self) -> dict[str, int]:
        out = {"finished": 0, "running": 0, "pending": 0, "failed": 0, "skipped": 0}
        for row in self.rows.values():
            out[{"FINISHED": "finished", "RUNNING": "running", "FAILED": "failed",
                 "SKIPPED": "skipped"}.get(row.status, "pending")] += 1  # fmt: skip
        return out

    def eta(self) -> float | None:
        if not self.first_start or not self.epochs_done:
            return None
        rate = self.epochs_done / max(time.time() - self.first_start, 1e-6)
        left = sum(
            r.epochs - (r.epoch if r.status == "RUNNING" else 0)
            for r in self.rows.values()
            if r.status in ("RUNNING", "PENDING")
        )
        return left / rate

    def __rich__(self) -> Group:
        with self.lock:
            c = self.counts()
            eta = self.eta()
            head = Text.assemble(
                ("finished ", "bold"), (str(c["finished"]), "green"),
                ("  running ", "bold"), (str(c["running"]), "cyan"),
                ("  pending ", "bold"), str(c["pending"]),
                ("  failed ", "bold"), (str(c["failed"]), "red" if c["failed"] else ""),
                ("  skipped ", "bold"), str(self.skipped + c["skipped"]),
                ("  ETA ", "bold"), _clock(eta) if eta is not None else "…",
            )  # fmt: skip
            table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
            for name in ("method", "sparsity", "seed", "epoch", "val acc", "time"):
                table.add_column(name, justify="left" if name == "method" else "right")
            running = [r for r in self.rows.values() if r.status == "RUNNING"]
            for r in running[:16]:
                cfg = r.config
                variant = cfg.variant()
                name = cfg.method + ("" if variant == "default" else f"[{variant}]")
                table.add_row(
                    Text(name + (f" (attempt {r.attempt})" if r.attempt > 1 else "")),
                    f"{cfg.target:g}",
                    str(cfg.seed),
                    f"{r.epoch}/{r.epochs}",
                    "—" if r.val_accuracy is None else f"{r.val_accuracy:.2f}%",
                    _clock(time.time() - r.started) if r.started else "",
                )
            if len(running) > 16:
                table.add_row(f"… {len(running) - 16} more", "", "", "", "", "")
            return Group(head, table) if running else Group(head)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Emitter:
    """Pickles to a no-op: Tune saves its callbacks with the experiment; the board stays here."""

    def __init__(self, emit: Callable[[str, int, dict[str, Any]], None]) -> None:
        self.emit = emit

    def __call__(self, event: str, index: int, payload: dict[str, Any]) -> None:
        self.emit(event, index, payload)

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.emit = _ignore


def _ignore(event: str, index: int, payload: dict[str, Any]) -> None:
    pass


class _QueueEmitter:
    """For Ray Client, where Tune (and so the callback) runs on the cluster: events go through
    a Ray queue that the driver drains into the board."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def __call__(self, event: str, index: int, payload: dict[str, Any]) -> None:
        self.queue.put_nowait((event, index, payload))


def _make_callback(emit: Callable[[str, int, dict[str, Any]], None]) -> Any:
    from ray import tune

    class ProgressCallback(tune.Callback):
        """Turns Tune's trial events into board events (on the driver)."""

        def __init__(self, emit: Callable[[str, int, dict[str, Any]], None]) -> None:
            self.emit = emit

        def on_trial_start(self, iteration, trials, trial, **info):
            self.emit("start", trial.config["index"], {})

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("final"):
                self.emit("final", trial.config["index"], dict(result))
            elif "epoch" in result:
                self.emit("epoch", trial.config["index"], dict(result))

        def on_trial_error(self, iteration, trials, trial, **info):
            try:
                error = trial.get_pickled_error() or trial.get_error()
            except Exception as exc:  # noqa: BLE001 - the reason is best effort; the status is not
                error = exc
            self.emit("error", trial.config["index"], {"error": _error_text(error)})

    return ProgressCallback(emit)


def _error_text(error: Any) -> str:
    text = str(error or "the trial's process died")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    # Ray's messages end with the cause; keep it short but keep the cause.
    return (lines[-1] if lines else text)[:500]


# --------------------------------------------------------------------------- the grid


def _open_tracker(uri: str, experiment: str, redo: set[str]) -> Tracker:
    tracker = Tracker(uri, experiment)
    tracker.mark_stale(redo)
    return tracker


def predicted_local_cluster(resources: Resources) -> Cluster:
    """What a local instance will offer, known before it starts (so checks come first)."""
    from ray._private.utils import get_num_cpus

    cpus = resources.num_cpus if resources.num_cpus is not None else get_num_cpus()
    gpus = resources.num_gpus
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    node = {"NodeID": "local", "Resources": {"CPU": float(cpus), "GPU": float(gpus)}}
    return Cluster([node], local=True, client=False)


def absolute_uri(uri: str) -> str:
    """A relative sqlite path means the command's directory, wherever a trial runs."""
    if is_sqlite(uri):
        path = uri.removeprefix("sqlite:///")
        if path and not os.path.isabs(path) and path != ":memory:":
            return "sqlite:///" + os.path.abspath(path)
    return uri


def cache_groups(configs: list[RunConfig], data: Dataset, todo: list[int]) -> list[int]:
    """Order trials so that one run of each shared dense prefix (IMP variants) goes first.

    Later runs of the same prefix then find its checkpoint instead of recomputing it, as far as
    the concurrency allows; the order changes nothing else.
    """
    from .budget import Budget

    seen: set[tuple[Any, ...]] = set()
    leaders, followers = [], []
    for i in todo:
        c = configs[i]
        try:
            budget = Budget(c.preset.epochs, data.steps_per_epoch(c.preset.batch_size))
            plan = c.method_cls().plan(budget, c.hp(), c.target, c.preset.schedule)
            group = (plan.cache_key, plan.cache_epoch, c.seed) if plan.cache_key else None
        except Exception:  # noqa: BLE001 - ordering is only a heuristic
            group = None
        if group is not None and group in seen:
            followers.append(i)
        else:
            leaders.append(i)
            if group is not None:
                seen.add(group)
    return leaders + followers


def run_grid(
    configs: list[RunConfig],
    data: Dataset,
    tracking_uri: str,
    experiment: str,
    *,
    cache_dir: Path | None = None,
    command: str = "",
    console: Console | None = None,
    resources: Resources | None = None,
    kind: str = "run",
) -> Outcome:
    """Run every configuration whose run_key has not FINISHED yet, as Ray Tune trials.

    Raises ``ResourceError`` (before anything is recorded) for requests no node can satisfy.
    A Ctrl-C at any moment ends the grid: its runs end KILLED, ``interrupted`` counts them.
    """
    started = time.perf_counter()
    resources = resources or Resources()
    console = console or Console()
    uri = absolute_uri(tracking_uri)
    if resources.address is not None and is_sqlite(uri):
        raise ResourceError(
            f"--tracking-uri {tracking_uri}: a local sqlite store cannot be shared by the nodes "
            "of a cluster; run an MLflow server and pass --tracking-uri http://HOST:PORT"
        )
    quiet_ray_environment()
    import ray

    known = _cluster(ray, local=resources.address is None) if ray.is_initialized() else None
    if known is None and resources.address is None:
        known = predicted_local_cluster(resources)
    configs = resolve_numerics(configs, resources, known)
    keys = [key_for(c, data) for c in configs]
    # A store that does not exist yet has nothing finished: no need to open (create) it now.
    fresh = is_sqlite(uri) and not Path(uri.removeprefix("sqlite:///")).exists()
    done = set() if fresh else peek_finished_keys(uri, experiment, kind)
    todo = [i for i, k in enumerate(keys) if k not in done]
    outcome = Outcome(skipped=len(configs) - len(todo), configs=configs)
    if not todo:
        return outcome
    todo = cache_groups(configs, data, todo)
    owner = claimant()
    if known is not None:  # check before anything starts or is written
        check_resources(resources, resolve_gpus(resources, known), known)
    # Importing Ray Tune and opening the store (importing mlflow, creating a new database)
    # overlap starting Ray, which mostly waits for its processes.
    pool = ThreadPoolExecutor(2)
    pool.submit(importlib.import_module, "ray.tune")
    prepare = None
    if known is not None:
        prepare = pool.submit(_open_tracker, uri, experiment, {keys[i] for i in todo})
    pool.shutdown(wait=False)
    records = {i: TrialRecord(configs[i].label(), keys[i]) for i in todo}
    since_ms = int(time.time() * 1000) - 1000
    tracker: Tracker | None = None
    scratch = tempfile.mkdtemp(prefix="benchsuite-tune-")  # Tune's storage, removed at the end
    try:
        with ray_instance(resources, scratch) as cluster:
            gpus = resolve_gpus(resources, cluster)
            check_resources(resources, gpus, cluster)
            data_dirs = {c.data_dir for c in configs if c.data_dir}
            if not cluster.local:
                for d in sorted(data_dirs):
                    check_data_dir(d, cluster)
            if resources.device is None:  # trials that hold a GPU train on it
                device = "cuda" if gpus > 0 else "cpu"
                configs = [
                    c if c.device == device else dataclasses.replace(c, device=device)
                    for c in configs
                ]
                outcome.configs = configs
            if prepare is not None:
                tracker = prepare.result()
            else:
                tracker = _open_tracker(uri, experiment, {keys[i] for i in todo})
            job = Job(
                configs=configs,
                data=data,
                tracking_uri=uri,
                experiment=experiment,
                cache_dir=str(Path(cache_dir).resolve()) if cache_dir else None,
                command=command,
                kind=kind,
                owner=owner,
            )
            board = Board(configs, todo, outcome.skipped, console)
            pending = list(todo)
            with Live(board, console=console, refresh_per_second=2, transient=False):
                for attempt in range(resources.retries + 1):
                    if attempt:
                        board.retry(pending)
                        outcome.retried += len(pending)
                    _fit(job, pending, resources, gpus, cluster, board, records, attempt, scratch)
                    for i in pending:
                        rec = records[i]
                        if rec.hard:  # its process died: it could not end its own MLflow run
                            if not tracker.fail_running(
                                rec.key, rec.error or "", since_ms=since_ms, owner=owner
                            ):
                                record_failure(
                                    configs[i], tracker, data, rec.error or "trial died",
                                    command=command, node=rec.node or "unknown", kind=kind,
                                )  # fmt: skip
                    pending = [i for i in pending if records[i].status == "FAILED"]
                    if not pending or any(r.status == "INTERRUPTED" for r in records.values()):
                        break
            if not console.is_terminal:
                console.line()  # Live's last frame ends without a newline on a plain stream
    except KeyboardInterrupt:  # before, between or after Tune's own handling of Ctrl-C
        for rec in records.values():
            if rec.status in ("PENDING", "RUNNING"):
                rec.status = "INTERRUPTED"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        _end_leftovers(tracker or _tracker_if_ready(prepare), owner, since_ms)
    for i in todo:
        rec = records[i]
        outcome.trials.append(rec)
        if rec.status == "FINISHED":
            outcome.finished += 1
        elif rec.status == "FAILED":
            outcome.failed += 1
        elif rec.status == "SKIPPED":
            outcome.claimed += 1
            outcome.claims.append(f"{rec.label}: {rec.error}")
        else:
            outcome.interrupted += 1
    outcome.wall_s = time.perf_counter() - started
    return outcome


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


def _tracker_if_ready(prepare: Any) -> Tracker | None:
    if prepare is None or not prepare.done() or prepare.exception() is not None:
        return None
    return prepare.result()


def _end_leftovers(tracker: Tracker | None, owner: dict[str, str], since_ms: int) -> None:
    """Whatever this command claimed and is still RUNNING once the grid is over was stopped
    (Ctrl-C, a trial cancelled by Tune): KILLED, so nothing is left RUNNING."""
    if tracker is None:
        return
    try:
        tracker.fail_running(None, "interrupted", since_ms=since_ms, status="KILLED", owner=owner)
    except KeyboardInterrupt:  # a second Ctrl-C: a later command ends them (stale claims)
        pass


def _fit(
    job: Job,
    indices: list[int],
    resources: Resources,
    gpus: float,
    cluster: Cluster,
    board: Board,
    records: dict[int, TrialRecord],
    attempt: int,
    scratch: str,
) -> None:
    """One Tuner.fit over ``indices``; fills ``records`` from the trials' last reports."""
    from ray import tune

    emit: Callable[[str, int, dict[str, Any]], None] = _Emitter(board.apply)
    drain = None
    if cluster.client:  # with Ray Client the callback runs on the cluster: events come by queue
        from ray.util.queue import Queue

        queue = Queue()
        emit = _QueueEmitter(queue)

        def drain() -> None:
            while not queue.empty():
                board.apply(*queue.get_nowait())

    storage = os.path.join(scratch, f"fit-{attempt}")
    trainable = tune.with_resources(tune.with_parameters(trial, job=job), resources.bundle(gpus))
    tuner = tune.Tuner(
        trainable,
        param_space={"index": tune.grid_search(indices)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=resources.max_concurrent, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=f"{job.kind}-{attempt}",
            storage_path=storage,
            verbose=0,
            callbacks=[_make_callback(emit)],
            failure_config=tune.FailureConfig(max_failures=0),  # retries are rounds (below)
        ),
    )
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.CRITICAL)  # errors are reported on the board, once
    try:
        if drain is None:
            grid = tuner.fit()
        else:
            box: dict[str, Any] = {}
            worker = threading.Thread(target=lambda: box.update(grid=tuner.fit()), daemon=True)
            worker.start()
            while worker.is_alive():
                drain()
                worker.join(0.5)
            drain()
            grid = box["grid"]
    finally:
        tune_logger.setLevel(level)
        shutil.rmtree(storage, ignore_errors=True)
    seen = set()
    for result in grid:
        if not result.config or "index" not in result.config:
            continue  # a trial Tune never started (Ctrl-C before it): INTERRUPTED below
        index = int(result.config["index"])
        seen.add(index)
        rec = records[index]
        rec.attempts = attempt + 1
        m = result.metrics or {}
        start, end = _times(board, index)
        rec.wall_s = end - start if start and end else None
        if m.get("final"):
            rec.status = str(m["status"])
            rec.error = m.get("error") or None
            rec.node = str(m.get("node", ""))
            rec.resources = dict(m.get("resources") or {})
            rec.trial_s = m.get("trial_s")
            rec.train_s = m.get("train_s")
            rec.step_s = m.get("step_s")
            rec.val_accuracy = m.get("final_val_accuracy")
            rec.test_reads = m.get("test_reads")
            rec.hard = False
        elif result.error is not None:
            rec.status, rec.hard = "FAILED", True
            rec.error = _error_text(result.error)
            if board.rows[index].status not in ("FAILED", "FINISHED"):
                board.apply("error", index, {"error": rec.error})
        else:  # stopped before it ended (Ctrl-C)
            rec.status = "INTERRUPTED"
    for index in indices:
        if index not in seen:
            records[index].status = "INTERRUPTED"


def _times(board: Board, index: int) -> tuple[float | None, float | None]:
    row = board.rows.get(index)
    return (row.started, row.ended) if row else (None, None)

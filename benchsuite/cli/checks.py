"""What the command line checks before anything starts: the resources a request asks for,
the device, a tracking server, the store and the cache folder (each bad one is ``BadInput``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from benchsuite.core.errors import BadInput
from benchsuite.execution.cluster import (
    ResourceError,
    Resources,
    local_gpus,
    probe_address,
)
from benchsuite.store.sqlite import StoreError, absolute_uri, check_store, check_uri, is_sqlite


def parse_resources(
    address: str | None,
    cpus_per_trial: float,
    gpus_per_trial: float | None,
    max_concurrent: int | None,
    retries: int,
    device: str | None,
    tracking_uri: str,
) -> Resources:
    """Everything about resources that can be checked without starting Ray (``BadInput``)."""
    try:
        check_uri(tracking_uri)
    except StoreError as exc:
        raise BadInput(str(exc)) from None
    if not 0 < cpus_per_trial < math.inf:
        raise BadInput(f"--cpus-per-trial {cpus_per_trial:g} must be > 0 (fractions allowed)")
    if gpus_per_trial is not None and not 0 <= gpus_per_trial < math.inf:
        raise BadInput(f"--gpus-per-trial {gpus_per_trial:g} must be >= 0 (fractions allowed)")
    if max_concurrent is not None and max_concurrent < 1:
        raise BadInput(f"--max-concurrent {max_concurrent} must be >= 1")
    if retries < 0:
        raise BadInput(f"--retries {retries} must be >= 0")
    if address is not None:
        if not address.strip():
            raise BadInput("--address is empty; give auto, HOST:PORT or ray://HOST:10001")
        if is_sqlite(tracking_uri):
            raise BadInput(
                f"--tracking-uri {tracking_uri}: a local sqlite store cannot be shared by the "
                "nodes of a Ray cluster; start an MLflow server and pass --tracking-uri http://HOST:PORT"
            )
        try:
            probe_address(address.strip())
        except ResourceError as exc:
            raise BadInput(str(exc)) from None
    check_tracking_server(tracking_uri)
    if device is not None:
        if address is None:
            check_device(device)
        elif not (device == "cpu" or device.startswith("cuda")):
            raise BadInput(f"--device {device!r}; choose from cpu, cuda, cuda:N")
    if address is None and gpus_per_trial and not local_gpus():
        raise BadInput(
            f"--gpus-per-trial {gpus_per_trial:g}: this machine has no GPU; "
            "use --gpus-per-trial 0, or --address to join a cluster with GPUs"
        )
    return Resources(
        address, cpus_per_trial, gpus_per_trial, max_concurrent, retries, device=device
    )


def check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BadInput(f"--device {device}: no CUDA device is available here; use cpu")
        return
    raise BadInput(f"--device {device!r}; choose from cpu, cuda, cuda:N")


def check_tracking_server(tracking_uri: str) -> None:
    """An unreachable server would otherwise cost MLflow's minutes of retries, then a traceback."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=10).close()
    except urllib.error.HTTPError:
        return  # it answers (a proxy or auth in front of it): good enough
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BadInput(
            f"--tracking-uri {tracking_uri}: no MLflow server answers there ({reason}); "
            "start one with `mlflow server --host HOST --port PORT --backend-store-uri ...`"
        ) from None


def absolute_dir(data_dir: str | None) -> str | None:
    """Trials run in other processes (or nodes): a relative path means this directory."""
    return None if data_dir is None else os.path.abspath(os.path.expanduser(data_dir))


def check_writable(tracking_uri: str, cache_dir: Path) -> None:
    """The store opens (created under its lock if new) and the cache folder can be written:
    checked last, once the request is valid, so bad input writes nothing."""
    try:
        check_store(absolute_uri(tracking_uri))
    except StoreError as exc:
        raise BadInput(str(exc)) from None
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        if not os.access(cache_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise BadInput(
            f"--cache-dir {cache_dir}: cannot write there ({exc.strerror}); give a writable folder"
        ) from None


def check_out_dir(out: Path) -> None:
    """``publish --out``: a folder that exists or can be made, and can be written (checked
    before the store is read, so a bad target costs nothing and writes nothing)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise BadInput(
            f"--out {out} is a file, not a folder; give a folder for the board's .md, .json "
            "and .png (made if missing)"
        )
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(
            f"--out {out}: {parent} is a file, so no folder can be made under it; give a folder"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(
            f"--out {out}: cannot write in {parent} (read-only or not permitted); give a "
            "writable folder"
        )

"""Who runs a run: its claimant (host, pid, the process's start) and whether it still lives."""

from __future__ import annotations

import os
import socket

from benchsuite.core.record import Tags


def process_start(pid: int) -> str:
    """The process's start (clock ticks since boot), so a reused pid is not taken for it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def claimant(pid: int | None = None) -> dict[str, str]:
    """Who is running a run: this host, this (or the given) process and when it started."""
    pid = os.getpid() if pid is None else pid
    return {
        Tags.CLAIM_HOST: socket.gethostname(),
        Tags.CLAIM_PID: str(pid),
        Tags.CLAIM_START: process_start(pid),
    }


def alive(tags: dict[str, str], prefix: str = "") -> bool:
    """Whether the claimant named in a run's tags still runs (another host: assumed so)."""
    host = tags.get(prefix + Tags.CLAIM_HOST)
    pid = tags.get(prefix + Tags.CLAIM_PID, "")
    if host is None or not pid.isdigit():
        return False  # RUNNING with no claimant (not written by benchsuite): stale
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = tags.get(prefix + Tags.CLAIM_START, "")
    return not start or process_start(int(pid)) in ("", start)


def owned_by(tags: dict[str, str], owner: dict[str, str], prefix: str = "") -> bool:
    return all(tags.get(prefix + k) == v for k, v in owner.items() if k != Tags.CLAIM_START)

"""Commands sharing a machine take turns: training holds the machine shared, timing alone.

The leaderboard's img/s is measured "alone on an otherwise idle device". Two benchsuite
commands on one machine would otherwise time their variants while the other trains or times
(each figure then a fraction of the truth). So every run trains holding a machine-wide lock
(an ``flock`` on a file in the system's temporary folder) shared, and the timing phase takes
it exclusive: it starts once no run of any command trains and no other command times, and
runs of other commands wait the few seconds it takes. A phase that cannot get the machine
within ``WAIT_S`` times anyway and its records say so (contended), as do records taken while
other processes kept the CPUs busy (``busy_cores``).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "benchsuite-machine-turns.lock"
# chosen here: longer than another command's timing phase of a handful of variants (a few
# seconds each), far shorter than waiting for another command's whole grid (hours)
WAIT_S = 120.0
POLL_S = 0.2


def lock_path() -> Path:
    """The machine's lock: one file in the temporary folder, for every user and command."""
    return Path(tempfile.gettempdir()) / LOCK_NAME


def _open(path: Path) -> int | None:
    """A descriptor to lock (read-only will do for ``flock``), or None where the temporary
    folder refuses it: then nothing is locked, and nothing is held up."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError:
        return None
    try:
        os.fchmod(fd, 0o666)  # other users' commands must be able to open it too
    except OSError:
        pass
    return fd


@contextmanager
def training(path: Path | None = None) -> Iterator[None]:
    """Held while a run trains (shared with every other run): a timing phase waits for it,
    and it waits for a timing phase in progress."""
    fd = _open(path or lock_path())
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def alone(wait_s: float = WAIT_S, path: Path | None = None) -> Iterator[bool]:
    """The machine to this process alone: yields True once no run trains and no other timing
    phase runs on it, or False after ``wait_s`` (or where no lock can be taken): the caller
    then measures anyway and records the figures as contended."""
    fd = _open(path or lock_path())
    if fd is None:
        yield False
        return
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    got = False
                    break
                time.sleep(POLL_S)
        yield got
    finally:
        os.close(fd)


# chosen here: one other busy thread slowed a trial by 5-10 % on the 2-core VM
# (docs/performance.md, Orchestration); half a core of other work, on average over the
# phase, is taken to be such a neighbour
BUSY_CORES_MAX = 0.5


def _system_busy_s() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux ``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, *rest = (int(v) for v in fields[1:])
    steal = rest[0] if rest else 0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class BusyMeter:
    """How many cores other processes kept busy while this one measured: the machine's busy
    time less this process's own CPU time, per second of wall time (None off Linux)."""

    def __init__(self) -> None:
        self.start = (_system_busy_s(), self._own(), time.monotonic())

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    def others(self) -> float | None:
        busy0, own0, wall0 = self.start
        busy1 = _system_busy_s()
        wall = time.monotonic() - wall0
        if busy0 is None or busy1 is None or wall <= 0:
            return None
        return max(0.0, (busy1 - busy0) - (self._own() - own0)) / wall

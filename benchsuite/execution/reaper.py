"""Kill what is left of a local Ray instance when the command that started it is gone.

``start`` launches this module as a process holding a pipe from the command. At EOF (however
the command ended, SIGKILL included) it kills the local Ray processes that are still the ones
recorded at start and removes Tune's scratch folder, unless the command wrote ``done`` first.
Raylet and GCS die with the command anyway; Ray's agents otherwise linger for about a minute,
and a lingering worker could still be writing a run. It imports nothing heavy, so it starts in
milliseconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

from benchsuite.store.owners import process_start


def start(scratch: str | None = None) -> subprocess.Popen | None:
    """Record this process's children (Ray's) and start their reaper."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil ships with ray
        return None
    pids = [p.pid for p in psutil.Process().children(recursive=True)]
    procs = [f"{pid}:{process_start(pid) or 0}" for pid in pids]  # 0: start unknown
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "benchsuite.execution.reaper", scratch or "", *procs],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C for the command is not one for the reaper
    )


def stop(reaper: subprocess.Popen) -> None:
    """The command ended Ray itself: the reaper exits without killing anything."""
    try:
        assert reaper.stdin is not None
        reaper.stdin.write(b"done\n")
        reaper.stdin.close()
        reaper.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):  # pragma: no cover
        reaper.kill()


def reap(scratch: str, procs: list[tuple[int, str]]) -> None:
    """Remove ``scratch`` and SIGKILL every (pid, start) still the process it was."""
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    for pid, start_time in procs:
        now = process_start(pid)
        if now != start_time and (now or os.path.exists("/proc")):
            continue  # gone, or the pid now names another process
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    procs = []
    for item in argv[1:]:
        pid, _, start_time = item.partition(":")
        procs.append((int(pid), "" if start_time == "0" else start_time))
    if sys.stdin.read().strip() != "done":
        reap(argv[0], procs)


if __name__ == "__main__":
    main(sys.argv[1:])

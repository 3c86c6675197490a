"""Resume: SIGKILL ``benchsuite run`` after some runs finished, run it again.

Finished runs are not repeated, the total is complete, no run_key FINISHED twice, the run left
RUNNING by the killed command is marked KILLED, and the killed command's local Ray processes
do not linger (no worker of it can still be writing a run).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

SEEDS = 6


def processes_with_env(marker: str) -> list[int]:
    """PIDs whose environment holds ``marker`` (the killed command's private TMPDIR)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def runs(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("resume")
    return (
        []
        if exp is None
        else client.search_runs(
            [exp.experiment_id], filter_string="tags.`benchsuite.kind` = 'run'", max_results=1000
        )
    )


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc to find lingering processes")
def test_sigkill_then_rerun_completes_without_duplicates(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    benchsuite = Path(sys.executable).with_name("benchsuite")
    command = [
        str(benchsuite),
        "run",
        "--methods",
        "dense",
        "--seeds",
        str(SEEDS),
        "--epochs",
        "6",
        "--tracking-uri",
        uri,
        "--experiment",
        "resume",
        "--max-concurrent",
        "1",
    ]
    private_tmp = tempfile.mkdtemp(prefix="bsr")  # short: Ray's socket paths must stay short
    env = {**os.environ, "TMPDIR": private_tmp}
    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None:
            if sum(r.info.status == "FINISHED" for r in runs(uri)) >= 2:
                break
            time.sleep(0.2)
        assert first.poll() is None, "the command ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    before = runs(uri)
    finished_before = {r.info.run_id for r in before if r.info.status == "FINISHED"}
    assert 2 <= len(finished_before) < SEEDS

    # Nothing of the killed command may linger (the reaper clears Ray's agents and workers).
    deadline = time.time() + 20
    while processes_with_env(f"TMPDIR={private_tmp}") and time.time() < deadline:
        time.sleep(0.5)
    lingering = processes_with_env(f"TMPDIR={private_tmp}")
    for pid in lingering:  # clean up before failing: these are this test's processes
        os.kill(pid, signal.SIGKILL)
    leftovers = list(Path(private_tmp).glob("benchsuite-tune-*"))  # Tune's scratch storage
    shutil.rmtree(private_tmp, ignore_errors=True)
    assert not lingering, "Ray processes of the killed command still run"
    assert not leftovers, leftovers

    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    after = runs(uri)
    finished = [r for r in after if r.info.status == "FINISHED"]
    keys = Counter(r.data.tags["benchsuite.run_key"] for r in finished)
    assert len(keys) == SEEDS  # complete
    assert set(keys.values()) == {1}  # no duplicates
    assert finished_before <= {r.info.run_id for r in finished}  # not repeated
    redone = SEEDS - len(finished_before)
    assert f"{redone} finished, 0 failed, {len(finished_before)} skipped" in " ".join(
        second.stdout.split()
    )
    # whatever the killed command left RUNNING is now KILLED, never silently RUNNING forever
    assert not [r for r in after if r.info.status == "RUNNING"]
    assert all(r.data.tags.get("benchsuite.error") for r in after if r.info.status == "KILLED")

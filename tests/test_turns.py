"""Isolated timing takes turns with everything else benchsuite runs on the machine, stops by
its rule, and says when it could not have the machine to itself."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchsuite.training import throughput, turns
from benchsuite.training.throughput import enough, half_widths

ROOT = Path(__file__).resolve().parent.parent

HOLDER = """
    import sys, time
    from pathlib import Path
    from benchsuite.training import turns
    path, mode, hold = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    if mode == "timing":
        with turns.alone(60.0, path) as got:
            start = time.time()
            print("holding", got, flush=True)
            time.sleep(hold)
            end = time.time()
    else:
        with turns.training(path):
            start = time.time()
            print("holding", True, flush=True)
            time.sleep(hold)
            end = time.time()
    print(start, end, flush=True)
"""


def hold(path: Path, mode: str, seconds: float) -> subprocess.Popen:
    """Another command holding the machine's lock (``timing``: alone; ``training``: shared),
    once it has printed its first line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), str(path), mode, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stdout.readline().split() == ["holding", "True"]
    return proc


def interval(proc: subprocess.Popen) -> tuple[float, float]:
    out, _ = proc.communicate(timeout=60)
    start, end = (float(v) for v in out.split())
    return start, end


def test_two_timing_phases_take_turns(tmp_path):
    """Two commands' timing phases never overlap: the second starts when the first ends."""
    lock = tmp_path / "turns.lock"
    other = hold(lock, "timing", 1.5)
    with turns.alone(60.0, lock) as got:
        mine = time.time()
    start, end = interval(other)
    assert got and mine >= end - 0.05  # waited for the other phase to finish


def test_timing_waits_for_training_and_gives_up_contended(tmp_path):
    """A run training elsewhere holds the timing off; past the wait the phase goes on without
    the machine (``got`` False: its records are contended); runs share the lock with each
    other."""
    lock = tmp_path / "turns.lock"
    trainer = hold(lock, "training", 3.0)
    with turns.training(lock):  # another run trains at the same time: no wait
        pass
    t0 = time.monotonic()
    with turns.alone(0.5, lock) as got:
        waited = time.monotonic() - t0
    assert not got and 0.5 <= waited < 2.5
    interval(trainer)
    with turns.alone(0.5, lock) as got:
        assert got  # the run is over: the machine is free


def test_without_a_lockable_folder_nothing_waits(tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "turns.lock"
    with turns.training(missing):
        pass
    with turns.alone(10.0, missing) as got:
        assert got is False  # cannot know: contended, never silently isolated


def test_contention_reasons():
    assert throughput.contention(True, 0.1) == ""
    assert throughput.contention(True, None) == ""  # no /proc/stat: the lock decides
    assert "another benchsuite command" in throughput.contention(False, 0.0)
    assert throughput.contention(True, 1.25) == "other processes kept 1.25 cores busy meanwhile"


def test_busy_meter_counts_other_processes_only(monkeypatch):
    clock = {"busy": 100.0, "own": 10.0, "wall": 50.0}
    monkeypatch.setattr(turns, "_system_busy_s", lambda: clock["busy"])
    monkeypatch.setattr(turns.BusyMeter, "_own", staticmethod(lambda: clock["own"]))
    monkeypatch.setattr(turns.time, "monotonic", lambda: clock["wall"])
    meter = turns.BusyMeter()
    # 10 s of wall time: the machine was busy 17 s, 9 of them this process's own
    clock.update(busy=117.0, own=19.0, wall=60.0)
    assert meter.others() == pytest.approx(0.8)


def test_half_widths_by_hand():
    """One variant: its own 95 % t-interval relative to its mean. Two: the paired one, of each
    figure over its round's geometric mean (a slow round cancels)."""
    a = [100.0, 110.0, 90.0]
    t2 = 4.302652729911275  # t(0.975, 2)
    expected = t2 * statistics.stdev(a) / math.sqrt(3) / 100.0
    assert half_widths([a]) == pytest.approx([expected])
    # b is a at a steady 5 % lead: every paired ratio is the same, so the interval is 0
    b = [v * 1.05 for v in a]
    assert half_widths([a, b]) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert half_widths([[100.0]]) == [math.inf]


def test_the_stopping_rule():
    steady = [[100.0, 101.0, 99.0], [200.0, 202.0, 198.0]]
    assert enough(steady)  # three rounds, intervals within 3 %
    assert not enough([v[:2] for v in steady])  # fewer than MIN_ROUNDS
    noisy = [[100.0, 140.0, 80.0], [200.0, 150.0, 260.0]]
    assert not enough(noisy)
    assert enough([[100.0, 140.0, 80.0] * 4][:1])  # MAX_ROUNDS reached: stop anyway

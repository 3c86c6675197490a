"""The allocator setting: freed activations stay in the process instead of faulting back in.

glibc's own thresholds move with what a process happened to free (a run of the same probe with
them faulted 0 or every page, at random), so the contrast is with its starting values held."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, resource, sys, torch
from benchsuite.training.allocator import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
else:  # glibc's starting thresholds, held fixed: what a process that freed nothing large has
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024) and libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
def step():  # four 8 MiB activations, written, then freed, as a training step does
    for t in [torch.empty(2 * 1024 * 1024) for _ in range(4)]:
        t.fill_(1.0)
for _ in range(10):  # the heap settles (freed blocks get reused in a new order at first)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
@pytest.mark.integration
def test_kept_memory_stops_the_page_faults_of_every_step() -> None:
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])

    pages = 5 * 4 * 8 * 1024 * 1024 // 4096  # every page of five steps faulted in again
    assert faults("start") >= pages  # each 8 MiB block a fresh mmap, every step
    assert faults("kept") < pages // 100

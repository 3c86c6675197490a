"""The allocator setting: freed activations stay in the process instead of faulting back in."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from benchsuite.allocator import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
def step():  # four 8 MiB activations, written, then freed, as a training step does
    for t in [torch.empty(2 * 1024 * 1024) for _ in range(4)]:
        t.fill_(1.0)
for _ in range(3):  # the heap settles (freed blocks get reused in a new order at first)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_kept_memory_stops_the_page_faults_of_every_step() -> None:
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])

    default, kept = faults("default"), faults("kept")
    pages = 5 * 4 * 8 * 1024 * 1024 // 4096  # every page of five steps faulted in again
    assert default > pages // 2  # glibc's dynamic thresholds give the heap top back
    assert kept < pages // 20

"""`memory.map_large_buffers`: a freed window-sized buffer goes back to the system, however the buffers
before it were sized (glibc's own rule would keep it in the heap)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

# Frees a 24 MB buffer (which raises glibc's dynamic threshold), then fills and frees a 20 MB one; prints
# whether the threshold was set and how much of the second buffer is still resident (MB).
_PROBE = """
import sys
import numpy as np
from transcription import memory
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
took = memory.map_large_buffers() if sys.argv[1] == "on" else False
np.ones(6_000_000, np.float32)
base = rss()
buf = np.ones(5_000_000, np.float32)
del buf
print(took, round(rss() - base, 1))
"""


def _probe(mode: str, threshold: str | None = None) -> tuple[bool, float]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    if threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = threshold
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_freed_large_buffer_is_returned_to_the_system() -> None:
    took, kept = _probe("on")
    assert took and kept < 5, kept
    took, kept = _probe("off")  # what glibc does alone: the 20 MB stay in the heap
    assert not took and kept > 15, kept


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_threshold_from_the_environment_is_left_alone() -> None:
    took, _ = _probe("on", threshold="262144")
    assert not took

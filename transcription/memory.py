"""Freed large buffers go back to the system at once, so a long recording's peak memory does not depend on
how its windows' buffers happened to fit in the heap.

glibc serves an allocation from its heap rather than its own mapping once a mapping of that size has been
freed (its threshold rises, up to 32 MiB), and a heap keeps the holes it is left with: the window-sized
buffers of Stage 1 (samples, VAD's copies and its model's tensors) then land in holes or grow the heap by
chance, and the peak varies from run to run. A fixed threshold gives each such buffer its own mapping,
unmapped when freed (docs/ARCHITECTURE.md, Memory).
"""

from __future__ import annotations

import ctypes
import os
import sys

LARGE_BUFFER = 1 << 20  # bytes: a window's buffers are tens of MB, the interpreter's own blocks far smaller
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_buffers() -> bool:
    """Map every allocation of LARGE_BUFFER bytes or more on its own, from now on; whether it was set (only
    with glibc, and not where MALLOC_MMAP_THRESHOLD_ already says otherwise)."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: musl, for one, has no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER))

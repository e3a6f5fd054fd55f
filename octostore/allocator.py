"""Make the C allocator give freed memory back to the OS, so a process's RSS follows what is live.

glibc serves a block above its mmap threshold with a mapping of its own, and
unmaps it when freed; but every such free also *raises* the threshold to that
block's size (up to 32 MiB).  After the first 16 MiB source value is freed,
the next ones come from the heap instead, where free space returns to the OS
only when it lies at the top, and the pickles, frames and strings of each
value leave the heap a little more fragmented: the coordinator's RSS ended
~100 MiB above what Python had live (tracemalloc) on the 1 GiB benchmark.
Setting the threshold explicitly turns the adjustment off (``mallopt(3)``);
distributed sets ``MALLOC_TRIM_THRESHOLD_`` in its workers' environment for
the same reason.

Only glibc is tuned; elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 1024 * 1024
"""Blocks from here up get their own mapping: source values, pickles, frames, decoded blocks."""

TRIM_THRESHOLD_BYTES = 4 * 1024 * 1024
"""Free space above this at the top of the heap goes back to the OS."""


def return_freed_memory() -> bool:
    """Set glibc's thresholds for this process; return whether they were set (idempotent)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    trim_set = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return bool(mmap_set and trim_set)

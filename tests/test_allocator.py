"""return_freed_memory: a freed large block leaves RSS, where glibc's defaults would keep it.

Runs in fresh interpreters (real processes), since the tuning is process-wide
and glibc's threshold adjustment depends on what the process freed before.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import sys
from octostore.allocator import return_freed_memory
tuned = return_freed_memory() if sys.argv[1] == "tuned" else False
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
first = b"x" * (16 << 20); del first  # glibc now raises its mmap threshold to 16 MiB
before = rss_mib()
second = b"y" * (16 << 20); del second  # from the heap, unless the threshold is fixed
print(tuned, rss_mib() - before)
"""


def grown_mib(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    tuned, grown = out.split()
    return tuned, int(grown)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc only")
def test_a_freed_16_mib_value_leaves_rss_once_tuned() -> None:
    tuned, grown = grown_mib("default")
    assert (tuned, grown >= 12) == ("False", True), grown  # what the tuning is for: glibc keeps it
    tuned, grown = grown_mib("tuned")
    assert tuned == "True"
    assert grown <= 1

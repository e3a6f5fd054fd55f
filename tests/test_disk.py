"""A full disk: the job stops with a clear message naming the path, and `octo resume` finishes it.

Uses a real small filesystem: a tmpfs mounted for the test (this needs root, which CI has;
without it the test is skipped, saying so).  Nothing is injected.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from . import oracle
from .conftest import JOBS, octo

JOB = JOBS / "disk_hog.py"


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_job_and_resume_finishes_it(small_disk: Path) -> None:
    home = small_disk / "octo-home"
    home.mkdir()
    full = octo(home, "submit", str(JOB), "--workers", "2", "--job-id", "hog", "--partitions", "2",
                "--progress", "off")
    assert full.returncode == 1, full.stderr
    error = [line for line in full.stderr.splitlines() if line.startswith("octo: error:")][0]
    assert error.startswith(f"octo: error: {home / 'jobs' / 'hog'}") and "the disk is full" in error, full.stderr
    assert "hint: free some space there, then continue with: octo resume hog" in full.stderr
    assert full.stdout == ""
    assert "Traceback" not in full.stderr, full.stderr

    subprocess.run(["mount", "-o", "remount,size=96m", str(small_disk)], check=True)  # space freed
    resumed = octo(home, "resume", "hog", "--progress", "off")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == oracle.final_output(JOB)
    assert os.path.getsize(home / "jobs" / "hog" / "results" / "data.mdb") > 0

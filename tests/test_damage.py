"""Damaged stores: a block whose bytes changed on disk is refused by its checksum, named, and never
turned into output or reported as the user's bug (#13).

Each test damages real LMDB files of a real job (one byte in the middle of a stored block, found in
data.mdb by its bytes), then runs the real `octo` command on them.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

import pytest

from octostore.home import job_paths
from octostore.stores.segments import SegmentStore

from . import oracle
from .conftest import JOBS, octo

JOB = JOBS / "big_results.py"  # 4,000 results over 8 partitions: several blocks per store


def damage_a_block(store_path: Path, rng: random.Random) -> None:
    """Flip one bit in the middle of a random block of the segment store at `store_path`."""
    store = SegmentStore(store_path, 1 << 20, readonly=True)
    try:
        blocks = list(store.iter_blocks(store.segment_ids()))
    finally:
        store.close()
    block = rng.choice([b for b in blocks if len(b) > 64])
    data = bytearray((store_path / "data.mdb").read_bytes())
    offset = data.find(block)
    assert offset >= 0 and data.find(block, offset + 1) < 0, "the block is stored once, in one piece"
    position = offset + rng.randrange(16, len(block) - 8)  # past the frame header, before the checksum
    data[position] ^= 1 << rng.randrange(8)
    (store_path / "data.mdb").write_bytes(bytes(data))


def test_damaged_results_are_refused_naming_the_store_and_the_task(home: Path) -> None:
    done = octo(home, "submit", str(JOB), "--workers", "2", "--job-id", "res", "--progress", "off")
    assert done.returncode == 0, done.stderr
    expected = oracle.final_output(JOB)
    for seed in range(5):
        damage_a_block(job_paths(home, "res").results, random.Random(seed))
        printed = octo(home, "results", "res")
        assert printed.returncode == 2, printed.stderr
        error = printed.stderr.splitlines()[0]
        assert error.startswith(f"octo: error: {job_paths(home, 'res').results}: the results of reduce task ")
        assert "are damaged (a block of" in error and "Traceback" not in printed.stderr
        lines = printed.stdout.splitlines()  # what was printed before the damaged block is right
        assert lines == [f"{k}\t{v}" for k, v in oracle.run(JOB)][: len(lines)]
        assert expected  # the job's own output was exact before the damage


def test_damaged_map_output_fails_the_reduce_once_as_damage_not_as_the_user_s_bug(home: Path) -> None:
    stopped = octo(home, "submit", str(JOB), "--workers", "2", "--job-id", "spill", "--progress", "off",
                   OCTO_FAILPOINTS="before-reduce-commit")  # every map task committed, no reduce task yet
    assert stopped.returncode == -signal.SIGKILL, stopped.stderr
    spill = job_paths(home, "spill").spill
    damage_a_block(sorted(p for p in spill.iterdir() if (p / "data.mdb").exists())[0], random.Random(1))
    resumed = octo(home, "resume", "spill")
    assert resumed.returncode == 1, resumed.stderr
    assert resumed.stdout == ""  # nothing wrong printed
    assert "its input from the map tasks is damaged" in resumed.stderr, resumed.stderr
    assert "reducefn raised" not in resumed.stderr and "retrying" not in resumed.stderr


@pytest.mark.parametrize("how", ["deleted", "empty", "half"])
def test_a_results_store_deleted_or_cut_short_is_an_error_not_an_empty_success(home: Path, how: str) -> None:
    """Before: exit 0 printing nothing (deleted, empty), or SIGBUS with no message (half)."""
    done = octo(home, "submit", str(JOB), "--workers", "2", "--job-id", "cut", "--progress", "off")
    assert done.returncode == 0, done.stderr
    data = job_paths(home, "cut").results / "data.mdb"
    if how == "deleted":
        shutil.rmtree(data.parent)
    else:
        os.truncate(data, 0 if how == "empty" else data.stat().st_size // 2)
    for command in (["results", "cut"], ["resume", "cut"]):  # resume of a DONE job runs final() again
        result = octo(home, *command)
        assert result.returncode in (1, 2), (command, result.returncode, result.stderr)
        error = result.stderr.splitlines()[-2 if result.stderr.splitlines()[-1].startswith("hint:") else -1]
        assert error.startswith(f"octo: error: {data.parent}"), (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stdout == "" or oracle.final_output(JOB).startswith(result.stdout)

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


def test_random_bit_flips_in_a_results_store_never_print_wrong_output(home: Path) -> None:
    """Seeded: each trial flips one random bit anywhere in the finished job's results data.mdb (blocks,
    LMDB's own pages, free space), then prints the results.  Every trial must print the exact results,
    or a prefix of them and end with one clear error naming the store; never other output, a traceback
    or a signal."""
    done = octo(home, "submit", str(JOB), "--workers", "2", "--job-id", "flips", "--progress", "off")
    assert done.returncode == 0, done.stderr
    data = job_paths(home, "flips").results / "data.mdb"
    pristine = data.read_bytes()
    expected = "".join(f"{k}\t{v}\n" for k, v in oracle.run(JOB))
    rng = random.Random(20261206)
    outcomes: dict[str, int] = {}
    for _ in range(TRIALS):
        damaged = bytearray(pristine)
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        data.write_bytes(bytes(damaged))
        result = octo(home, "results", "flips")
        assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode == 0:
            assert result.stdout == expected  # the flip hit nothing that is read
            outcomes["exact"] = outcomes.get("exact", 0) + 1
            continue
        assert expected.startswith(result.stdout), "wrong output printed"
        assert result.stderr.startswith(f"octo: error: {data.parent}"), result.stderr
        reason = "damaged block" if "are damaged" in result.stderr else "other error"
        outcomes[reason] = outcomes.get(reason, 0) + 1
    data.write_bytes(pristine)
    print(f"\n{TRIALS} bit flips in a results store: {outcomes}")
    assert sum(outcomes.values()) == TRIALS


def test_random_bit_flips_in_a_stopped_job_s_spill_never_resume_to_wrong_output(home: Path) -> None:
    """Seeded: a job stopped after its map phase gets one random bit flipped in one of its spill
    stores, then `octo resume`: the exact output, or one clear error and nothing wrong printed."""
    stopped = octo(home, "submit", str(JOB), "--workers", "2", "--job-id", "sflips", "--progress", "off",
                   OCTO_FAILPOINTS="before-reduce-commit")
    assert stopped.returncode == -signal.SIGKILL, stopped.stderr
    folder = job_paths(home, "sflips").root
    pristine = folder.parent / "sflips.pristine"
    shutil.copytree(folder, pristine)
    expected = oracle.final_output(JOB)
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    for _ in range(SPILL_TRIALS):
        shutil.rmtree(folder)
        shutil.copytree(pristine, folder)
        stores = sorted(p / "data.mdb" for p in (folder / "spill").iterdir() if (p / "data.mdb").exists())
        data = rng.choice(stores)
        damaged = bytearray(data.read_bytes())
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        data.write_bytes(bytes(damaged))
        result = octo(home, "resume", "sflips")
        assert result.returncode >= 0 and "Traceback" not in result.stderr, result.stderr
        if result.returncode == 0:
            assert result.stdout == expected
            outcomes["exact"] = outcomes.get("exact", 0) + 1
        else:
            assert result.stdout == "", "wrong output printed"
            assert "reducefn raised" not in result.stderr and "octo: error: " in result.stderr, result.stderr
            outcomes["error"] = outcomes.get("error", 0) + 1
    print(f"\n{SPILL_TRIALS} bit flips in a stopped job's spill stores: {outcomes}")


def test_a_spill_segment_lost_before_resume_is_an_error_not_missing_pairs(home: Path) -> None:
    """A spill store that lost a segment (a key flipped in LMDB's tree looks the same) would give
    counts too low with exit 0; the block counts in the state store catch it."""
    stopped = octo(home, "submit", str(JOB), "--workers", "2", "--job-id", "lost", "--progress", "off",
                   OCTO_FAILPOINTS="before-reduce-commit")
    assert stopped.returncode == -signal.SIGKILL, stopped.stderr
    partition = job_paths(home, "lost").partition_spill(0)
    store = SegmentStore(partition, 1 << 20)
    try:
        store.delete_segments(store.segment_ids()[:1])
    finally:
        store.close()
    resumed = octo(home, "resume", "lost")
    assert resumed.returncode == 1 and resumed.stdout == "", resumed.stderr
    assert f"octo: error: {partition}: map task " in resumed.stderr, resumed.stderr
    assert "blocks for partition 0, the spill store holds" in resumed.stderr


def test_a_spill_store_half_created_when_the_disk_filled_up_does_not_stop_the_resume(home: Path) -> None:
    """On a full disk the store's creation stopped half-way, and every later resume failed with
    MDB_INVALID on it; holding nothing committed, it is now removed and made again."""
    stopped = octo(home, "submit", str(JOB), "--workers", "2", "--job-id", "half", "--progress", "off",
                   OCTO_FAILPOINTS="before-map-commit")  # no map output committed anywhere
    assert stopped.returncode == -signal.SIGKILL, stopped.stderr
    data = job_paths(home, "half").partition_spill(0) / "data.mdb"
    os.truncate(data, 4096)  # one page of two: what a full disk leaves of a new LMDB file
    resumed = octo(home, "resume", "half")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == oracle.final_output(JOB)
    assert "removed a damaged store that held nothing committed" in resumed.stderr


TRIALS = int(os.environ.get("OCTO_TEST_FLIP_TRIALS", "60"))
"""Bit flips per corruption test; the closing note's figures come from a run with more."""

SPILL_TRIALS = max(1, TRIALS // 6)  # each resumes a job: ~1.5 s a trial

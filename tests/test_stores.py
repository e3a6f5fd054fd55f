"""The stores on real LMDB files: appends, map growth from a tiny map, commits that happen once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from octostore import api
from octostore.config import Config
from octostore.coordinator.commits import GroupCommit
from octostore.stores.outputs import FileRuns, ResultSegments, SpillRuns, unpack_output
from octostore.stores.segments import SegmentStore
from octostore.stores.state import StateStore, TaskState

from . import oracle
from .conftest import JOBS


def test_segments_append_in_order_and_read_back(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path / "s", 1 << 20)
    a = store.append_segment([b"a0", b"a1"])
    b = store.append_segment([b"b0"])
    c = store.append_segment([b"c0", b"c1", b"c2"])
    assert a < b < c
    assert list(store.iter_blocks([c, a])) == [b"c0", b"c1", b"c2", b"a0", b"a1"]
    store.delete_segments([b, 999])
    assert list(store.iter_blocks([a, b, c])) == [b"a0", b"a1", b"c0", b"c1", b"c2"]
    store.close()
    reopened = SegmentStore(tmp_path / "s", 1 << 20)
    assert reopened.append_segment([b"d"]) > c  # ids never go back, even after a restart
    reopened.close()


def test_reading_unmaps_what_it_read_and_readers_interleave(tmp_path: Path) -> None:
    """Interleaved readers (as the coordinator's reduce senders and final() are) get their blocks
    exact, and the reader's RSS stays near one remap window, not the 96 MiB read."""
    psutil = pytest.importorskip("psutil")
    store = SegmentStore(tmp_path / "s", 1 << 20)
    blocks = [os.urandom(1 << 20) for _ in range(96)]  # 96 MiB, incompressible
    ids = [store.append_segment(blocks[i : i + 4]) for i in range(0, 96, 4)]
    by_id = dict(zip(ids, (blocks[i : i + 4] for i in range(0, 96, 4))))
    expected = zip([b for i in ids[::2] for b in by_id[i]], [b for i in ids[1::2] for b in by_id[i]])
    rss_before = psutil.Process().memory_info().rss
    peak = 0
    for got, want in zip(zip(store.iter_blocks(ids[::2]), store.iter_blocks(ids[1::2])), expected, strict=True):
        assert got == want
        peak = max(peak, psutil.Process().memory_info().rss - rss_before)
    assert peak < 64 << 20, f"RSS grew {peak >> 20} MiB while reading 96 MiB"
    store.close()


def mapped_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = len(fields) >= 6 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_release_unmaps_the_pages_read_and_the_store_reads_on(tmp_path: Path) -> None:
    """What the coordinator does after sending a reduce task's runs: below the remap window,
    the pages read would otherwise stay in its RSS until the end of the job."""
    store = SegmentStore(tmp_path / "s", 1 << 20)
    blocks = [os.urandom(1 << 20) for _ in range(6)]  # 6 MiB, below REMAP_AFTER_BYTES
    ids = [store.append_segment([block]) for block in blocks]
    store.release()  # what appending mapped (the next test): only the reads below count here
    data = tmp_path / "s" / "data.mdb"
    assert list(store.iter_blocks(ids)) == blocks
    assert mapped_kib(data) >= 5 * 1024
    store.release()
    assert mapped_kib(data) < 1024
    assert list(store.iter_blocks(ids[::-1])) == blocks[::-1]
    store.close()


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_appending_does_not_keep_what_it_wrote_mapped(tmp_path: Path) -> None:
    """Each append reads the last leaf page through the map, and the kernel maps the freshly
    written pages around it: without unmapping, 24 MiB appended stayed 24 MiB of RSS."""
    store = SegmentStore(tmp_path / "s", 64 << 20)
    blocks = [os.urandom(48 * 1024) for _ in range(512)]  # 24 MiB in blocks of a typical size: 3 remap windows
    ids = [store.append_segment([block]) for block in blocks]
    assert mapped_kib(tmp_path / "s" / "data.mdb") <= 10 * 1024  # one 8 MiB window and the tree
    assert list(store.iter_blocks(ids)) == blocks
    store.close()


def test_map_grows_when_full(tmp_path: Path) -> None:
    tiny = 64 * 1024
    store = SegmentStore(tmp_path / "s", tiny)
    blocks = [os.urandom(50_000) for _ in range(40)]  # 2 MB of incompressible blocks
    ids = [store.append_segment(blocks[i : i + 4]) for i in range(0, 40, 4)]
    assert store.env.info()["map_size"] > tiny
    assert list(store.iter_blocks(ids)) == blocks
    store.close()


def test_a_task_commits_once(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state", 1 << 20)
    state.create_job({"job_id": "j"}, [["a", "b"], ["c"]], partitions=2)
    assert state.manifest_keys(1) == ["c"]
    assert state.commit_task("map", 0, 2, SpillRuns([(0, [7])])) is True
    assert state.commit_task("map", 0, 3, SpillRuns([(0, [9])])) is False  # a later attempt cannot overwrite
    record = state.task("map", 0)
    assert (record.state, record.committed_attempt, record.output) == (TaskState.DONE, 2, SpillRuns([(0, [7])]))
    assert [t for t, r in state.tasks("map") if r.state is TaskState.PENDING] == [1]
    assert [t for t, _ in state.tasks("reduce")] == [0, 1]


def test_failures_are_counted_and_the_last_one_fails_the_task(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state", 1 << 20)
    state.create_job({"job_id": "j"}, [["a"], ["b"]], partitions=1)
    records = [state.record_failure("map", 0, f"boom {i}", failed=i == 2) for i in range(3)]
    assert [(r.state, r.failures) for r in records] == [(TaskState.PENDING, 1), (TaskState.PENDING, 2),
                                                        (TaskState.FAILED, 3)]
    assert state.task("map", 0).last_error == "boom 2"
    state.commit_task("map", 1, 1, None)
    assert state.record_failure("map", 1, "late", failed=True).state is TaskState.DONE  # a DONE task stays DONE


def test_whole_job_with_a_tiny_lmdb_map(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every store starts at 64 KiB and must grow during a real job; the output stays exact."""
    job = JOBS / "big_results.py"
    config = Config(home=home, workers=2, partitions=2, map_size_bytes=64 * 1024, progress="off")
    report = api.submit(job, config, job_id="tiny")
    assert capsys.readouterr().out == oracle.final_output(job)
    assert report.results == len(oracle.run(job))
    results_file = home / "jobs" / "tiny" / "results" / "data.mdb"
    assert results_file.stat().st_size > 64 * 1024


def test_group_commit_flushes_appended_stores_then_commits_a_batch_once(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state", 1 << 20)
    state.create_job({"job_id": "j"}, [["a"], ["b"]], 1)
    spill = SegmentStore(tmp_path / "spill", 1 << 20)
    segment = spill.append_segment([b"block"])
    events: list[object] = []

    def flush() -> None:
        spill.sync()
        events.append("flushed")

    async def commit_two() -> None:
        commits = GroupCommit(state, events.append, lambda: [flush])
        commits.add(("map", 0, 1, SpillRuns([(0, [segment])])), lambda done: events.append(("attempt 1", done)))
        commits.add(("map", 0, 2, None), lambda done: events.append(("attempt 2", done)))  # the same task again
        await commits.drain()

    asyncio.run(commit_two())
    assert events == ["flushed", ("attempt 1", True), ("attempt 2", False)]  # one batch, one flush
    record = state.task("map", 0)
    assert (record.state, record.committed_attempt, record.output) == (TaskState.DONE, 1, SpillRuns([(0, [segment])]))
    spill.close()
    state.close()


def test_task_outputs_are_tagged_and_round_trip_through_the_store(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state", 1 << 20)
    state.create_job({"job_id": "j"}, [["a"], ["b"], ["c"]], 1)
    outputs = {("map", 0): SpillRuns([(0, [1, 2]), (1, [3])], [5, 1]),
               ("map", 1): FileRuns("/shared/j/map-000001-a1-e1.run", [(0, [(0, 10), (10, 5)])]),
               ("reduce", 0): ResultSegments([4, 5], 7)}
    for (kind, task), output in outputs.items():
        assert state.commit_task(kind, task, 1, output)
    state.close()
    state = StateStore(tmp_path / "state", 1 << 20, readonly=True)
    assert {(kind, task): state.task(kind, task).output for kind, task in outputs} == outputs
    assert state.task("map", 2).output is None  # not done: nothing
    state.close()


def test_untagged_outputs_of_older_stores_read_as_the_same_shapes() -> None:
    assert unpack_output([[0, [1, 2]], [1, [3]]]) == SpillRuns([(0, [1, 2]), (1, [3])])  # blocks not counted
    assert unpack_output(["spill", [[0, [1, 2]]]]) == SpillRuns([(0, [1, 2])], None)
    assert unpack_output([[0, {"file": "/s/m.run", "blocks": [[0, 10]]}], [1, {"file": "/s/m.run", "blocks": []}]]) \
        == FileRuns("/s/m.run", [(0, [(0, 10)]), (1, [])])
    assert unpack_output([4, 5]) == ResultSegments([4, 5])  # blocks not counted then
    assert unpack_output(["results", [4, 5]]) == ResultSegments([4, 5], None)
    assert unpack_output([]) is None
    with pytest.raises(ValueError, match="unknown task output 'tape'"):
        unpack_output(["tape", 1])

"""Tests for octostore.blocks: pack and unpack, block sizes, the k-way merge, grouping."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from operator import itemgetter

import pytest
import zstandard

from octostore import blocks
from octostore.blocks import (
    BLOCK_BYTES,
    Record,
    group_records,
    iter_run,
    merge_blocks,
    merge_runs,
    pack_blocks,
    unpack_block,
)
from octostore.errors import DamagedBlock
from octostore.keys import encode_key
from octostore.worker.reduceside import ReceivedRuns

HEADER_BYTES = 16  # per record: key length (u32), count (u64), payload length (u32)
BLOCK_HEADER_BYTES = 4  # the record count


def record_bytes(record: Record) -> int:
    return HEADER_BYTES + len(record[0]) + len(record[2])


def sorted_records(count: int, seed: int, distinct_keys: int = 1_000_000) -> list[Record]:
    """Records sorted by key_enc with random counts and payloads; small distinct_keys repeats keys."""
    rng = random.Random(seed)
    records = [
        (
            encode_key(f"key-{rng.randrange(distinct_keys):07d}"),
            rng.randint(1, 5),
            rng.randbytes(rng.randint(0, 100)),
        )
        for _ in range(count)
    ]
    return sorted(records, key=itemgetter(0))


def test_round_trip_across_many_blocks() -> None:
    records = sorted_records(5_000, seed=1)
    block_bytes = 8 * 1024
    blocks = list(pack_blocks(records, block_bytes=block_bytes))
    assert len(blocks) > 1
    largest_record = max(record_bytes(r) for r in records)
    sizes = [zstandard.frame_content_size(block) for block in blocks]
    for size in sizes[:-1]:  # every block but the last closed on reaching block_bytes
        assert block_bytes <= size < block_bytes + largest_record
    assert 0 < sizes[-1] < block_bytes + largest_record
    assert sum(sizes) == sum(record_bytes(r) for r in records) + BLOCK_HEADER_BYTES * len(blocks)
    assert list(iter_run(blocks)) == records


def test_default_block_size_and_level() -> None:
    records = sorted_records(20_000, seed=2)
    blocks = list(pack_blocks(records))
    sizes = [zstandard.frame_content_size(block) for block in blocks]
    assert len(blocks) > 1 and all(BLOCK_BYTES <= size < BLOCK_BYTES + 200 for size in sizes[:-1])
    assert list(iter_run(pack_blocks(records, level=9))) == records


def test_record_bigger_than_a_block_makes_one_big_block() -> None:
    big = (encode_key("big"), 3, b"x" * 100_000)
    records = [(encode_key("a"), 1, b"small"), big, (encode_key("c"), 1, b"after")]
    blocks = list(pack_blocks(records, block_bytes=4096))
    assert len(blocks) == 2
    assert zstandard.frame_content_size(blocks[0]) == BLOCK_HEADER_BYTES + record_bytes(records[0]) + record_bytes(big)
    assert list(unpack_block(blocks[0])) == records[:2]
    assert list(unpack_block(blocks[1])) == records[2:]


def test_no_records_make_no_blocks() -> None:
    assert list(pack_blocks([])) == []
    assert list(iter_run([])) == []


def test_long_key_round_trips() -> None:
    key_enc = encode_key("k" * 10_000)
    records = [(key_enc, 1, b"v"), (key_enc + b"z", 2, b"")]
    blocks = list(pack_blocks(records, block_bytes=1024))
    assert len(blocks) == 2
    assert list(iter_run(blocks)) == records


def test_unpacked_fields_are_bytes() -> None:
    [record] = list(iter_run(pack_blocks([(b"k", 7, b"p")])))
    assert record == (b"k", 7, b"p")
    assert type(record[0]) is bytes and type(record[2]) is bytes


def test_merge_runs_matches_a_stable_sort() -> None:
    # Payloads say (run, position), so a tie that comes out of order shows.
    rng = random.Random(3)
    runs: list[list[Record]] = []
    for run in range(5):
        keys = sorted(encode_key(rng.randrange(50)) for _ in range(rng.randint(0, 400)))
        runs.append([(key, 1, f"{run}:{i}".encode()) for i, key in enumerate(keys)])
    expected = sorted((r for run in runs for r in run), key=itemgetter(0))
    packed = [list(pack_blocks(run, block_bytes=512)) for run in runs]
    assert list(merge_runs([iter_run(blocks) for blocks in packed])) == expected
    batches = list(merge_blocks(packed))
    assert [record for batch in batches for record in batch] == expected
    assert len(batches) > 1  # it streams: one block per run at a time


def test_merge_blocks_keeps_a_key_spanning_blocks_and_runs_in_order() -> None:
    hot = encode_key("hot")
    runs = [[(encode_key("a"), 1, b"0a")] + [(hot, 1, f"0:{i}".encode()) for i in range(300)],
            [(hot, 1, f"1:{i}".encode()) for i in range(300)] + [(encode_key("z"), 1, b"1z")]]
    expected = sorted((r for run in runs for r in run), key=itemgetter(0))
    packed = [list(pack_blocks(run, block_bytes=256)) for run in runs]
    assert [r for batch in merge_blocks(packed) for r in batch] == expected
    assert list(merge_blocks([[], []])) == []


def test_merge_runs_streams() -> None:
    def counting(step: int) -> Iterator[Record]:  # an infinite sorted run
        n = 0
        while True:
            yield (n.to_bytes(8, "big"), 1, b"")
            n += step

    first = [r[0] for _, r in zip(range(6), merge_runs([counting(2), counting(3)]))]
    assert [int.from_bytes(k, "big") for k in first] == [0, 0, 2, 3, 4, 6]


def test_group_records_groups_adjacent_equal_keys() -> None:
    records = [(b"a", 1, b"1"), (b"a", 2, b"22"), (b"b", 1, b"x"), (b"c", 1, b"y"), (b"c", 3, b"zzz")]
    assert list(group_records(records)) == [
        (b"a", [(1, b"1"), (2, b"22")]),
        (b"b", [(1, b"x")]),
        (b"c", [(1, b"y"), (3, b"zzz")]),
    ]
    assert list(group_records([])) == []


def test_group_records_over_merged_runs() -> None:
    runs = [sorted_records(300, seed=s, distinct_keys=40) for s in range(4)]
    groups = list(group_records(merge_runs(runs)))
    assert [key for key, _ in groups] == sorted({r[0] for run in runs for r in run})
    assert sum(len(values) for _, values in groups) == 1_200


def test_pack_and_unpack_from_many_threads() -> None:
    # One compressor per thread: concurrent packing must not mix up blocks.
    results: dict[int, list[Record]] = {}
    inputs = {t: sorted_records(2_000, seed=10 + t) for t in range(4)}

    def work(t: int) -> None:
        results[t] = list(iter_run(pack_blocks(inputs[t], block_bytes=2048)))

    threads = [threading.Thread(target=work, args=(t,)) for t in inputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == inputs


def test_damaged_block_is_refused() -> None:
    whole = zstandard.ZstdDecompressor().decompress(next(pack_blocks([(b"key", 1, b"payload")])))
    cut = zstandard.ZstdCompressor().compress(whole[:-3])
    with pytest.raises(DamagedBlock, match="damaged block: its records need 30 bytes, the block holds 27"):
        list(unpack_block(cut))


def test_a_flipped_bit_anywhere_in_a_block_never_decodes_into_other_records() -> None:
    """Without the checksum, 9 in 60 flips in a results store printed wrong output (#13)."""
    records = [(f"key-{i:04d}".encode(), 1, f"payload {i}".encode() * 3) for i in range(500)]
    (block,) = pack_blocks(records)
    assert unpack_block(block) == records
    refused = 0
    for position in range(len(block)):  # every byte, one bit each
        damaged = bytearray(block)
        damaged[position] ^= 1 << (position % 8)
        try:
            assert unpack_block(bytes(damaged)) == records  # a bit zstd does not use: the same records
        except DamagedBlock:
            refused += 1
    assert refused >= len(block) - 10, (refused, len(block))


def test_a_damaged_block_in_a_merge_names_its_run() -> None:
    good = list(pack_blocks([(b"a", 1, b"x"), (b"c", 1, b"y")]))
    damaged = bytearray(next(pack_blocks([(b"b", 1, b"z")])))
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(DamagedBlock) as e:
        list(merge_blocks([good, [bytes(damaged)]]))
    assert e.value.run == 1


def test_many_runs_are_merged_in_groups_with_the_same_result() -> None:
    """A reducer with more runs than its fan-in merges them in passes through its temporary
    file; the final runs' records equal one merge of all the runs, ties in run order."""
    rng = random.Random(9)
    runs: list[list[Record]] = []
    for run in range(70):  # > 2 passes at fan-in 4
        keys = sorted(encode_key(rng.randrange(300)) for _ in range(rng.randint(0, 60)))
        runs.append([(key, 1, f"{run}:{i}".encode()) for i, key in enumerate(keys)])
    expected = sorted((r for run in runs for r in run), key=itemgetter(0))
    received = ReceivedRuns(len(runs))
    try:
        for run, records in enumerate(runs):
            received.add(run, list(pack_blocks(records, block_bytes=256)))
        merged = received.runs(fan_in=4, block_bytes=256, zstd_level=1)
        assert len(merged) <= 4
        assert [r for batch in merge_blocks(merged) for r in batch] == expected
    finally:
        received.close()


# -- the compiled layout (_blocklayout.c) against the Python one ----------------------------

compiled = pytest.mark.skipif(blocks._layouts is blocks._layouts_python, reason="_blocklayout.c not built")


def test_the_compiled_layout_is_built() -> None:
    """`pip install -e .` builds it where a C compiler exists, as on every machine we test on."""
    assert blocks.pack_layout is not None, "octostore/_blocklayout.c did not build: see `pip install -e .`"


@compiled
@pytest.mark.parametrize("block_bytes", [0, 1, 100, 4096, BLOCK_BYTES])
def test_compiled_and_python_layouts_are_the_same_bytes(block_bytes: int) -> None:
    rng = random.Random(block_bytes)
    records = sorted_records(3_000, seed=block_bytes) + [(b"", 0, b""), (b"\xff" * 300, 2**64 - 1, b"\x00" * 9000)]
    rng.shuffle(records)  # the layout does not care about order
    python = list(blocks._layouts_python(records, block_bytes))
    assert list(blocks._layouts_compiled(records, block_bytes)) == python
    for layout in python:
        assert blocks.unpack_layout(layout) == blocks._unpack_layout_python(layout)
    assert [r for layout in python for r in blocks.unpack_layout(layout)] == records


@compiled
def test_compiled_layout_of_one_empty_block() -> None:
    empty = (0).to_bytes(4, "little")
    assert blocks.unpack_layout(empty) == blocks._unpack_layout_python(empty) == []


@compiled
@pytest.mark.parametrize("cut", [1, 3, 10, 40])
def test_compiled_and_python_refuse_the_same_damaged_layouts(cut: int) -> None:
    layout = next(blocks._layouts_python(sorted_records(5, seed=4), BLOCK_BYTES))
    for damaged in (layout[:-cut], layout + b"x" * cut):
        with pytest.raises(ValueError, match="damaged block"):
            blocks._unpack_layout_python(damaged)
        with pytest.raises(ValueError, match="damaged block"):
            blocks.unpack_layout(damaged)


@compiled
def test_compiled_layout_refuses_what_is_not_a_record() -> None:
    for bad in ([("key", 1, b"p")], [(b"k", 1)], [(b"k", -1, b"p")], [[b"k", 1, b"p"]]):
        with pytest.raises((TypeError, OverflowError)):
            blocks.pack_layout(bad, 0, BLOCK_BYTES)

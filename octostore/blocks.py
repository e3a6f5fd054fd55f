"""Sorted zstd blocks: pack records into blocks, unpack them, merge runs.

Design note
-----------
Map output moves and rests as *records*: ``(key_enc, count, payload)``, an
encoded key (keys.py), how many values the payload holds, and the serialized
values (opaque here). A *block* stores records column by column::

    n (u32) | key lengths (n x u32) | counts (n x u64) | payload lengths (n x u32)
            | keys, concatenated    | payloads, concatenated                (little-endian)

compressed as one zstd frame (one-shot ``compress``, content size written).
Columns, not a header per record, so that decoding a block is a handful of C
loops (``array.frombytes``, ``itertools.accumulate``, slicing through
``map``) instead of one Python iteration per record: on a reduce of 16 runs,
decoding fell from 0.8 us to ~0.1 us per record. A *run* is the blocks of
one sorted output of one attempt, in order.

Why blocks and not one store record per pair: appending sorted runs of zstd
blocks of 128 KiB ingests about 13 M pairs/s into LMDB, against about 70 k
pairs/s for one LMDB record per pair, and takes about 10x less disk. A block
is also the unit a worker ships in one message, so the store never decodes it.

Why workers sort: each worker sorts its own map buffer, so sorting runs in
parallel on every worker. Runs arrive already in key order, the store only
appends, and a reducer only merges. Nothing central ever sorts the whole
shuffle, and nothing ever holds a partition in memory.

The merge, ``merge_blocks``, works a batch at a time: with one decoded block
per run in hand, every record below the smallest "last key" among those
blocks can be emitted, so it takes them all (bisect), sorts the batch (Timsort
merges the already-sorted pieces in C, stably) and yields it; records equal to
that key then go out run by run, so ties keep run order even when a key spans
blocks.  Measured on a 16-run partition of the word count: 2.0 us per
record through ``heapq.merge``, ~0.3 us batched.  It holds one decompressed
block per run (about ``block_bytes``) plus one batch: ~2 x 128 KiB x runs.
Bounding the fan-in is the caller's job: with more runs than memory allows,
merge them in rounds.

Rejected alternatives: pickling whole lists of records (a run would have to
be loaded whole); a block per record, or per key (per-pair overhead again;
zstd compresses small inputs badly); a new ZstdCompressor per block
(it allocates its context again each time: 219 us instead of 202 us per
128 KiB block at level 1, measured with timeit on this machine), so each
thread keeps one per level.

Invariant: records in a run are sorted by key_enc, and records with equal
key_enc are adjacent (the worker's sort makes it so; merge_runs and
group_records rely on it, and tests/test_blocks.py checks the merge).

These are pure functions on bytes: from octostore this module imports only
errors.py (``DamagedBlock``), and nothing here does I/O.

Every block carries zstd's content checksum (the low 4 bytes of XXH64 of
the uncompressed block, checked by ``unpack_block``), so a block whose bytes
changed after they were written, in a spill store, a results store, a map
file or on the wire, is refused as damaged, never decoded into other
records.
"""

from __future__ import annotations

import heapq
import itertools
import sys
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter

import zstandard

from .errors import DamagedBlock

try:
    from ._blocklayout import pack_layout, unpack_layout
except ImportError:  # not built (no C compiler at install): the same layout in Python
    pack_layout = unpack_layout = None  # type: ignore[assignment]

Record = tuple[bytes, int, bytes]
"""(key_enc, count, payload): an encoded key, how many values the payload holds, the values."""

# Measured: sorted runs of zstd 128 KiB blocks ingest ~13 M pairs/s into LMDB,
# against ~70 k pairs/s for one LMDB record per pair, and take ~10x less disk.
BLOCK_BYTES = 128 * 1024
"""Target uncompressed size of one block, in bytes."""

# Level 1 compresses fast enough to keep up with map output; higher levels
# trade pair throughput for disk.
ZSTD_LEVEL = 1
"""zstd compression level of the blocks pack_blocks writes."""

_U32, _U64 = "I", "Q"  # array typecodes: 4 and 8 bytes on every platform we run on
assert array(_U32).itemsize == 4 and array(_U64).itemsize == 8
_SWAP = sys.byteorder == "big"  # the format is little-endian
_RECORD_OVERHEAD = 16  # column bytes per record: key length, count, payload length
_first = itemgetter(0)

# ZstdCompressor and ZstdDecompressor objects are not thread-safe, and a
# fresh one per block reallocates its context (~8% slower at 128 KiB, more
# for smaller blocks): keep one per thread (compressors per level).
_per_thread = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """Return this thread's compressor for level."""
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_per_thread, "compressors", None)
    if cache is None:
        cache = _per_thread.compressors = {}
    compressor = cache.get(level)
    if compressor is None:
        # write_checksum: each frame ends with 4 bytes of its content's XXH64, which decompress()
        # verifies, so a damaged block is refused, never decoded into other records (#13).
        compressor = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True,
                                                             write_checksum=True)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    """Return this thread's decompressor."""
    decompressor: zstandard.ZstdDecompressor | None = getattr(_per_thread, "decompressor", None)
    if decompressor is None:
        decompressor = _per_thread.decompressor = zstandard.ZstdDecompressor()
    return decompressor


# -- blocks -------------------------------------------------------------------


def pack_blocks(
    records: Iterable[Record], block_bytes: int = BLOCK_BYTES, level: int = ZSTD_LEVEL
) -> Iterator[bytes]:
    """Yield compressed blocks holding records, in order.

    A block closes as soon as it reaches block_bytes uncompressed, so a
    record larger than block_bytes makes one big block. No records, no blocks.
    """
    records = records if isinstance(records, list) else list(records)
    for layout in _layouts(records, block_bytes):
        # Look the compressor up per block, not per generator: a generator may
        # be resumed on another thread.
        yield _compressor(level).compress(layout)


def unpack_block(block: bytes) -> list[Record]:
    """Return the records of one block made by pack_blocks, in order.

    Raises DamagedBlock if the block fails its checksum, is not a zstd frame with
    its content size, or its columns and contents disagree.  (Blocks written before
    checksums existed decode unchecked.)
    """
    try:
        return _unpack_layout(_decompressor().decompress(block))
    except (zstandard.ZstdError, ValueError) as e:
        raise DamagedBlock(f"a block of {len(block)} bytes is damaged: {e}") from None


def _layouts_compiled(records: list[Record], block_bytes: int) -> Iterator[bytes]:
    """The uncompressed blocks of pack_blocks, laid out by _blocklayout.c."""
    assert pack_layout is not None
    start = 0
    while start < len(records):
        layout, start = pack_layout(records, start, block_bytes)
        yield layout


def _layouts_python(records: list[Record], block_bytes: int) -> Iterator[bytes]:
    """The uncompressed blocks of pack_blocks, the same bytes as _layouts_compiled.
    Block boundaries come from a running sum and bisect, not a loop per record."""
    if not records:
        return
    keys, counts, payloads = zip(*records)
    sizes = map(int.__add__, map(len, keys), map(len, payloads))
    ends = list(itertools.accumulate(map(_RECORD_OVERHEAD.__add__, sizes)))  # ends[i]: bytes through record i
    start, start_bytes = 0, 0
    while start < len(records):
        stop = bisect_left(ends, start_bytes + block_bytes, lo=start) + 1  # first record reaching the bound
        stop = min(stop, len(records))
        yield _layout(keys[start:stop], counts[start:stop], payloads[start:stop])
        start, start_bytes = stop, ends[stop - 1]


def _layout(keys: Sequence[bytes], counts: Sequence[int], payloads: Sequence[bytes]) -> bytes:
    columns = [array(_U32, map(len, keys)), array(_U64, counts), array(_U32, map(len, payloads))]
    if _SWAP:
        for column in columns:
            column.byteswap()
    return b"".join([len(keys).to_bytes(4, "little"), *(c.tobytes() for c in columns), *keys, *payloads])


def _unpack_layout_python(data: bytes) -> list[Record]:
    """The records of one uncompressed block, as _blocklayout.unpack_layout gives them."""
    n = int.from_bytes(data[:4], "little")
    pos = 4
    columns = []
    for typecode in (_U32, _U64, _U32):
        column = array(typecode)
        end = pos + n * column.itemsize
        if end > len(data):
            raise ValueError(f"damaged block: {n} records need {end} bytes of columns, the block holds {len(data)}")
        column.frombytes(data[pos:end])
        if _SWAP:
            column.byteswap()
        columns.append(column)
        pos = end
    key_lengths, counts, payload_lengths = columns
    key_ends = list(itertools.accumulate(key_lengths, initial=pos))
    payload_ends = list(itertools.accumulate(payload_lengths, initial=key_ends[-1]))
    if payload_ends[-1] != len(data):
        raise ValueError(f"damaged block: its records need {payload_ends[-1]} bytes, the block holds {len(data)}")
    keys = map(data.__getitem__, map(slice, key_ends, key_ends[1:]))
    payloads = map(data.__getitem__, map(slice, payload_ends, payload_ends[1:]))
    return list(zip(keys, counts, payloads))


_layouts = _layouts_compiled if pack_layout is not None else _layouts_python
_unpack_layout = unpack_layout if unpack_layout is not None else _unpack_layout_python


def iter_run(blocks: Iterable[bytes]) -> Iterator[Record]:
    """Yield the records of a run: its blocks' records, block after block."""
    for block in blocks:
        yield from unpack_block(block)


# -- merging ------------------------------------------------------------------


def merge_runs(runs: Sequence[Iterable[Record]]) -> Iterator[Record]:
    """Yield the records of all runs, merged by key_enc (one record at a time).

    Streams: holds one record per run.  Records with equal key_enc come out
    in run order, then in their order within the run.  For runs of blocks,
    ``merge_blocks`` is several times faster.
    """
    yield from heapq.merge(*runs, key=_first)


def merge_blocks(runs: Sequence[Iterable[bytes]]) -> Iterator[list[Record]]:
    """Yield the records of runs of blocks, merged by key_enc, as sorted batches.

    The batches, concatenated, are exactly ``merge_runs`` of the runs' records
    (ties keep run order).  Holds one decoded block per run and one batch.
    """
    cursors = [c for c in (_Cursor(iter(run), i) for i, run in enumerate(runs)) if c.records]
    while cursors:
        bound = min(c.records[-1][0] for c in cursors)  # every record < bound is in hand
        batch: list[Record] = []
        for cursor in cursors:
            cursor.take_before(bound, batch)
        if batch:
            batch.sort(key=_first)  # Timsort merges the sorted pieces in C; stable
            yield batch
        else:  # only records equal to bound are left in hand: run by run, keeping tie order
            for cursor in cursors:
                while cursor.records and cursor.records[cursor.pos][0] == bound:
                    yield cursor.take_equal(bound)
        cursors = [c for c in cursors if c.records]


class _Cursor:
    """The current decoded block of one run and the position within it.

    Invariant: ``records`` is empty only when the run is exhausted."""

    __slots__ = ("blocks", "run", "records", "pos")

    def __init__(self, blocks: Iterator[bytes], run: int) -> None:
        self.blocks = blocks
        self.run = run  # its index among the merged runs, named when a block is damaged
        self.records: list[Record] = []
        self.pos = 0
        self._next_block()

    def _next_block(self) -> None:
        self.records, self.pos = [], 0
        for block in self.blocks:
            try:
                self.records = unpack_block(block)
            except DamagedBlock as e:
                raise DamagedBlock(e.message, self.run) from None
            if self.records:
                return

    def take_before(self, bound: bytes, out: list[Record]) -> None:
        """Move this run's records with key_enc < bound to `out` (loading the next block if done)."""
        end = bisect_left(self.records, bound, lo=self.pos, key=_first)
        out.extend(self.records[self.pos : end])
        self.pos = end
        if end == len(self.records):
            self._next_block()

    def take_equal(self, bound: bytes) -> list[Record]:
        """Return this block's next records with key_enc == bound (loading the next block if done)."""
        end = bisect_right(self.records, bound, lo=self.pos, key=_first)
        piece = self.records[self.pos : end]
        self.pos = end
        if end == len(self.records):
            self._next_block()
        return piece


def group_records(records: Iterable[Record]) -> Iterator[tuple[bytes, list[tuple[int, bytes]]]]:
    """Yield (key_enc, [(count, payload), ...]) for each stretch of records with equal key_enc.

    Groups only adjacent records, so feed it sorted records (merge_runs output).
    """
    for key_enc, group in itertools.groupby(records, key=itemgetter(0)):
        yield key_enc, [(count, payload) for _, count, payload in group]

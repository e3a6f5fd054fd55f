"""Sorted zstd blocks: pack records into blocks, unpack them, merge runs.

Design note
-----------
Map output moves and rests as *records*: ``(key_enc, count, payload)``, an
encoded key (keys.py), how many values the payload holds, and the serialized
values (opaque here). A *block* is a sequence of records laid out as::

    >III header (len(key_enc), count, len(payload)) | key_enc | payload   (repeated)

and compressed as one zstd frame (one-shot ``compress``, content size
written). A *run* is the blocks of one sorted output of one attempt, in order.

Why blocks and not one store record per pair: appending sorted runs of zstd
blocks of 128 KiB ingests about 13 M pairs/s into LMDB, against about 70 k
pairs/s for one LMDB record per pair, and takes about 10x less disk. A block
is also the unit a worker ships in one message, so the store never decodes it.

Why workers sort: each worker sorts its own map buffer, so sorting runs in
parallel on every worker. Runs arrive already in key order, the store only
appends, and a reducer only merges. Nothing central ever sorts the whole
shuffle, and nothing ever holds a partition in memory.

Memory bound of the merge: ``merge_runs`` pulls records lazily, so it holds
one decompressed block per run (about ``block_bytes``) and one record per run
in its heap: ~128 KiB x runs (1,000 runs ~ 125 MiB). Bounding the fan-in is
the caller's job: with more runs than memory allows, merge them in rounds.

Rejected alternatives: pickling whole lists of records (a run would have to
be loaded whole); a block per record, or per key (per-pair overhead again;
zstd compresses small inputs badly); a new ZstdCompressor per block
(it allocates its context again each time: 219 us instead of 202 us per
128 KiB block at level 1, measured with timeit on this machine), so each
thread keeps one per level.

Invariant: records in a run are sorted by key_enc, and records with equal
key_enc are adjacent (the worker's sort makes it so; merge_runs and
group_records rely on it, and tests/test_blocks.py checks the merge).

These are pure functions on bytes: this module imports nothing from
octostore, and nothing here does I/O.
"""

from __future__ import annotations

import heapq
import itertools
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter

import zstandard

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

_HEADER = struct.Struct(">III")  # len(key_enc), count, len(payload)

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
        compressor = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
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
    buffer = bytearray()
    pack_header = _HEADER.pack
    for key_enc, count, payload in records:
        buffer += pack_header(len(key_enc), count, len(payload))
        buffer += key_enc
        buffer += payload
        if len(buffer) >= block_bytes:
            # Look the compressor up per block, not per generator: a
            # generator may be resumed on another thread.
            yield _compressor(level).compress(buffer)
            buffer.clear()
    if buffer:
        yield _compressor(level).compress(buffer)


def unpack_block(block: bytes) -> Iterator[Record]:
    """Yield the records of one block made by pack_blocks, in order.

    Raises ValueError if the block's contents end partway through a record,
    and zstandard.ZstdError if it is not a zstd frame with its content size.
    """
    data = _decompressor().decompress(block)
    end = len(data)
    header_bytes = _HEADER.size
    unpack_header = _HEADER.unpack_from
    pos = 0
    while pos < end:
        key_bytes, count, payload_bytes = unpack_header(data, pos)
        key_start = pos + header_bytes
        payload_start = key_start + key_bytes
        pos = payload_start + payload_bytes
        if pos > end:
            raise ValueError(
                f"damaged block: a record needs bytes up to {pos}, the block holds {end}"
            )
        yield data[key_start:payload_start], count, data[payload_start:pos]


def iter_run(blocks: Iterable[bytes]) -> Iterator[Record]:
    """Yield the records of a run: its blocks' records, block after block."""
    for block in blocks:
        yield from unpack_block(block)


# -- merging ------------------------------------------------------------------


def merge_runs(runs: Sequence[Iterable[Record]]) -> Iterator[Record]:
    """Yield the records of all runs, merged by key_enc.

    Streams: holds one record (and, through iter_run, one block) per run.
    Records with equal key_enc come out in run order, then in their order
    within the run (heapq.merge breaks ties by iterable position).
    """
    yield from heapq.merge(*runs, key=itemgetter(0))


def group_records(records: Iterable[Record]) -> Iterator[tuple[bytes, list[tuple[int, bytes]]]]:
    """Yield (key_enc, [(count, payload), ...]) for each stretch of records with equal key_enc.

    Groups only adjacent records, so feed it sorted records (merge_runs output).
    """
    for key_enc, group in itertools.groupby(records, key=itemgetter(0)):
        yield key_enc, [(count, payload) for _, count, payload in group]

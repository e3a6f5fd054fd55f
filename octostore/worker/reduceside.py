"""Reduce side: keep a partition's runs on local disk, merge them, call reducefn per key.

The coordinator streams the runs of one partition to the worker; they go to
an unlinked temporary file (``ReceivedRuns``), so a partition larger than
memory costs disk, not RAM.  In shuffle mode 'paths' the coordinator sends
only where each run's blocks are in the shared map files, and the merge reads
them from there directly (``os.pread``), with no copy.  A k-way merge (``blocks.merge_runs``) then reads
one block per run at a time, and equal keys are grouped into a ``Values``
(values.py: lazy, cheap ``len()``, streamed from disk for a hot key).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from itertools import compress
from operator import itemgetter, ne
from typing import IO, Any

from ..blocks import Record, merge_blocks, pack_blocks
from ..errors import JobError, ReduceFailed
from ..job import WorkerFunctions, result_value
from ..keys import decode_keys
from .values import Values

_first = itemgetter(0)
_payload = itemgetter(2)

RESULT_BATCH_BYTES = 4 * 1024 * 1024
"""Reduce output sent to the coordinator per message."""


class ReceivedRuns:
    """The runs of one reduce attempt: blocks received (kept in an unlinked temporary file) or
    byte ranges of map files on the shared filesystem (paths mode), with one block index per run."""

    def __init__(self, runs: int, tmp_dir: str | None = None) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="octo-runs-", dir=tmp_dir)
        self._index: list[list[tuple[int, int, int]]] = [[] for _ in range(runs)]  # per run: (fd, offset, length)
        self._shared: dict[str, int] = {}  # map file path -> open fd
        self._end = 0
        self.bytes = 0

    def add(self, run: int, blocks: list[bytes]) -> None:
        """Append the next blocks of `run`."""
        self._index[run] += self._append(blocks)
        self.bytes += sum(map(len, blocks))

    def add_ranges(self, run: int, path: str, ranges: list[list[int]]) -> None:
        """Add blocks of `run` that stay in the shared map file `path`; raises OSError if it cannot be opened."""
        fd = self._shared.get(path)
        if fd is None:
            fd = self._shared[path] = os.open(path, os.O_RDONLY)
        self._index[run].extend((fd, offset, length) for offset, length in ranges)
        self.bytes += sum(length for _, length in ranges)

    def runs(self, *, fan_in: int, block_bytes: int, zstd_level: int) -> list[Iterator[bytes]]:
        """Return one block iterator per run, at most `fan_in` of them (call after the last add).

        The merge holds one decoded block of every run (a 128 KiB block of short keys is
        ~1 MB of Python records), and a big input spilled many times makes hundreds of runs
        per partition; so beyond `fan_in` (the memory plan's merge_fan_in) runs are first
        merged in groups into longer runs on local disk.  Memory then stays bounded whatever
        the number of runs, for one more pass over the data (Hadoop's io.sort.factor)."""
        self._file.flush()
        while len(self._index) > fan_in:
            self._index = [self._merge(self._index[i : i + fan_in], block_bytes, zstd_level)
                           for i in range(0, len(self._index), fan_in)]
        return [self._blocks(index) for index in self._index]

    def _merge(self, group: list[list[tuple[int, int, int]]], block_bytes: int,
               zstd_level: int) -> list[tuple[int, int, int]]:
        """Merge a group of runs into one run appended to the temporary file; return its index."""
        if len(group) == 1:
            return group[0]
        merged: list[tuple[int, int, int]] = []
        pending: list[Record] = []
        pending_bytes = 0
        for batch in merge_blocks([self._blocks(index) for index in group]):
            pending += batch  # batches can be tiny (a key's records run by run): pack whole blocks
            pending_bytes += sum(map(len, map(_first, batch))) + sum(map(len, map(_payload, batch)))
            if pending_bytes >= block_bytes:
                merged += self._append(pack_blocks(pending, block_bytes, zstd_level))
                pending, pending_bytes = [], 0
        merged += self._append(pack_blocks(pending, block_bytes, zstd_level))
        self._file.flush()
        return merged

    def _append(self, blocks: Iterable[bytes]) -> list[tuple[int, int, int]]:
        fd = self._file.fileno()
        index = []
        for block in blocks:
            self._file.write(block)
            index.append((fd, self._end, len(block)))
            self._end += len(block)
        return index

    def _blocks(self, index: list[tuple[int, int, int]]) -> Iterator[bytes]:
        for fd, offset, length in index:
            block = os.pread(fd, length, offset)
            if len(block) != length:  # a map file shorter than committed: the shared filesystem lost data
                raise OSError(f"short read of a map output block: {len(block)} of {length} bytes at {offset}")
            yield block

    def close(self) -> None:
        self._file.close()
        for fd in self._shared.values():
            os.close(fd)
        self._shared.clear()


def group_values(batches: Iterable[list[Record]],
                 values_memory_bytes: int) -> Iterator[tuple[bytes, Any, Values]]:
    """Group key-sorted batches of records into (key_enc, key, Values), streaming.

    A key may span batches; its Values is yielded once the next key shows up.
    Each batch's distinct keys are found and decoded column-wise (C loops),
    since this runs once per distinct key of the partition."""
    current: bytes | None = None
    key: Any = None
    values = Values(values_memory_bytes)
    for batch in batches:
        encs = list(map(_first, batch))
        starts = [0, *compress(range(1, len(encs)), map(ne, encs[1:], encs))]  # where a new key begins
        distinct = list(map(encs.__getitem__, starts))
        for key_enc, decoded, start, stop in zip(distinct, decode_keys(distinct), starts, [*starts[1:], len(encs)]):
            if key_enc != current:
                if current is not None:
                    yield current, key, values
                    values.close()
                current, key, values = key_enc, decoded, Values(values_memory_bytes)
            values.add_records(batch[start:stop])
    if current is not None:
        yield current, key, values
        values.close()


def reduce_runs(functions: WorkerFunctions, runs: list[Iterator[bytes]], *, block_bytes: int, zstd_level: int,
                values_memory_bytes: int, emit: Callable[[list[bytes]], None]) -> int:
    """Merge `runs`, call reducefn per key and emit result blocks; return the number of keys."""
    out: list[Record] = []
    out_bytes = keys = 0
    for key_enc, key, values in group_values(merge_blocks(runs), values_memory_bytes):
        try:
            returned = functions.reducefn(key, values)
        except Exception as e:  # user code
            raise ReduceFailed(key, e) from e
        try:
            payload = pickle.dumps(result_value(key, returned), protocol=5)
        except Exception as e:  # pickling user objects runs user code (__reduce__) and can fail any way
            raise JobError(f"{functions.job_name}: reducefn({key!r:.60}, ...) returned {type(returned).__name__}, "
                           f"which cannot be sent to the coordinator: {e}",
                           "return plain data (numbers, strings, lists, dicts, tuples)") from None
        out.append((key_enc, 1, payload))
        out_bytes += len(key_enc) + len(payload)
        keys += 1
        if out_bytes >= RESULT_BATCH_BYTES:
            emit(list(pack_blocks(out, block_bytes, zstd_level)))
            out, out_bytes = [], 0
    if out:
        emit(list(pack_blocks(out, block_bytes, zstd_level)))
    return keys

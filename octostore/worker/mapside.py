"""Map side: run mapfn, group pairs in a bounded buffer, spill sorted runs of zstd blocks.

For each input (source key, value) the worker calls ``mapfn`` and groups the
pairs in a dict ``key -> [values]``: one dict operation per pair, and the
reducer still sees every value (``len(values)`` stays exact; nothing is
combined unless the job defines ``combinefn``).  When the buffer's estimated
size passes ``buffer_bytes`` it is *spilled*: each distinct key is encoded
(``keys.encode_key``) and partitioned by a stable hash of its encoding, each
partition's records are sorted by encoded key, packed into ~128 KiB zstd
blocks and handed to ``emit`` (which streams them to the coordinator).  Memory
is bounded by the buffer whatever the input size; a task may produce several
runs.

The buffer size is an estimate, updated every ``_CHECK_EVERY`` pairs from a
sample of the current pair, because measuring every pair would cost as much
as the grouping itself.

Grouping happens on the Python key (a dict), so keys Python considers equal
(``1``, ``1.0``, ``True``) group together, which is also what the key encoding
does; the few encodings that can still collide (NaNs) are merged after
sorting.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

from ..blocks import Record, pack_blocks
from ..errors import JobError
from ..job import WorkerFunctions, describe_bad_pairs, pair_hint
from ..keys import UnsupportedKeyError, encode_key, partition_of

_CHECK_EVERY = 1 << 14  # pairs between buffer-size estimates
_KEY_OVERHEAD = 120  # bytes per distinct key beyond the key itself: dict slot, list header
MAX_VALUES_PER_RECORD = 1 << 16
"""Values of one key are split into records of at most this many, so no record
(and no block) grows with a hot key."""

Emit = Callable[[int, int, list[bytes]], None]  # (partition, run, blocks)


class MapOutput:
    """The grouping buffer of one map attempt and the runs it spills."""

    def __init__(self, functions: WorkerFunctions, partitions: int, *, buffer_bytes: int,
                 block_bytes: int, zstd_level: int, emit: Emit) -> None:
        self.functions = functions
        self.partitions = partitions
        self.buffer_bytes = buffer_bytes
        self.block_bytes = block_bytes
        self.zstd_level = zstd_level
        self.emit = emit
        self.groups: dict[Any, list[Any]] = {}
        self.runs = 0
        self.records_in = 0
        self.pairs_out = 0
        self._values = 0
        self._pair_bytes = 64  # running estimate of one value's size
        self._key_bytes = 64  # running estimate of one key's size

    def map_record(self, key: Any, value: Any) -> None:
        """Run mapfn on one input and buffer its pairs (the hot loop)."""
        self.records_in += 1
        result = self.functions.mapfn(key, value)
        groups, n, item = self.groups, 0, None
        try:
            for item in result:
                k, v = item
                values = groups.get(k)
                if values is None:
                    groups[k] = [v]
                else:
                    values.append(v)
                n += 1
                if not n & (_CHECK_EVERY - 1):
                    groups = self._check_buffer(k, v)  # a spill starts a new dict
        except (TypeError, ValueError) as e:
            if e.__traceback__ is not None and e.__traceback__.tb_next is None:  # raised here, not in mapfn
                raise self._contract_error(key, result, item) from None
            raise
        finally:
            self.pairs_out += n
            self._values += n % _CHECK_EVERY
        if self._estimated_bytes() >= self.buffer_bytes:
            self.spill()

    def _check_buffer(self, k: Any, v: Any) -> dict[Any, list[Any]]:
        self._values += _CHECK_EVERY
        self._pair_bytes = (self._pair_bytes + sys.getsizeof(v) + 8) // 2
        self._key_bytes = (self._key_bytes + sys.getsizeof(k)) // 2
        if self._estimated_bytes() >= self.buffer_bytes:
            self.spill()
        return self.groups

    def _estimated_bytes(self) -> int:
        return len(self.groups) * (self._key_bytes + _KEY_OVERHEAD) + self._values * self._pair_bytes

    def _contract_error(self, key: Any, result: Any, item: Any) -> JobError:
        problem = describe_bad_pairs(result, item)
        if problem is None:  # the pair was fine, so its key was unhashable
            problem = f"yielded the unhashable key {item[0]!r:.60}; keys must be None, bool, int, float, str, bytes or tuples of these"
        return JobError(f"{self.functions.job_name}: mapfn({key!r:.60}, ...) {problem}", pair_hint(result))

    def spill(self) -> None:
        """Write the buffer as one run: per partition, sorted records packed into blocks."""
        if not self.groups:
            return
        by_partition: list[list[tuple[bytes, Any, list[Any]]]] = [[] for _ in range(self.partitions)]
        for k, values in self.groups.items():
            encoded = self._encode(k)
            by_partition[self._partition(k, encoded)].append((encoded, k, values))
        self.groups, self._values = {}, 0
        for partition, items in enumerate(by_partition):
            if items:
                items.sort(key=itemgetter(0))
                blocks = list(pack_blocks(self._records(items), self.block_bytes, self.zstd_level))
                self.emit(partition, self.runs, blocks)
        self.runs += 1

    def _encode(self, k: Any) -> bytes:
        try:
            return encode_key(k)
        except UnsupportedKeyError as e:
            raise JobError(f"{self.functions.job_name}: mapfn yielded the key {k!r:.60}: {e}",
                           "use a str, number, bytes or a tuple of these as the key") from None

    def _partition(self, k: Any, encoded: bytes) -> int:
        if self.functions.partitionfn is None:
            return partition_of(encoded, self.partitions)
        p = self.functions.partitionfn(k, self.partitions)
        if not isinstance(p, int) or not 0 <= p < self.partitions:
            raise JobError(f"{self.functions.job_name}: partitionfn({k!r:.60}, {self.partitions}) returned {p!r}, "
                           f"not an int in range({self.partitions})")
        return p

    def _records(self, items: list[tuple[bytes, Any, list[Any]]]) -> Iterator[Record]:
        combinefn = self.functions.combinefn
        for encoded, k, values in _merge_equal(items):
            if combinefn is not None:
                values = [combinefn(k, values)]
            for start in range(0, len(values), MAX_VALUES_PER_RECORD):
                chunk = values[start : start + MAX_VALUES_PER_RECORD]
                yield encoded, len(chunk), pickle.dumps(chunk, protocol=5)


def _merge_equal(items: list[tuple[bytes, Any, list[Any]]]) -> Iterator[tuple[bytes, Any, list[Any]]]:
    """Merge neighbours with equal encodings (keys Python kept apart but we group, e.g. NaNs)."""
    pending = items[0]
    for item in items[1:]:
        if item[0] == pending[0]:
            pending = (pending[0], pending[1], pending[2] + item[2])
        else:
            yield pending
            pending = item
    yield pending

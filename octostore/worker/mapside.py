"""Map side: run mapfn, group pairs in a bounded buffer, spill sorted runs of zstd blocks.

For each input (source key, value) the worker calls ``mapfn`` and takes its
pairs in chunks of ``_CHUNK`` (``islice``: the user's generator runs in a C
loop).  A chunk whose values are all the identical object (the word count's
``1``) has its keys counted, one table of counts per such value (run-length
form, see values.py); any other chunk is grouped into ``key -> [values]``.
Either way the reducer sees every value: nothing is combined unless the job
defines ``combinefn`` (then the run-length path is skipped and each key's
list is combined at spill time).

With the compiled ``KeyCounts`` (``_keycounts.c``, built at install when a C
compiler is there), the counts live in it, and after a run-length chunk the
pairs that follow are counted in its C loop until one does not match; that
pair starts the next chunk.  Without the extension every pair goes through
chunks and ``Counter``: the same records, and on 4 word count files 0.82 s
of map side instead of 0.53 s.

When the buffer's estimated size passes ``buffer_bytes`` it is *spilled*: each
distinct key is encoded and partitioned by a stable hash of its encoding
(``keys.encode_and_partition``, unless the job has a ``partitionfn``), each
partition's records are sorted by encoded key (for plain str keys all three in
``_buckets.c``, the compiled twin of keys.py's rule), packed into ~128 KiB
zstd blocks and handed to ``emit`` (which streams them to the coordinator).
Memory is bounded by the buffer whatever the input size; a task may produce
several runs.  The size is an estimate, refreshed per chunk
from a sample, because measuring every pair would cost as much as grouping.

Grouping happens on the Python key, so keys Python considers equal (``1``,
``1.0``, ``True``) group together, which is also what the key encoding does;
the few encodings that can still collide (NaNs) meet after sorting, as
neighbouring records of one key.
"""

from __future__ import annotations

import sys
from collections import Counter, _count_elements  # type: ignore[attr-defined]
from collections.abc import Callable
from itertools import groupby, islice, repeat
from operator import is_, itemgetter
from typing import Any

from ..blocks import Record, pack_blocks
from ..errors import JobError, UnsupportedKeyError
from ..job import NO_ITEM, WorkerFunctions, describe_bad_pairs, pair_hint
from ..keys import encode_and_partition, encode_key, encode_keys
from .values import MAX_VALUES_PER_RECORD, pack_list, pack_repeated

try:
    from ._buckets import bucket_str_records
    from ._keycounts import KeyCounts
except ImportError:  # not built (no C compiler at install): chunks, Counter and column-at-a-time spills
    bucket_str_records = KeyCounts = None

_CHUNK = 512  # pairs taken from mapfn at a time: small enough to stay in cache (measured 512 < 4096)
_KEY_OVERHEAD = 120  # bytes per distinct key beyond the key itself: dict slot, list or count
_MAX_REPEATED = 8  # distinct repeated values counted run-length before falling back to lists
_RUN = 8192  # pairs the compiled loop counts between two checks of the buffer's size
_NOT_COUNTED = object()  # _add_chunk's answer for a chunk grouped into lists
_first = itemgetter(0)

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
        self.runs = 0
        self.records_in = 0
        self.pairs_out = 0
        self._run_length = functions.combinefn is None
        self._compiled = KeyCounts is not None and self._run_length
        self._compiled_buckets = (bucket_str_records is not None and functions.partitionfn is None
                                  and functions.combinefn is None)
        self._clear()
        self._value_bytes = 64  # running estimates, refreshed per chunk
        self._key_bytes = 64

    def _clear(self) -> None:
        self.groups: dict[Any, list[Any]] = {}
        self.repeated: dict[int, tuple[Any, Any]] = {}  # id(value) -> (value, its KeyCounts or Counter)
        self._listed_values = 0

    def map_record(self, key: Any, value: Any) -> None:
        """Run mapfn on one input and buffer its pairs."""
        self.records_in += 1
        result = self.functions.mapfn(key, value)
        if not hasattr(result, "__iter__") or isinstance(result, (str, bytes, dict)):
            raise self._contract_error(key, result, NO_ITEM)
        pairs = iter(result)
        chunk = list(islice(pairs, _CHUNK))
        while chunk:
            self.pairs_out += len(chunk)
            counted_value = self._add_chunk(key, result, chunk)
            self._spill_if_full()
            if counted_value is not _NOT_COUNTED and self._compiled:
                odd = self._count_while(pairs, counted_value)
                chunk = [*odd, *islice(pairs, _CHUNK - len(odd))] if odd else []
            else:
                chunk = list(islice(pairs, _CHUNK))

    def _count_while(self, pairs: Any, value: Any) -> tuple[Any, ...]:
        """Count pairs with this value in the compiled loop; return (the first other item,) or () at the end."""
        while True:
            counts = self._counts_for(value)  # fresh after a spill
            assert counts is not None  # value has its counts already, or the spill emptied the table
            counted, odd = counts.count_run(pairs, value, _RUN)
            self.pairs_out += counted
            self._sample(counts.newest_key(), None)  # new keys are what fill the buffer
            self._spill_if_full()
            if odd or counted < _RUN:
                return odd

    def _spill_if_full(self) -> None:
        if self._estimated_bytes() >= self.buffer_bytes:
            self.spill()

    def _add_chunk(self, key: Any, result: Any, chunk: list[Any]) -> Any:
        """Buffer a chunk of pairs; return the value it was counted under, or _NOT_COUNTED."""
        try:
            keys, values = zip(*chunk, strict=True)  # ValueError unless every item has exactly 2 parts
            first = values[0]
            if self._run_length and all(map(is_, values, repeat(first))):
                counts = self._counts_for(first)
                if counts is not None:
                    if self._compiled:
                        counts.add(keys)
                    else:
                        _count_elements(counts, keys)  # Counter.update's C loop, without its per-call checks
                    self._sample(keys[0], None)
                    return first
            groups = self.groups
            for k, v in zip(keys, values):
                listed = groups.get(k)
                if listed is None:
                    groups[k] = [v]
                else:
                    listed.append(v)
            self._listed_values += len(values)
            self._sample(keys[0], first)
            return _NOT_COUNTED
        except (TypeError, ValueError):  # an item that is not a pair, or an unhashable key
            raise self._contract_error(key, result, _first_bad(chunk)) from None

    def _counts_for(self, value: Any) -> Any:
        """The KeyCounts (or Counter) of pairs with this value; None when the table is full."""
        entry = self.repeated.get(id(value))
        if entry is None:
            if len(self.repeated) >= _MAX_REPEATED:
                return None
            counts = KeyCounts() if self._compiled else Counter()
            entry = self.repeated[id(value)] = (value, counts)  # holding value keeps its id unique
        return entry[1]

    def _sample(self, k: Any, v: Any) -> None:
        self._key_bytes = (self._key_bytes + sys.getsizeof(k)) // 2
        if v is not None:
            self._value_bytes = (self._value_bytes + sys.getsizeof(v) + 8) // 2

    def _estimated_bytes(self) -> int:
        distinct = len(self.groups) + sum(len(counts) for _, counts in self.repeated.values())
        return distinct * (self._key_bytes + _KEY_OVERHEAD) + self._listed_values * self._value_bytes

    def _contract_error(self, key: Any, result: Any, item: Any) -> JobError:
        problem = describe_bad_pairs(result, item)
        if problem is not None:
            return JobError(f"{self.functions.job_name}: mapfn({key!r:.60}, ...) {problem}", pair_hint(result))
        try:  # the pair was fine, so its key was unhashable: let the key codec say why
            encode_key(item[0])
            hint = None
        except UnsupportedKeyError as e:
            hint = e.hint
        return JobError(f"{self.functions.job_name}: mapfn({key!r:.60}, ...) yielded the unhashable key "
                        f"{item[0]!r:.60} ({type(item[0]).__name__}); keys must be None, bool, int, float, "
                        "str, bytes or tuples of these", hint)

    def spill(self) -> None:
        """Write the buffer as one run: per partition, records sorted by encoded key, in blocks."""
        keys, counts, payloads = self._columns()
        if not keys:
            return
        self._clear()
        buckets = None
        if self._compiled_buckets:
            buckets = bucket_str_records(keys, counts, payloads, self.partitions)  # None unless all plain str
        if buckets is None:
            buckets = self._buckets(keys, counts, payloads)
        for partition, records in enumerate(buckets):
            if records:
                if self.functions.combinefn is not None:
                    records = self._combine(records)
                self.emit(partition, self.runs, list(pack_blocks(records, self.block_bytes, self.zstd_level)))
        self.runs += 1

    def _buckets(self, keys: list[Any], counts: list[int], payloads: list[Any]) -> list[list[Any]]:
        """Per partition, the rows (encoded key, count, payload[, key if combining]) sorted by encoded key.

        Column at a time (encode all keys, hash all, then one small loop to bucket
        rows by partition and a sort per bucket), so the cost per distinct key stays
        mostly in C loops: one spill of 127 k distinct keys went from 0.81 s to
        ~0.25 s (cProfile).  _buckets.c does the same for str keys in under half that
        (163 k keys: 0.11-0.12 s against 0.24-0.30 s here)."""
        encoded, owners = self._encode_and_partition(keys)
        combining = self.functions.combinefn is not None
        rows = zip(encoded, counts, payloads, keys) if combining else zip(encoded, counts, payloads)
        buckets: list[list[Any]] = [[] for _ in range(self.partitions)]
        appenders = [bucket.append for bucket in buckets]
        for partition, row in zip(owners, rows):  # ~70 ns a key
            appenders[partition](row)
        for records in buckets:
            records.sort(key=_first)
        return buckets

    def _columns(self) -> tuple[list[Any], list[int], list[Any]]:
        """The buffer as parallel columns (key, count, payload); a key may appear more than once."""
        keys: list[Any] = []
        counts: list[int] = []
        payloads: list[Any] = []
        for value, key_counts in self.repeated.values():
            keys += key_counts.keys()
            counts += key_counts.values()
            payloads += [pack_repeated(value)] * len(key_counts)  # packed once per distinct value
        combining = self.functions.combinefn is not None
        for k, values in self.groups.items():
            step = len(values) if combining else MAX_VALUES_PER_RECORD  # combinefn needs them all at once
            for start in range(0, len(values), step):
                keys.append(k)
                counts.append(min(step, len(values) - start))
                payloads.append(values[start : start + step] if combining else pack_list(values[start : start + step]))
        return keys, counts, payloads

    def _encode_and_partition(self, keys: list[Any]) -> tuple[list[bytes], list[int]]:
        """Each key's encoding and the partition that owns it: keys.py's rule, or the job's partitionfn."""
        try:
            if self.functions.partitionfn is None:
                return encode_and_partition(keys, self.partitions)
            encoded = encode_keys(keys)
        except UnsupportedKeyError as e:
            bad = next(k for k in keys if not _encodes(k))
            raise JobError(f"{self.functions.job_name}: mapfn yielded the key {bad!r:.60}: {e}",
                           e.hint or "use a str, number, bytes or a tuple of these as the key") from None
        return encoded, [self._partition(k) for k in keys]

    def _partition(self, k: Any) -> int:
        assert self.functions.partitionfn is not None
        p = self.functions.partitionfn(k, self.partitions)
        if not isinstance(p, int) or not 0 <= p < self.partitions:
            raise JobError(f"{self.functions.job_name}: partitionfn({k!r:.60}, {self.partitions}) returned {p!r}, "
                           f"not an int in range({self.partitions})")
        return p

    def _combine(self, rows: list[tuple[bytes, int, Any, Any]]) -> list[Record]:
        """One record per key: combinefn over all its values (keys that meet only after encoding, e.g. NaNs, too)."""
        combinefn = self.functions.combinefn
        assert combinefn is not None
        out: list[Record] = []
        for encoded, group in groupby(rows, key=_first):
            group_rows = list(group)
            values = [v for _, _, vs, _ in group_rows for v in vs]
            out.append((encoded, 1, pack_list([combinefn(group_rows[0][3], values)])))
        return out


def _encodes(key: Any) -> bool:
    try:
        encode_key(key)
        return True
    except UnsupportedKeyError:
        return False


def _first_bad(chunk: list[Any]) -> Any:
    for item in chunk:
        try:
            k, _ = item
            hash(k)
        except (TypeError, ValueError):
            return item
    return chunk[0]

"""The map side's buffer, with the compiled counting loop and without it.

Every case runs twice, on the compiled counts and spill (octostore/worker/
_keycounts.c, _buckets.c) and on the pure Python they stand in for, and checks the spilled records,
decoded, against an independent reference: the pairs mapfn yields, grouped
by key with a dict.  Values are compared as multisets of repr(), so 1, 1.0 and
True stay distinct, as the reducer must see them.
"""

from __future__ import annotations

import gc
import random
import weakref
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from octostore.blocks import unpack_block
from octostore.errors import JobError
from octostore.job import WorkerFunctions
from octostore.keys import decode_key, encode_and_partition
from octostore.worker import mapside
from octostore.worker.values import unpack_values

PARTITIONS = 4
COMPILED_AND_PURE = pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])


def test_the_compiled_loop_is_built() -> None:
    """`pip install -e .` builds the extension where a C compiler exists, as on every machine we test on."""
    assert mapside.KeyCounts is not None, "octostore/worker/_keycounts.c did not build: see `pip install -e .`"


def run_map(pairs_of: Callable[[Any, Any], Iterator[Any]], records: list[tuple[Any, Any]], *, compiled: bool,
            monkeypatch: pytest.MonkeyPatch, buffer_bytes: int = 64 << 20,
            combinefn: Callable[[Any, Any], Any] | None = None) -> tuple[mapside.MapOutput, dict[Any, Counter[str]]]:
    """Map `records` through a MapOutput; return it and {key: Counter(repr(value))} of everything it spilled."""
    if not compiled:
        monkeypatch.setattr(mapside, "KeyCounts", None)
        monkeypatch.setattr(mapside, "bucket_str_records", None)
    spilled: dict[Any, Counter[str]] = {}

    def emit(partition: int, run: int, blocks: list[bytes]) -> None:
        for block in blocks:
            for key_enc, count, payload in unpack_block(block):
                assert encode_and_partition([decode_key(key_enc)], PARTITIONS) == ([key_enc], [partition])
                values = spilled.setdefault(decode_key(key_enc), Counter())
                values.update(map(repr, unpack_values(count, payload)))

    functions = WorkerFunctions("t", "t.py", "", pairs_of, lambda k, v: (k, v), combinefn, None)
    output = mapside.MapOutput(functions, PARTITIONS, buffer_bytes=buffer_bytes, block_bytes=4096, zstd_level=1,
                               emit=emit)
    for key, value in records:
        output.map_record(key, value)
    output.spill()
    return output, spilled


def reference(pairs_of: Callable[[Any, Any], Iterator[Any]], records: list[tuple[Any, Any]]) -> dict[Any, Counter[str]]:
    expected: dict[Any, Counter[str]] = {}
    for key, value in records:
        for k, v in pairs_of(key, value):
            expected.setdefault(k, Counter())[repr(v)] += 1
    return expected


def words(key: Any, text: str) -> Iterator[tuple[str, int]]:
    for word in text.split():
        yield word.lower(), 1


def text_records(count: int, words_each: int, seed: int = 7) -> list[tuple[Any, Any]]:
    rng = random.Random(seed)
    vocabulary = [f"W{i}" for i in range(5000)]
    return [(i, " ".join(rng.choices(vocabulary, k=words_each))) for i in range(count)]


@COMPILED_AND_PURE
def test_word_count_with_spills(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    records = text_records(6, 40_000)
    output, spilled = run_map(words, records, compiled=compiled, monkeypatch=monkeypatch, buffer_bytes=200_000)
    assert spilled == reference(words, records)
    assert output.runs > 6  # the buffer filled inside records, so runs were cut in the middle of counting
    assert output.pairs_out == 240_000 and output.records_in == 6


def mixed(key: Any, n: int) -> Iterator[Any]:
    """Long stretches of one value, then others: 1, 2, True, 1.0, None, a fresh list, then 1 again."""
    for i in range(n):
        k = f"k{i % 97}"
        stretch = (i // 3000) % 8
        yield k, [1, 2, True, 1.0, None, "s", [i], 1][stretch]


@COMPILED_AND_PURE
def test_values_switching_mid_stream(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [(0, 50_000), (1, 7), (2, 30_001)]
    _, spilled = run_map(mixed, records, compiled=compiled, monkeypatch=monkeypatch)
    assert spilled == reference(mixed, records)
    assert spilled["k0"]["True"] > 0 and spilled["k0"]["1.0"] > 0 and spilled["k0"]["1"] > 0


def many_values(key: Any, n: int) -> Iterator[tuple[str, int]]:
    """More distinct repeated values than the run-length table holds (_MAX_REPEATED): the rest go to lists."""
    for i in range(n):
        yield f"k{i % 13}", i // 1000


@COMPILED_AND_PURE
def test_more_repeated_values_than_the_table_holds(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [(0, 30_000)]
    _, spilled = run_map(many_values, records, compiled=compiled, monkeypatch=monkeypatch)
    assert spilled == reference(many_values, records)


def list_pairs(key: Any, n: int) -> Iterator[Any]:
    """Pairs as 2-item lists after a stretch of tuples: a pair is any 2-item iterable."""
    for i in range(n):
        yield (f"k{i % 5}", 1) if i < 5000 else [f"k{i % 5}", 1]


@COMPILED_AND_PURE
def test_pairs_that_are_lists(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [(0, 12_000)]
    _, spilled = run_map(list_pairs, records, compiled=compiled, monkeypatch=monkeypatch)
    assert spilled == reference(list_pairs, records)


def sum_values(key: Any, values: list[int]) -> int:
    return sum(values)


@COMPILED_AND_PURE
def test_combinefn_sees_every_value(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    records = text_records(2, 20_000)
    _, spilled = run_map(words, records, compiled=compiled, monkeypatch=monkeypatch, combinefn=sum_values)
    expected = {k: Counter({repr(sum(int(v) * n for v, n in c.items())): 1}) for k, c in reference(words, records).items()}
    assert spilled == expected


def bad_after(good: int, bad: Any) -> Callable[[Any, Any], Iterator[Any]]:
    def pairs(key: Any, value: Any) -> Iterator[Any]:
        for i in range(good):
            yield f"k{i % 11}", 1
        yield bad
        yield "after", 1
    return pairs


@COMPILED_AND_PURE
@pytest.mark.parametrize("bad, message", [
    (None, "mapfn(0, ...) yielded None"),
    (("a", 1, 2), "mapfn(0, ...) yielded ('a', 1, 2)"),
    (([1, 2], 1), "yielded the unhashable key [1, 2] (list)"),
], ids=["none", "triple", "unhashable"])
def test_a_bad_pair_after_thousands_of_good_ones(compiled: bool, bad: Any, message: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(JobError) as caught:
        run_map(bad_after(20_000, bad), [(0, None)], compiled=compiled, monkeypatch=monkeypatch)
    assert message in str(caught.value)


def fails_after(key: Any, n: int) -> Iterator[tuple[str, int]]:
    for i in range(n):
        yield f"k{i % 11}", 1
    raise ZeroDivisionError("the job's own error")


@COMPILED_AND_PURE
def test_an_exception_in_mapfn_propagates(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ZeroDivisionError, match="the job's own error"):
        run_map(fails_after, [(0, 20_000)], compiled=compiled, monkeypatch=monkeypatch)


VALUES = [1, 2, True, 1.0, None, "x"]  # shared objects, so stretches of one value are identical objects


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, len(VALUES) - 1), st.integers(1, 3000)), max_size=12),
       st.integers(2_000, 200_000))
def test_compiled_and_pure_give_the_same_records(stretches: list[tuple[int, int, int]], buffer_bytes: int) -> None:
    """Random stretches of (key pattern, value, length), on both paths, against the reference."""
    def pairs_of(key: Any, n: int) -> Iterator[tuple[Any, Any]]:
        for pattern, value, length in stretches:
            for i in range(length):
                yield (i % (pattern * 7 + 1), f"s{i % 3}") if pattern == 6 else f"k{i % (pattern * 50 + 1)}", VALUES[value]

    records = [(0, None), (1, None)]
    expected = reference(pairs_of, records)
    for compiled in (True, False):
        with pytest.MonkeyPatch.context() as monkeypatch:
            _, spilled = run_map(pairs_of, records, compiled=compiled, monkeypatch=monkeypatch,
                                 buffer_bytes=buffer_bytes)
        assert spilled == expected


class TestKeyCounts:
    """The compiled counts' own contract (mapside.py relies on each point)."""

    @pytest.fixture
    def counts(self) -> Any:
        if mapside.KeyCounts is None:
            pytest.skip("not built")
        return mapside.KeyCounts()

    def test_count_run_stops_at_the_limit_and_resumes_where_it_stopped(self, counts: Any) -> None:
        pairs = iter([("a", 1), ("b", 1), ("a", 1), ("c", 1)])
        assert counts.count_run(pairs, 1, 3) == (3, ())
        assert (counts.keys(), counts.values(), len(counts)) == (["a", "b"], [2, 1], 2)
        assert counts.count_run(pairs, 1, 3) == (1, ())  # fewer than the limit: exhausted
        assert (counts.keys(), counts.values(), counts.newest_key()) == (["a", "b", "c"], [2, 1, 1], "c")

    @pytest.mark.parametrize("odd", [("a", 2), ("a", True), ["a", 1], ("a", 1, 0), None, ([1], 1)],
                             ids=["other-value", "equal-not-identical", "list", "triple", "none", "unhashable"])
    def test_count_run_returns_the_first_item_it_does_not_count(self, counts: Any, odd: Any) -> None:
        pairs = iter([("a", 1), odd, ("a", 1)])
        assert counts.count_run(pairs, 1, 10) == (1, (odd,))
        assert (counts.keys(), counts.values()) == (["a"], [1])
        assert next(pairs) == ("a", 1)  # the item after the odd one is still in the iterator

    def test_count_run_lets_the_iterators_exception_through(self, counts: Any) -> None:
        def pairs() -> Iterator[tuple[str, int]]:
            yield "a", 1
            raise ZeroDivisionError("mapfn's")
        with pytest.raises(ZeroDivisionError, match="mapfn's"):
            counts.count_run(pairs(), 1, 10)
        assert counts.values() == [1]

    def test_add_counts_keys_and_refuses_unhashable_ones(self, counts: Any) -> None:
        counts.add(["x", "y", "x"])
        counts.add(iter(["y"]))
        assert (counts.keys(), counts.values(), counts.newest_key()) == (["x", "y"], [2, 2], "y")
        with pytest.raises(TypeError, match="unhashable"):
            counts.add([[1]])

    def test_keys_python_considers_equal_share_a_count(self, counts: Any) -> None:
        counts.add([1, 1.0, True, "1"])
        assert (counts.keys(), counts.values()) == ([1, "1"], [3, 1])

    def test_many_keys_and_large_counts(self, counts: Any) -> None:
        keys = [f"k{i}" for i in range(5000)]  # past the first allocation of 1,024 slots, several times
        for _ in range(3):
            counts.add(keys)
        assert counts.count_run(iter([("k7", 1)] * 300_000), 1, 1 << 20) == (300_000, ())
        assert counts.keys() == keys and counts.values() == [3] * 7 + [300_003] + [3] * 4992

    def test_a_key_that_refers_back_to_its_counts_is_collected(self, counts: Any) -> None:
        class Key:
            def __init__(self, owner: Any) -> None:
                self.owner = owner

        own = mapside.KeyCounts()  # not the fixture's, which pytest holds until the test ends
        key = Key(own)
        own.add([key])  # a cycle through the C object: only the collector can free it
        alive = weakref.ref(key)
        del own, key
        gc.collect()
        assert alive() is None

    def test_rejects_what_is_not_an_iterator(self, counts: Any) -> None:
        with pytest.raises(TypeError):
            counts.count_run([("a", 1)], 1, 10)
        with pytest.raises(TypeError):
            mapside.KeyCounts("an argument")


def placements(buckets: list[list[tuple[bytes, int, bytes]]]) -> dict[int, tuple[bytes, int]]:
    """{row: (encoded key, partition)} of bucket_str_records' output, whose counts column held the row numbers."""
    return {row: (encoded, partition) for partition, bucket in enumerate(buckets) for encoded, row, _ in bucket}


def is_left_to_python(key: str) -> bool:
    """A key bucket_str_records refuses: it holds a NUL or a lone surrogate (not strict UTF-8)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\x00" in key


class TestBucketStrRecords:
    """The compiled spill of str keys against the Python one (MapOutput._buckets) and against
    keys.encode_and_partition, the rule it is the compiled twin of, row for row."""

    @pytest.fixture
    def bucket(self) -> Any:
        if mapside.bucket_str_records is None:
            pytest.skip("not built")
        return mapside.bucket_str_records

    @staticmethod
    def python_buckets(keys: list[Any], partitions: int) -> list[list[Any]]:
        functions = WorkerFunctions("t", "t.py", "", words, lambda k, v: (k, v), None, None)
        output = mapside.MapOutput(functions, partitions, buffer_bytes=1 << 20, block_bytes=4096, zstd_level=1,
                                   emit=lambda *a: None)
        return output._buckets(keys, list(range(len(keys))), [b"p%d" % i for i in range(len(keys))])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
                    max_size=300), st.integers(1, 9))
    def test_the_same_records_as_python(self, keys: list[str], partitions: int) -> None:
        """Duplicates included: rows of equal keys stay in row order, as a stable sort keeps them."""
        if mapside.bucket_str_records is None:
            pytest.skip("not built")
        got = mapside.bucket_str_records(keys, list(range(len(keys))), [b"p%d" % i for i in range(len(keys))],
                                         partitions)
        assert got == self.python_buckets(keys, partitions)

    @pytest.mark.parametrize("odd", ["nul\x00inside", "lone \ud800 surrogate", 7, ("a",), b"bytes"])
    def test_none_for_keys_it_leaves_to_python(self, bucket: Any, odd: Any) -> None:
        keys = ["a", "b", odd, "c"]
        assert bucket(keys, [1] * 4, [b""] * 4, 3) is None

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.text(max_size=12), max_size=300), st.integers(1, 64))
    def test_the_twin_of_encode_and_partition(self, keys: list[str], partitions: int) -> None:
        """Every row lands, encoded the same, in the partition keys.py's rule names; None only for the odd keys."""
        if mapside.bucket_str_records is None:
            pytest.skip("not built")
        got = mapside.bucket_str_records(keys, list(range(len(keys))), [b""] * len(keys), partitions)
        assert (got is None) == any(map(is_left_to_python, keys))
        if got is not None:
            assert placements(got) == dict(enumerate(zip(*encode_and_partition(keys, partitions))))

    @pytest.mark.parametrize("partitions", [1, 7, 1000])
    def test_the_twin_of_encode_and_partition_on_many_random_keys(self, bucket: Any, partitions: int) -> None:
        rng = random.Random(partitions)
        alphabet = [chr(c) for c in [*range(1, 0xD800), *range(0xE000, 0x110000)] if c % 97 == 0] + list("abcxyz")
        keys = ["".join(rng.choices(alphabet, k=rng.randint(0, 16))) for _ in range(50_000)]
        got = bucket(keys, list(range(len(keys))), [b""] * len(keys), partitions)
        assert placements(got) == dict(enumerate(zip(*encode_and_partition(keys, partitions))))

    def test_crc32_is_zlibs(self, bucket: Any) -> None:
        from octostore.worker._buckets import crc32
        rng = random.Random(8)
        for size in [0, 1, 2, 3, 7, 64, 1000]:
            data = rng.randbytes(size)
            assert crc32(data) == zlib.crc32(data)

    def test_refuses_columns_of_different_lengths(self, bucket: Any) -> None:
        with pytest.raises(ValueError):
            bucket(["a", "b"], [1], [b"", b""], 2)
        with pytest.raises(ValueError):
            bucket(["a"], [1], [b""], 0)

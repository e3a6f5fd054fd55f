"""Tests for octostore.keys: order and equality kept by the encoding, round trips, the partition hash."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from octostore.errors import UnsupportedKeyError
from octostore.keys import decode_key, decode_keys, encode_and_partition, encode_key, encode_keys

REPO_ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = "keys must be None, bool, int, float, str, bytes or tuples of these"

# -- strategies ---------------------------------------------------------------

INT_LIMIT = 2**1024 - 1  # the largest magnitude a key may have

# Magnitudes around each change of byte length near the long-header escape (124 -> 125 bytes).
LENGTH_EDGES = [sign * (2 ** (8 * k) + d) for k in range(123, 128) for d in (-1, 0) for sign in (1, -1)]

numbers = st.one_of(
    st.integers(),
    st.sampled_from(LENGTH_EDGES),
    st.integers(min_value=-INT_LIMIT, max_value=INT_LIMIT),
    st.sampled_from([2**900, -(2**900), 2**900 + 1, INT_LIMIT, -INT_LIMIT, 2**53 + 1]),
    st.floats(allow_nan=False),
    st.floats(min_value=-4.0, max_value=4.0),  # fractions near small integers
    st.booleans(),
)
texts = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(["\x00", "\x01", "a", "\ud800", "\udfff", "\U0001f600", "\uffff"])),
)
raw_bytes = st.one_of(st.binary(), st.binary().map(lambda b: b.replace(b"a", b"\x00").replace(b"b", b"\xff")))
LEAVES = {"none": st.none(), "number": numbers, "str": texts, "bytes": raw_bytes}


def patterns(depth: int) -> st.SearchStrategy[object]:
    """A type pattern: a leaf type name, or a tuple of patterns, nested up to depth."""
    leaf = st.sampled_from(sorted(LEAVES))
    if depth == 0:
        return leaf
    return st.one_of(leaf, st.lists(patterns(depth - 1), max_size=4).map(tuple))


def values_of(pattern: object) -> st.SearchStrategy[object]:
    """Keys of one pattern; tuples may stop early, so prefixes get compared too."""
    if isinstance(pattern, tuple):
        return st.integers(0, len(pattern)).flatmap(
            lambda length: st.tuples(*(values_of(p) for p in pattern[:length]))
        )
    assert isinstance(pattern, str)
    return LEAVES[pattern]


def twin(key: object) -> object:
    """Return a key equal to key whose numbers have another type (True -> 1.0, 1.0 -> 1, 1 -> 1.0)."""
    if isinstance(key, tuple):
        return tuple(twin(item) for item in key)
    if isinstance(key, bool):
        return float(key)
    if isinstance(key, int):
        try:
            return float(key) if float(key) == key else key
        except OverflowError:
            return key
    if isinstance(key, float) and math.isfinite(key) and key.is_integer():
        return int(key)
    return key


@st.composite
def comparable_pairs(draw: st.DrawFn) -> tuple[object, object]:
    """Two keys Python can compare (one pattern, no bare None); often equal ones."""
    pattern = draw(patterns(3).filter(lambda p: p != "none"))
    a = draw(values_of(pattern))
    b = draw(st.one_of(values_of(pattern), st.just(a), st.just(twin(a))))
    return a, b


def canonical(key: object) -> object:
    """What decode_key should return for key: ints for integral numbers."""
    if isinstance(key, tuple):
        return tuple(canonical(item) for item in key)
    if isinstance(key, int):
        return int(key)
    if isinstance(key, float) and math.isfinite(key) and key.is_integer():
        return int(key)
    return key


# -- properties ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(comparable_pairs())
def test_encoding_keeps_order_and_equality(pair: tuple[object, object]) -> None:
    a, b = pair
    assert (a < b) == (encode_key(a) < encode_key(b))  # type: ignore[operator]
    assert (a == b) == (encode_key(a) == encode_key(b))


@settings(max_examples=200, deadline=None)
@given(patterns(3).flatmap(values_of))
def test_decode_returns_the_key_with_ints_for_integral_numbers(key: object) -> None:
    decoded = decode_key(encode_key(key))
    assert decoded == key
    assert repr(decoded) == repr(canonical(key))  # also checks types: int, float, str, bytes, tuple


@settings(max_examples=200, deadline=None)
@given(st.lists(patterns(2).flatmap(values_of), max_size=12))
def test_sorting_by_encoding_groups_types_in_tag_order(keys: list[object]) -> None:
    rank = {type(None): 0, bool: 1, int: 1, float: 1, str: 2, bytes: 3, tuple: 4}
    ranks = [rank[type(k)] for k in sorted(keys, key=encode_key)]
    assert ranks == sorted(ranks)


@settings(max_examples=200, deadline=None)
@given(st.lists(patterns(2).flatmap(values_of), max_size=12), st.integers(1, 10_000))
def test_encode_and_partition_gives_encode_key_and_partitions_in_range(keys: list[object], partitions: int) -> None:
    encoded, owners = encode_and_partition(keys, partitions)
    assert encoded == [encode_key(k) for k in keys]
    assert len(owners) == len(keys) and all(0 <= p < partitions for p in owners)
    by_encoding = dict(zip(encoded, owners))
    assert [by_encoding[e] for e in encoded] == owners  # equal keys (1, 1.0, True; every NaN) share a partition


# -- numbers ------------------------------------------------------------------


def test_true_one_and_one_point_zero_are_one_key() -> None:
    assert encode_key(True) == encode_key(1) == encode_key(1.0)
    assert encode_key(False) == encode_key(0) == encode_key(0.0)
    assert type(decode_key(encode_key(True))) is int


def test_negative_zero_is_zero() -> None:
    assert encode_key(-0.0) == encode_key(0.0) == encode_key(0)
    assert repr(decode_key(encode_key(-0.0))) == "0"


def test_all_nans_are_one_key_after_infinity() -> None:
    nans = [math.nan, float("nan"), -math.nan, math.inf * 0, math.inf - math.inf]
    assert len({encode_key(nan) for nan in nans}) == 1
    assert encode_key(math.nan) > encode_key(math.inf) > encode_key(2**1024 - 1)
    assert math.isnan(decode_key(encode_key(math.nan)))  # type: ignore[arg-type]


def test_fractions_sort_between_integers() -> None:
    keys = [-math.inf, -2, -1.5, -1, -0.5, -1e-300, 0, 1e-300, 0.5, 1, 1.5, 2, 2**1023 * 1.5, math.inf]
    assert sorted(keys, key=encode_key) == keys
    assert len({encode_key(k) for k in keys}) == len(keys)


def test_tiny_negative_fractions_stay_distinct() -> None:
    # -1e-300 - floor(-1e-300) rounds to 1.0: a naive fraction would merge these.
    tiny = [-5e-324, -1e-323, -1e-300, -2e-300]
    assert len({encode_key(x) for x in tiny}) == len(tiny)
    assert [decode_key(encode_key(x)) for x in tiny] == tiny


def test_largest_floats_are_keys() -> None:
    for x in (sys.float_info.max, -sys.float_info.max, 2.0**1000, -(2.0**1000)):
        assert decode_key(encode_key(x)) == x


def test_format_is_pinned() -> None:
    # Runs on disk and partition choices outlive a process: the bytes must not drift.
    assert encode_key(None) == b"\x05"
    assert encode_key(0) == b"\x10\x80\x00"
    assert encode_key(1) == b"\x10\x81\x01\x00"
    assert encode_key(-1) == b"\x10\x7e\xfe\x00"
    assert encode_key(1.5) == b"\x10\x81\x01\x01" + bytes.fromhex("3fe0000000000000")
    assert encode_key(-math.inf) == b"\x10\x01"
    assert encode_key(math.inf) == b"\x10\xfe"
    assert encode_key("a\x00") == b"\x30a\x00\xff\x00"
    assert encode_key(b"\xff") == b"\x40\xff\x00"
    assert encode_key((1, "")) == b"\x50\x10\x81\x01\x00\x30\x00\x00"
    # The partition rule: CRC-32 of the encoding, modulo the partitions (zlib.crc32(b"\x30apple\x00") == 1024281382).
    assert encode_and_partition(["apple", 1, None], 1000) == ([b"\x30apple\x00", b"\x10\x81\x01\x00", b"\x05"],
                                                             [382, 565, 650])


# -- str, bytes, tuples, cross-type -------------------------------------------


def test_integer_lengths_sort_across_the_long_header() -> None:
    edges = sorted(LENGTH_EDGES + [2**1024 - 1, -(2**1024 - 1), 2**992 * 1.5, -(2**992) * 1.5])
    assert sorted(edges, key=encode_key) == edges
    assert [decode_key(encode_key(n)) for n in edges] == edges


def test_escaped_nul_sorts_after_the_end_of_a_str() -> None:
    # Without the 00 FF escape, "a\x00" would end where "a" does and the next element would decide.
    keys = [("a",), ("a", 1), ("a\x00",), ("a\x00\x00",), ("a\x00\x01",), ("a\x01",)]
    assert sorted(reversed(keys), key=encode_key) == keys == sorted(keys)
    raw = [(b"a", None), (b"a\x00",), (b"a\x00\xff",), (b"a\x01",), (b"a\xff",)]
    assert sorted(reversed(raw), key=encode_key) == raw


def test_long_str_key_round_trips() -> None:
    key = ("\x00ab\U0001f600" * 2_500)[:10_000]
    assert len(key) == 10_000
    assert decode_key(encode_key(key)) == key


def test_cross_type_order() -> None:
    keys = [None, 0, "", b"", ()]
    assert sorted(reversed(keys), key=encode_key) == keys


def test_namedtuple_is_keyed_as_tuple() -> None:
    from collections import namedtuple

    Point = namedtuple("Point", "x y")
    assert encode_key(Point(1, "a")) == encode_key((1.0, "a"))
    assert decode_key(encode_key(Point(1, "a"))) == (1, "a")


def test_decode_refuses_bytes_that_are_not_a_key() -> None:
    with pytest.raises(ValueError, match="not an encoded key: 1 bytes left over"):
        decode_key(encode_key(1) + b"\x05")
    with pytest.raises(ValueError, match="not an encoded key: no terminator"):
        decode_key(b"\x30abc")
    with pytest.raises(ValueError, match="not an encoded key: 2 bytes needed at byte 2, 1 left"):
        decode_key(b"\x10\x82\x01")
    with pytest.raises(ValueError, match="not an encoded key"):
        decode_key(b"\x99")


# -- partitions ---------------------------------------------------------------

STABLE_KEYS = ["apple", 42, ("doc", 7), b"\x00raw", None, 1.5, -(2**900)]
CHILD = """
import json
from octostore.keys import encode_and_partition
keys = {keys!r}
print(json.dumps({{"parts": encode_and_partition(keys, 13)[1], "hash": hash("apple")}}))
"""


def partitions_in_child(hash_seed: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(keys=STABLE_KEYS)],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_partitions_are_stable_across_processes() -> None:
    here = encode_and_partition(STABLE_KEYS, 13)[1]
    first, second = partitions_in_child("1"), partitions_in_child("2")
    assert first["hash"] != second["hash"]  # the seeds do change the builtin hash()
    assert first["parts"] == second["parts"] == here


# -- errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "name", "hint"),
    [
        ([1, 2], "list", "use a tuple instead: tuple(key)"),
        (frozenset({1}), "frozenset", "use a sorted tuple instead: tuple(sorted(key))"),
        (("a", (1, {2})), "set", "use a sorted tuple instead: tuple(sorted(key))"),
        ({"a": 1}, "dict", "use a tuple of its sorted items instead: tuple(sorted(key.items()))"),
        (bytearray(b"x"), "bytearray", None),
        (1j, "complex", None),
    ],
)
def test_unsupported_type_is_named(key: object, name: str, hint: str | None) -> None:
    with pytest.raises(UnsupportedKeyError) as info:
        encode_key(key)
    assert str(info.value) == f"{SUPPORTED}, not {name}"
    assert info.value.hint == hint
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("key", [2**1100, -(2**1100), ("ok", 2**1100)])
def test_too_large_integer_is_refused(key: object) -> None:
    with pytest.raises(UnsupportedKeyError) as info:
        encode_key(key)
    assert str(info.value) == "integer key too large: 1101 bits, more than the 1024 bits a key may have"
    assert info.value.hint == "use str(n) as the key, or a tuple that splits it"


def test_largest_allowed_integer_is_accepted() -> None:
    assert decode_key(encode_key(2**1024 - 1)) == 2**1024 - 1
    with pytest.raises(UnsupportedKeyError, match="1025 bits"):
        encode_key(2**1024)


def test_partitions_are_balanced() -> None:
    """CRC-32 of the encodings spreads word-like keys evenly (within 5% of the mean here)."""
    partitions = 8
    counts = [0] * partitions
    for p in encode_and_partition([f"w{i:x}" for i in range(80_000)], partitions)[1]:
        counts[p] += 1
    mean = 80_000 / partitions
    assert max(abs(c - mean) for c in counts) < 0.05 * mean, counts


@given(st.lists(st.one_of(st.text(), st.integers(), st.tuples(st.text())), max_size=30))
def test_encode_keys_in_bulk_equals_one_by_one(keys: list[object]) -> None:
    assert encode_keys(keys) == [encode_key(k) for k in keys]


@given(st.lists(st.text(), max_size=30))
def test_encode_keys_in_bulk_equals_one_by_one_for_strings(keys: list[str]) -> None:
    assert encode_keys(keys) == [encode_key(k) for k in keys]


@given(st.lists(st.one_of(st.text(), st.integers(), st.tuples(st.text())), max_size=30))
def test_decode_keys_in_bulk_equals_one_by_one(keys: list[object]) -> None:
    encoded = [encode_key(k) for k in keys]
    assert decode_keys(encoded) == [decode_key(e) for e in encoded]


@given(st.lists(st.text(), max_size=30))
def test_decode_keys_in_bulk_gives_back_strings(keys: list[str]) -> None:
    assert decode_keys(encode_keys(keys)) == keys  # NULs and "0"s inside keys included (the fast path's edges)


def test_decode_keys_refuses_what_decode_key_refuses() -> None:
    with pytest.raises(ValueError, match="not an encoded key"):
        decode_keys([encode_key("fine"), b"\x30\xff\x00"])  # invalid UTF-8 inside a str key

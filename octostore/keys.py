"""Canonical key encoding and the stable partition hash.

Design note
-----------
``encode_key`` turns each key a mapfn emits into bytes once. After that,
octostore only handles those bytes: map buffers group on them, workers sort
runs by them, the reduce-side merge compares them, and ``encode_and_partition``
hashes them. So plain byte comparison has to give Python's own semantics:

* ``a == b``  if and only if  ``encode_key(a) == encode_key(b)``  (NaN aside, below);
* ``a < b``   if and only if  ``encode_key(a) < encode_key(b)``, for every pair
  Python can compare. Keys Python refuses to compare sort by type:
  None < numbers < str < bytes < tuple.

Rules a user can notice:

* Numbers are keyed by value, as in a dict. ``True``, ``1`` and ``1.0`` are one
  key, and so are ``0.0`` and ``-0.0``. ``decode_key`` returns an int for every
  integral value, so reducefn gets ``1`` even if mapfn emitted ``1.0`` or
  ``True``. Non-integral values come back as the exact float. ``1.5`` sorts
  between ``1`` and ``2``.
* NaN: Python never treats a NaN as equal, not even to itself. Here every NaN
  is one key, sorted after ``+inf``, and it decodes to ``float("nan")``.
* Subclasses (namedtuple, IntEnum, str subclasses, numpy.float64) are keyed by
  value as their base type and decode as that base type.
* Keys have no length limit. They never become LMDB keys (LMDB caps those at
  511 bytes); they travel inside blocks (see blocks.py). Numbers must be below
  2**1024 in magnitude: that is the float range, and every finite float fits.
* str keys use UTF-8 with ``surrogatepass``, so lone surrogates work. UTF-8
  byte order is code point order, which is how Python compares str.

Format (the first byte is a type tag; tags sort in cross-type order)::

    None    05
    number  10 <integer part> <suffix>           (one space for bool, int, float)
    str     30 <utf-8, 00 escaped as 00 FF> 00
    bytes   40 <bytes, 00 escaped as 00 FF> 00
    tuple   50 <element encodings ...> 00        (00 is below every tag: prefix first)

    integer part n = floor(x): a header byte, then the magnitude, big-endian
      n == 0                  80
      n > 0, L bytes          80+L <n>             L = 1..124
                              FD L <n>             L = 125..128 (escape: no room left)
      n < 0, m = -n, L bytes  7F-L <~m>            ~m: ones' complement, so bigger |n| sorts first
                              02 FF-L <~m>
      -inf 01, +inf FE, NaN FF: nothing follows
    suffix: 00 if x is integral, else 01 and 8 bytes of the fraction:
      x > 0: the double x - n, big-endian (positive doubles sort like their bytes)
      x < 0: the double |x| - floor(|x|), big-endian, ones' complement

Rejected alternatives:

* pickle, marshal or repr: not canonical (1, 1.0 and True differ) and no order.
* The builtin ``hash()`` for partitions: PYTHONHASHSEED randomizes it per
  process, so workers would disagree on who owns a key. CRC-32 of the
  encoding is the same in every process, on every host and Python version.
* blake2b of the encoding (the brief's first choice): just as stable, but
  0.63 us per key against 0.09 us for ``zlib.crc32`` (timeit, this machine),
  paid once per distinct key per map buffer. Partitioning needs spread, not
  collision resistance, and CRC-32 spreads the canonical encodings evenly
  (tests/test_keys.py checks the balance).
* Length-prefixed str and bytes: "b" would sort before "ab". Escaped
  terminators (as in FoundationDB's tuple layer) keep order and stay
  prefix-free inside tuples.
* Numbers as order-flipped IEEE doubles: every int above 2**53 would lose
  precision. The integer part plus a fraction keeps every int exact and
  compares ints with floats exactly, as Python does.
* The fraction stored as ``x - n`` for negative x as well: that subtraction
  rounds (``-1e-300 - (-1) == 1.0``), which would merge distinct keys. So a
  negative x stores the exact ``|x| - floor(|x|)`` with its bits inverted.
* The 1-byte header for every length: 128 lengths on each side, plus zero and
  three specials, need 260 values. Lengths 125..128 (ints of 993 to 1024
  bits, and floats above about 2**992) take the escape headers FD and 02.

Speed (``python -m timeit -s "from octostore.keys import encode_key" ...``, this
machine): ``encode_key("word-12345")`` 0.21 us, ``encode_key(123456)`` 0.43 us,
``encode_key(1.5)`` 1.0 us, ``encode_key(("doc", 7))`` 1.4 us. str and int take
the fast paths at the top of encode_key; everything else walks the key once.

From octostore this module imports only errors.py (``UnsupportedKeyError``), a leaf
like itself.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from itertools import repeat
from operator import itemgetter

from .errors import UnsupportedKeyError

# -- vocabulary: tags, headers, the error's text ------------------------------

_NONE = b"\x05"
_NUMBER = b"\x10"
_STR = b"\x30"
_BYTES = b"\x40"
_TUPLE = b"\x50"
_END = b"\x00"  # ends str, bytes and tuple; below every tag, so a prefix sorts first
_NUL = b"\x00"
_ESCAPED_NUL = b"\x00\xff"  # 0xFF after a 0x00 means "data", anything else means "end"

_HEADER_NEG_INF = 0x01
_HEADER_NEG_LONG = 0x02  # then 0xFF - L: longer (more negative) sorts first
_HEADER_ZERO = 0x80
_HEADER_POS_LONG = 0xFD  # then L
_HEADER_POS_INF = 0xFE
_HEADER_NAN = 0xFF
_SHORT_MAX_BYTES = 124  # lengths up to this live in the header byte itself
_INT_MAX_BITS = 1024  # the float range: every finite float's integer part fits
_NEG_INF = bytes((_HEADER_NEG_INF,))
_POS_INF = bytes((_HEADER_POS_INF,))
_NAN = bytes((_HEADER_NAN,))

_INTEGRAL = b"\x00"
_FRACTIONAL = b"\x01"
_DOUBLE = struct.Struct(">d")
_UINT64 = struct.Struct(">Q")
_ALL_ONES_64 = (1 << 64) - 1

_SUPPORTED = "None, bool, int, float, str, bytes or tuples of these"

# The usual mistakes, and the fix to suggest for each (kept on the error as .hint).
_HINTS = {
    "list": "use a tuple instead: tuple(key)",
    "set": "use a sorted tuple instead: tuple(sorted(key))",
    "frozenset": "use a sorted tuple instead: tuple(sorted(key))",
    "dict": "use a tuple of its sorted items instead: tuple(sorted(key.items()))",
}


def _unsupported_type(key: object) -> UnsupportedKeyError:
    name = type(key).__name__
    return UnsupportedKeyError(f"keys must be {_SUPPORTED}, not {name}", _HINTS.get(name))


# -- encoding -----------------------------------------------------------------


def encode_key(key: object) -> bytes:
    """Return the canonical, order-preserving bytes of key (see the module note).

    Raises UnsupportedKeyError when the key, or anything nested in a tuple key,
    is not a supported type (the message names the innermost offending type),
    or when it holds a number of 2**1024 or more in magnitude.
    """
    # Fast paths first: most keys are str or int, and this runs once per
    # distinct key per map buffer. bytes.replace returns its input unchanged
    # (no copy) when there is no NUL to escape.
    if type(key) is str:
        return _STR + key.encode("utf-8", "surrogatepass").replace(_NUL, _ESCAPED_NUL) + _END
    if type(key) is int:
        return _NUMBER + _encode_int(key) + _INTEGRAL
    out = bytearray()
    _encode_into(key, out)
    return bytes(out)


def encode_keys(keys: list[object]) -> list[bytes]:
    """Return [encode_key(k) for k in keys], in bulk: C loops when every key is a str.

    A map spill encodes every distinct key of its buffer (~130 k per task on
    the word count); joining the strings with NUL, encoding once and splitting
    costs ~0.1 us per key instead of ~0.3 us through encode_key.  A key that
    holds a NUL itself, or any key that is not a plain str, takes the per-key
    path, so the result is always exactly encode_key's.
    """
    if set(map(type, keys)) == {str}:
        text = "\x00".join(keys)  # type: ignore[arg-type]
        if text.count("\x00") == len(keys) - 1:  # no key has a NUL of its own
            parts = text.encode("utf-8", "surrogatepass").split(_NUL) if keys else []
            return list(map(bytes.__add__, map(_STR.__add__, parts), repeat(_END)))
    return list(map(encode_key, keys))


def _encode_into(key: object, out: bytearray) -> None:
    """Append the encoding of key to out. Subclasses are encoded as their base type."""
    if key is None:
        out += _NONE
    elif isinstance(key, str):
        out += _STR + key.encode("utf-8", "surrogatepass").replace(_NUL, _ESCAPED_NUL) + _END
    elif isinstance(key, int):  # bool included: True == 1
        out += _NUMBER + _encode_int(int(key)) + _INTEGRAL
    elif isinstance(key, float):
        out += _NUMBER + _encode_float(float(key))
    elif isinstance(key, bytes):
        out += _BYTES + bytes(key).replace(_NUL, _ESCAPED_NUL) + _END
    elif isinstance(key, tuple):
        out += _TUPLE
        for item in key:
            _encode_into(item, out)
        out += _END
    else:
        raise _unsupported_type(key)


def _encode_int(n: int) -> bytes:
    """Return the header and magnitude bytes of the integer n (no tag, no suffix)."""
    if n == 0:
        return bytes((_HEADER_ZERO,))
    magnitude = -n if n < 0 else n
    bits = magnitude.bit_length()
    if bits > _INT_MAX_BITS:
        raise UnsupportedKeyError(
            f"integer key too large: {bits} bits, more than the {_INT_MAX_BITS} bits a key may have",
            "use str(n) as the key, or a tuple that splits it",
        )
    length = (bits + 7) // 8
    if n > 0:
        if length <= _SHORT_MAX_BYTES:
            header = bytes((_HEADER_ZERO + length,))
        else:
            header = bytes((_HEADER_POS_LONG, length))
        return header + magnitude.to_bytes(length, "big")
    if length <= _SHORT_MAX_BYTES:
        header = bytes((_HEADER_ZERO - 1 - length,))
    else:
        header = bytes((_HEADER_NEG_LONG, 0xFF - length))
    complement = (1 << (8 * length)) - 1 - magnitude
    return header + complement.to_bytes(length, "big")


def _encode_float(x: float) -> bytes:
    """Return the integer part and suffix of x, or the special header (no tag)."""
    if x != x:
        return _NAN
    if math.isinf(x):
        return _POS_INF if x > 0 else _NEG_INF
    n = math.floor(x)
    if n == x:  # also maps -0.0 to 0
        return _encode_int(n) + _INTEGRAL
    return _encode_int(n) + _FRACTIONAL + _encode_fraction(x, n)


def _encode_fraction(x: float, n: int) -> bytes:
    """Return 8 bytes that order the non-integral x among values with floor n."""
    if n >= 0:
        # Exact: x >= 1 means n is a multiple of x's ulp, and x - n < 1 <= x
        # fits in 53 bits. For 0 < x < 1, n == 0.
        return _DOUBLE.pack(x - n)
    # x - n would round here (-1e-300 - (-1) == 1.0). The distance below the
    # next integer is |x| - floor(|x|), exact for the reason above. A bigger
    # distance means a smaller x, so invert the bits to reverse the order.
    distance = -x - (-n - 1)
    (bits,) = _UINT64.unpack(_DOUBLE.pack(distance))
    return _UINT64.pack(bits ^ _ALL_ONES_64)


# -- decoding -----------------------------------------------------------------


def decode_key(data: bytes) -> object:
    """Return the key that encode_key turned into data.

    Integral numbers come back as int, other numbers as float, tuple
    subclasses as tuple (see the module note). Raises ValueError if data is
    not exactly one encoded key.
    """
    try:
        key, end = _decode_at(data, 0)
    except (IndexError, KeyError, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not an encoded key: {data[:40]!r} ({exc!r})") from exc
    if end != len(data):
        raise ValueError(f"not an encoded key: {len(data) - end} bytes left over in {data[:40]!r}")
    return key


def decode_keys(data: list[bytes]) -> list[object]:
    """Return [decode_key(d) for d in data], in bulk: C loops when every key is a plain str.

    The inverse of ``encode_keys``'s fast path, for the reducers and final(),
    which decode every distinct key: when each encoding is the str tag, text
    with no NUL and the terminator, the keys are joined, decoded once and split
    (~0.1 us per key instead of ~1.5 us).  Anything else, including an invalid
    encoding, takes the per-key path, so results and errors are decode_key's.
    """
    if data and set(map(_first_byte, data)) == {_STR[0]} and set(map(_last_byte, data)) == {_NUL[0]}:
        joined = b"".join(data)
        if joined.count(_NUL) == len(data):  # one NUL per key, its terminator: nothing escaped
            try:  # "\x30" key "\x00" "\x30" key "\x00" ...: every NUL-then-tag is a boundary
                return joined[1:-1].decode("utf-8", "surrogatepass").split("\x000")  # type: ignore[return-value]
            except UnicodeDecodeError:
                pass  # decode_key below says which key
    return list(map(decode_key, data))


_first_byte, _last_byte = itemgetter(0), itemgetter(-1)


def _decode_at(data: bytes, pos: int) -> tuple[object, int]:
    """Decode the key that starts at data[pos]; return it and the position after it."""
    return _DECODERS[data[pos]](data, pos + 1)


def _decode_none(data: bytes, pos: int) -> tuple[object, int]:
    return None, pos


def _decode_number(data: bytes, pos: int) -> tuple[object, int]:
    special = _SPECIAL_FLOATS.get(data[pos])
    if special is not None:
        return special, pos + 1
    n, pos = _decode_int(data, pos)
    suffix = data[pos]
    if suffix == _INTEGRAL[0]:
        return n, pos + 1
    if suffix != _FRACTIONAL[0]:
        raise ValueError(f"not an encoded key: number suffix {suffix:#04x} at byte {pos}")
    return _join_fraction(n, _take(data, pos + 1, 8)), pos + 9


def _decode_int(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a header and magnitude at data[pos]; return the int and the position after."""
    header = data[pos]
    if header == _HEADER_ZERO:
        return 0, pos + 1
    if header > _HEADER_ZERO:
        if header == _HEADER_POS_LONG:
            length, pos = data[pos + 1], pos + 2
        else:
            length, pos = header - _HEADER_ZERO, pos + 1
        return int.from_bytes(_take(data, pos, length), "big"), pos + length
    if header == _HEADER_NEG_LONG:
        length, pos = 0xFF - data[pos + 1], pos + 2
    else:
        length, pos = _HEADER_ZERO - 1 - header, pos + 1
    complement = int.from_bytes(_take(data, pos, length), "big")
    return complement - (1 << (8 * length)) + 1, pos + length


def _join_fraction(n: int, raw: bytes) -> float:
    """Return the float with integer part n whose fraction bytes are raw."""
    if n >= 0:
        fraction: float = _DOUBLE.unpack(raw)[0]
        return n + fraction  # exact: the sum is the float we encoded
    (bits,) = _UINT64.unpack(raw)
    distance: float = _DOUBLE.unpack(_UINT64.pack(bits ^ _ALL_ONES_64))[0]
    return -((-n - 1) + distance)  # exact, as in _encode_fraction


def _decode_escaped(data: bytes, pos: int) -> tuple[bytes, int]:
    """Return the unescaped bytes from data[pos] up to the terminator, and the position after it."""
    end = data.find(_NUL, pos)
    while end != -1 and data[end + 1 : end + 2] == b"\xff":
        end = data.find(_NUL, end + 2)
    if end == -1:
        raise ValueError(f"not an encoded key: no terminator after byte {pos}")
    return data[pos:end].replace(_ESCAPED_NUL, _NUL), end + 1


def _decode_str(data: bytes, pos: int) -> tuple[object, int]:
    raw, pos = _decode_escaped(data, pos)
    return raw.decode("utf-8", "surrogatepass"), pos


def _decode_bytes(data: bytes, pos: int) -> tuple[object, int]:
    return _decode_escaped(data, pos)


def _decode_tuple(data: bytes, pos: int) -> tuple[object, int]:
    items = []
    while data[pos] != _END[0]:
        item, pos = _decode_at(data, pos)
        items.append(item)
    return tuple(items), pos + 1


def _take(data: bytes, pos: int, length: int) -> bytes:
    """Return data[pos:pos + length], refusing to come up short."""
    if pos + length > len(data):
        raise ValueError(f"not an encoded key: {length} bytes needed at byte {pos}, {len(data) - pos} left")
    return data[pos : pos + length]


_SPECIAL_FLOATS = {
    _HEADER_NEG_INF: -math.inf,
    _HEADER_POS_INF: math.inf,
    _HEADER_NAN: math.nan,
}

_DECODERS: dict[int, Callable[[bytes, int], tuple[object, int]]] = {
    _NONE[0]: _decode_none,
    _NUMBER[0]: _decode_number,
    _STR[0]: _decode_str,
    _BYTES[0]: _decode_bytes,
    _TUPLE[0]: _decode_tuple,
}


# -- partitioning -------------------------------------------------------------


def encode_and_partition(keys: list[object], partitions: int) -> tuple[list[bytes], list[int]]:
    """Return each key's encoding (as ``encode_keys``) and the partition, in range(partitions), that owns it.

    The partition rule, written here only: CRC-32 of the encoding, modulo
    partitions.  Every process, host and Python version gives the same
    answer, unlike the builtin hash(), which PYTHONHASHSEED randomizes per
    process.  In bulk, as a map spill needs it (one call per spill, C loops
    over every distinct key); worker/_buckets.c is its compiled twin for
    plain str keys (tests/test_mapside.py compares the two).  Raises
    UnsupportedKeyError as encode_key does; partitions must be at least 1.
    """
    encoded = encode_keys(keys)
    return encoded, list(map(int.__mod__, map(zlib.crc32, encoded), repeat(partitions)))

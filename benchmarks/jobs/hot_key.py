"""One hot key: the key "hot" receives $OCTO_BENCH_VALUES values, a few "coldN" keys one value per chunk.

The source is $OCTO_BENCH_CHUNKS chunks (source key c -> its half-open range of ints); mapfn
yields ("hot", i) for every i of its range, so the hot key's values are all distinct and
nothing can be run-length encoded, or, with $OCTO_BENCH_IDENTICAL=1, ("hot", 1) each time
(the word-count shape).  Each chunk also yields (f"cold{c % 4}", c).  reducefn streams the
values with sum() and adds len(values) (cheap: it only sums counts) as a second check;
final prints `key count sum`.
"""
import os

VALUES = int(os.environ.get("OCTO_BENCH_VALUES", "50000000"))
CHUNKS = int(os.environ.get("OCTO_BENCH_CHUNKS", "200"))
IDENTICAL = os.environ.get("OCTO_BENCH_IDENTICAL", "0") == "1"

source = {c: (VALUES * c // CHUNKS, VALUES * (c + 1) // CHUNKS, IDENTICAL) for c in range(CHUNKS)}


def mapfn(chunk, value):
    start, stop, identical = value
    if identical:
        for _ in range(start, stop):
            yield "hot", 1
    else:
        for i in range(start, stop):
            yield "hot", i
    yield "cold%d" % (chunk % 4), chunk


def reducefn(key, values):
    return key, (len(values), sum(values))


def final(key, value):
    print(key, *value)

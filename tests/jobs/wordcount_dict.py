# The guide's word count over an in-memory dict source (deterministic text).
import random

_rng = random.Random(3)
_WORDS = ["the", "The", "THE", "octo", "map", "Reduce", "key", "value", "lmdb", "zstd", "a", "An", "x" * 40]
source = {f"doc-{i}": "\n".join(" ".join(_rng.choice(_WORDS) for _ in range(_rng.randint(0, 30)))
                                for _ in range(_rng.randint(1, 8)))
          for i in range(600)}


def mapfn(key, value):
    for line in value.splitlines():
        for word in line.split():
            yield word.lower(), 1


def reducefn(key, value):
    return key, len(value)


def final(key, value):
    print(key, value)

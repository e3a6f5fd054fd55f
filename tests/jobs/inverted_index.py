# Inverted index: word -> sorted documents containing it (string values, a helper function).
import re

source = {f"doc{i:03d}": " ".join(f"w{(i * j) % 97}" for j in range(1, 40)) for i in range(150)}
_WORD = re.compile(r"\w+")


def _words(text):
    return set(_WORD.findall(text))


def mapfn(key, value):
    for word in _words(value):
        yield word, key


def reducefn(key, values):
    return key, ",".join(sorted(values))


def final(key, value):
    print(f"{key}\t{value}")

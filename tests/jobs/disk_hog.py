# About 24 MB of incompressible map output: more than a small disk holds.
import hashlib

source = {i: i for i in range(60)}


def mapfn(key, value):
    for j in range(200):
        n = value * 200 + j
        yield n % 50, b"".join(hashlib.sha256(f"{n}:{k}".encode()).digest() for k in range(60))


def reducefn(key, values):
    return key, len(values)


def final(key, value):
    print(key, value)

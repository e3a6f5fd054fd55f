# Results larger than a tiny LMDB map: 4000 keys, each with ~200 bytes of incompressible text.
import hashlib

source = {i: i for i in range(40)}


def mapfn(key, value):
    for j in range(100):
        n = value * 100 + j
        yield n, hashlib.sha256(str(n).encode()).hexdigest()


def reducefn(key, values):
    return key, "".join(values) * 3


def final(key, value):
    print(key, value[:16], len(value))

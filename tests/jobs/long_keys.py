# Keys far longer than LMDB's 511-byte key limit: they live inside blocks, never as LMDB keys.
source = {i: i for i in range(50)}


def mapfn(key, value):
    yield "k" * 10_000 + str(value % 3), value
    yield ("t" * 600, value % 2), 1


def reducefn(key, values):
    return key, sum(values)


def final(key, value):
    print(len(repr(key)), repr(key)[-12:], value)

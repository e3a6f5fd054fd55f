# A NaN key: all NaNs are one key; `return key, v` is unpacked although NaN != NaN.
source = {i: i for i in range(6)}


def mapfn(key, value):
    yield float("nan"), value
    yield value % 2, value


def reducefn(key, values):
    return key, sum(values)


def final(key, value):
    print(repr(key), repr(value))

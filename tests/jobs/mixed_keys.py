# Non-string keys: ints (negative, huge), floats, None, bytes, tuples (nested, mixed).
source = {i: i for i in range(200)}


def mapfn(key, value):
    yield value % 7 - 3, 1
    yield 2 ** 70 + value % 3, 1
    yield -(2 ** 65) - value % 2, 1
    yield (value + 0.5) / 8, 1             # non-integral floats, between the ints
    yield 1, 1                             # 1, 1.0 and True are one key, as in a dict;
    yield 1.0, 1                           # it is reported as the int 1
    yield True, 1
    yield (value % 4, str(value % 3)), 1
    yield ((value % 2, (None, b"x\x00" * (value % 2))), "t"), 1
    yield None, 1
    yield f"s{value % 5}".encode(), 1


def reducefn(key, values):
    return key, sum(values)


def final(key, value):
    print(repr(key), value)

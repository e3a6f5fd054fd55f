# mapfn yields a list as the key (lists are unhashable and have no canonical order).
source = {i: f"w{i % 3} x" for i in range(10)}


def mapfn(key, value):
    yield value.split(), 1


def reducefn(key, values):
    return key, len(values)


def final(key, value):
    print(key, value)

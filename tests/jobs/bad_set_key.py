# mapfn yields a set as the key.
source = {i: f"w{i % 3} x" for i in range(10)}


def mapfn(key, value):
    yield set(value.split()), 1


def reducefn(key, values):
    return key, len(values)


def final(key, value):
    print(key, value)

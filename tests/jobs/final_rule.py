# What final() receives: (key, v) is unpacked to v; a bare value or another tuple is kept as is.
source = {i: i for i in range(30)}


def mapfn(key, value):
    yield value % 6, value


def reducefn(key, values):
    if key == 0:
        return sum(values)                 # bare value
    if key == 1:
        return ("other", sum(values))      # a 2-tuple whose first item is not the key
    if key == 2:
        return (key, sum(values), "x")     # a 3-tuple
    return key, sorted(values)             # the guide's form


def final(key, value):
    print(key, repr(value))

source = {}


def mapfn(key, value):
    yield key, value


def reducefn(key, values):
    return key, len(values)


def final(key, value):
    print(key, value)

# A job file without mapfn (a typo: map_fn).
source = {1: "a"}


def map_fn(key, value):
    yield key, value


def reducefn(key, values):
    return key, len(values)

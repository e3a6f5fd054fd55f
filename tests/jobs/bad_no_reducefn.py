# A job file without reducefn.
source = {1: "a"}


def mapfn(key, value):
    yield key, value

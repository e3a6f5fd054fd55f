# reducefn returns a generator: it cannot travel to the coordinator, so the job fails at once.
source = {i: i for i in range(10)}


def mapfn(key, value):
    yield value % 2, value


def reducefn(key, values):
    return key, (v for v in values)

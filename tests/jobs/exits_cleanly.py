# mapfn ends its own worker process with exit status 0 on one key, every time: a task that kills its workers.
import os

source = {i: i for i in range(60)}


def mapfn(key, value):
    if value == 17:
        os._exit(0)
    yield value % 5, value


def reducefn(key, values):
    return key, sum(values)

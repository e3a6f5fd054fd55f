# Every record takes a little time; on a worker started with OCTO_TEST_SLOW_WORKER=1, 30 times as long.
import os
import time

source = {i: i for i in range(160)}
_PAUSE_S = float(os.environ.get("OCTO_TEST_PAUSE_S", "0"))


def mapfn(key, value):
    if _PAUSE_S:
        time.sleep(_PAUSE_S * (30 if os.environ.get("OCTO_TEST_SLOW_WORKER") else 1))
    yield value % 10, value


def reducefn(key, values):
    return key, sum(values)


def final(key, value):
    print(key, value)

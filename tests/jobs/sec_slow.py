# A job that runs as slowly as $OCTO_TEST_PAUSE_S asks (seconds per source key; unset = no pause),
# so a test can act while its workers are busy.  The oracle runs it with no pause.
import os
import time

_PAUSE_S = float(os.environ.get("OCTO_TEST_PAUSE_S", "0"))
source = {i: i for i in range(200)}


def mapfn(key, value):
    if _PAUSE_S:
        time.sleep(_PAUSE_S)
    yield value % 10, 1
    yield f"n{value % 7}", value


def reducefn(key, values):
    return key, sum(values)


def final(key, value):
    print(repr(key), value)

# The canary: every input record emits one pair under its own key and one under a shared key.
# Lost map output shows as a missing ("rec", i) or a low ("all",) count; duplicated output as a
# count of 2 or a high ("all",) count.  $OCTO_TEST_PAUSE_S slows mapfn so a test can kill mid-job.
import os
import time

N = 400
source = {i: i for i in range(N)}
_PAUSE_S = float(os.environ.get("OCTO_TEST_PAUSE_S", "0"))


def mapfn(key, value):
    if _PAUSE_S:
        time.sleep(_PAUSE_S)
    yield ("rec", value), 1
    yield ("all",), 1
    yield ("mod", value % 7), value


def reducefn(key, values):
    return key, sum(values)


def final(key, value):
    print(key, value)

# mapfn kills its own worker process (os._exit) on one key, the first time only: a crash in user code.
import os

source = {i: i for i in range(60)}


def mapfn(key, value):
    marker = os.path.join(os.environ["OCTO_TEST_MARKERS"], "died")
    if value == 17 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    yield value % 5, value


def reducefn(key, values):
    return key, sum(values)


def final(key, value):
    print(key, value)

# A job file that raises while it runs: a helper called at module level divides by zero.
def _build_source():
    counts = {"a": 0}
    return {i: 10 / counts["a"] for i in range(3)}  # RAISES-AT-LOAD


source = _build_source()


def mapfn(key, value):
    yield key, value


def reducefn(key, values):
    return key, len(values)

# mapfn raises ValueError on one key (not the first, so the coordinator's pre-check passes).
source = {f"doc-{i}": i for i in range(20)}


def mapfn(key, value):
    if key == "doc-13":
        raise ValueError(f"cannot parse {key}")  # RAISES-IN-MAPFN
    yield value % 3, 1


def reducefn(key, values):
    return key, len(values)


def final(key, value):
    print(key, value)

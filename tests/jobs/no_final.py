# No final(): the coordinator prints nothing and says how to read the results.
source = {i: "the quick brown fox jumps over the lazy dog " * (i % 7 + 1) for i in range(300)}


def mapfn(key, value):
    for word in value.split():
        yield word + str(key % 13), 1


def reducefn(key, values):
    return key, len(values)

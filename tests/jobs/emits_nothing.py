source = {i: "x" for i in range(40)}


def mapfn(key, value):
    if False:
        yield key, value


def reducefn(key, values):
    return key, len(values)


def final(key, value):
    print(key, value)

# reducefn raises KeyError on one key.
source = {i: i for i in range(20)}


def mapfn(key, value):
    yield value % 5, value


def reducefn(key, values):
    if key == 3:
        return key, {}["missing"]  # RAISES-IN-REDUCEFN
    return key, sum(values)


def final(key, value):
    print(key, value)

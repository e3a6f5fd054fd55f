# A job with a map-side combiner: partial sums per map buffer, summed again by reducefn.
source = {i: list(range(i, i + 500)) for i in range(300)}


def mapfn(key, value):
    for n in value:
        yield n % 37, n


def combinefn(key, values):
    return sum(values)


def reducefn(key, values):
    return key, sum(values)


def final(key, value):
    print(key, value)

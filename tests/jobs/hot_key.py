# One key receives 2,000,000 values; reducefn streams them (len and one pass), never a list.
source = {i: i for i in range(20)}


def mapfn(key, value):
    for j in range(100_000):
        yield "hot", value * 100_000 + j
    yield f"cold{value}", 1


def reducefn(key, values):
    total = 0
    for v in values:
        total += v
    return key, (len(values), total)


def final(key, value):
    print(key, value)

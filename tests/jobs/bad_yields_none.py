# mapfn yields None: a bare `yield` where `yield word, 1` was meant.
source = {"doc-1": "one fish", "doc-2": "two fish"}


def mapfn(key, value):
    for word in value.split():
        yield


def reducefn(key, values):
    return key, len(values)

# mapfn returns None: it collects pairs but forgets to return or yield them.
source = {"doc-1": "one fish", "doc-2": "two fish"}


def mapfn(key, value):
    pairs = [(word, 1) for word in value.split()]


def reducefn(key, values):
    return key, len(values)

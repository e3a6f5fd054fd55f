# mapfn returns one pair instead of yielding pairs.
source = {"doc-1": "one fish", "doc-2": "two fish"}


def mapfn(key, value):
    return key, len(value)


def reducefn(key, values):
    return key, len(values)

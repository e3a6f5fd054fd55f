# source is a list of documents, not a dict.
source = ["one fish", "two fish"]


def mapfn(key, value):
    for word in value.split():
        yield word, 1


def reducefn(key, values):
    return key, len(values)

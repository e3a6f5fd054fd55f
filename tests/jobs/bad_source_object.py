# source is an object that can be iterated but not indexed (no __getitem__).
class Documents:
    def __iter__(self):
        return iter(["a", "b"])


source = Documents()


def mapfn(key, value):
    yield key, 1


def reducefn(key, values):
    return key, len(values)

# A job file with a syntax error on line 3 (a missing closing parenthesis).
source = {1: "a"}
def mapfn(key, value:
    yield key, value


def reducefn(key, values):
    return key, len(values)

"""The guide's word count over octostore.files(): in paths mode the workers read the files themselves."""
import os

import octostore

source = octostore.files(os.path.join(os.environ["OCTO_BENCH_CORPUS"], "*.txt"))


def mapfn(key, value):
    for line in value.splitlines():
        for word in line.split():
            yield word.lower(), 1


def reducefn(key, value):
    return key, len(value)


def final(key, value):
    print(key, value)

# A files() source that lists one file nobody can read: in paths mode the worker finds out, not the coordinator.
import os

import octostore


class WithMissingFile(octostore.FileSource):
    def paths(self):
        return super().paths() + ["/no/such/octo-input.txt"]


source = WithMissingFile(os.path.join(os.environ["OCTO_TEST_CORPUS"], "*.txt"))


def mapfn(key, value):
    yield len(value), 1


def reducefn(key, values):
    return key, len(values)

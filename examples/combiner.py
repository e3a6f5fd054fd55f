"""Lines of code per top-level package of Python's standard library, with a combiner.

The input is the standard library's own .py files (found with sysconfig, so
nothing is downloaded), read lazily with the guide's DataSource. site-packages
is left out. A file inside a package counts for its top-level package (e.g.
'email/mime/text.py' counts for 'email'); a module directly in the library's
root counts for '(top level)'.

mapfn yields (package, 1) for every line. Without combinefn, reducefn would
get one value per line and could return len(values). With combinefn, each
worker sums the 1s of a package before they leave it, so reducefn gets
*partial sums*, one per map task output that held the package, and must add
them up: sum(values), never len(values).

    octo submit examples/combiner.py --workers 2
"""

import glob
import os
import sysconfig

ROOT = sysconfig.get_paths()["stdlib"]
TOP_LEVEL = "(top level)"


class DataSource(object):
    """Keys: module paths relative to ROOT, e.g. 'email/mime/text.py'. Values: the file's text."""

    def __init__(self, root):
        self.root = root
        paths = glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
        relative = (os.path.relpath(path, root) for path in paths)
        self.modules = sorted(m for m in relative if m.split(os.sep)[0] != "site-packages")

    def __len__(self):
        return len(self.modules)

    def __iter__(self):
        return iter(self.modules)

    def __getitem__(self, key):
        with open(os.path.join(self.root, key), encoding="utf-8", errors="replace") as f:
            return f.read()


source = DataSource(ROOT)


def package_of(module_path):
    parts = module_path.split(os.sep)
    return parts[0] if len(parts) > 1 else TOP_LEVEL


def mapfn(key, value):
    package = package_of(key)
    for _ in value.splitlines():
        yield package, 1


def combinefn(key, values):
    # Runs on the worker: values are what mapfn yielded for key (a plain list).
    return sum(values)


def reducefn(key, values):
    # values are partial sums from combinefn, so add them; len(values) would be wrong.
    return key, sum(values)


def final(key, value):
    print(f"{key}\t{value}")

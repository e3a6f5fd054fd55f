"""An inverted index: which modules of Python's standard library define each function name.

The input is the standard library's own .py files (found with sysconfig, so
nothing is downloaded), read lazily with the guide's DataSource: only paths
are held, each file is read when its map task needs it. site-packages is
left out, so the output depends only on the Python version.

mapfn yields (name, module) once for each module-level ``def name`` in a
module; reducefn gets every module that defines a name and returns them
sorted. final() prints only names defined in at least MIN_MODULES modules,
one line each: name, count and the modules, separated by tabs.

    octo submit examples/inverted_index.py --workers 2

The stored results hold every name, not only the printed ones:

    octo results JOBID
"""

import glob
import os
import re
import sysconfig

ROOT = sysconfig.get_paths()["stdlib"]
MIN_MODULES = 5
DEF = re.compile(r"^def (\w+)", re.MULTILINE)  # module-level functions only


class DataSource(object):
    """Keys: module paths relative to ROOT, e.g. 'json/decoder.py'. Values: the file's text."""

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


def defined_names(text):
    """A helper: the job's functions can call it on the workers too."""
    return set(DEF.findall(text))


def mapfn(key, value):
    for name in defined_names(value):
        yield name, key


def reducefn(key, values):
    return key, sorted(values)


def final(key, value):
    if len(value) >= MIN_MODULES:
        print(f"{key}\t{len(value)}\t{' '.join(value)}")

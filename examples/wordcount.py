"""The octo.py guide's word count, unchanged but for Python 3 and the data.

The guide counts words in Project Gutenberg books; so that this runs anywhere
with no download, it counts words in the Python standard library's own .py
files (found with sysconfig), read lazily with the guide's DataSource: only
file names are held, each file is read when its turn comes.

    octo submit examples/wordcount.py > counts.txt

Set OCTO_WORDCOUNT_GLOB to count other files, e.g. "Gutenberg SF/*.txt".
"""

import glob
import os
import sysconfig

PATTERN = os.environ.get("OCTO_WORDCOUNT_GLOB") or os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py")


class DataSource(object):
    def __init__(self):
        # The standard library only: installed packages would make the counts machine-specific.
        self.text_files = sorted(f for f in glob.glob(PATTERN, recursive=True) if "site-packages" not in f)

    def __len__(self):
        return len(self.text_files)

    def __iter__(self):
        return iter(self.text_files)

    def __getitem__(self, key):
        f = open(key, encoding="utf-8", errors="replace")
        try:
            return f.read()
        finally:
            f.close()


source = DataSource()


def mapfn(key, value):
    for line in value.splitlines():
        for word in line.split():
            yield word.lower(), 1


def reducefn(key, value):
    return key, len(value)


def final(key, value):
    print(key, value)

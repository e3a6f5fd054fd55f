"""The octo.py guide's word count, unchanged, over the benchmark corpus in $OCTO_BENCH_CORPUS."""
import glob
import os


class DataSource(object):
    def __init__(self):
        self.text_files = sorted(glob.glob(os.path.join(os.environ["OCTO_BENCH_CORPUS"], "*.txt")))

    def __len__(self):
        return len(self.text_files)

    def __iter__(self):
        return iter(self.text_files)

    def __getitem__(self, key):
        f = open(key)
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

# mapfn fails the first time it sees one key, then works: a retry must give the exact output.
# The marker lives in $OCTO_TEST_FLAKY_DIR (workers inherit the coordinator's environment).
# Without the variable (the oracle) it never fails.
import os
from pathlib import Path

source = {f"doc-{i}": " ".join(f"w{(i * j) % 11}" for j in range(i % 7 + 1)) for i in range(40)}


def mapfn(key, value):
    flaky_dir = os.environ.get("OCTO_TEST_FLAKY_DIR")
    if flaky_dir and key == "doc-29":
        marker = Path(flaky_dir) / "failed-once"
        if not marker.exists():
            marker.touch()
            raise RuntimeError("transient failure on the first attempt")
    for word in value.split():
        yield word, 1


def reducefn(key, values):
    return key, len(values)


def final(key, value):
    print(key, value)

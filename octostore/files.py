"""A file source: ``source = octostore.files("corpus/*.txt")``, keys are paths, values contents.

Design
------
A job's ``source`` is dict-like (``__iter__`` over keys, ``__getitem__``), and
a ``FileSource`` is one too, so the same job file runs in either shuffle mode
and under tests/oracle.py.  What makes it special is that the coordinator can
see *what* it is: in paths mode (config ``shuffle: {mode: paths}``) it sends a
map task its paths only and the worker reads the files itself
(``read_file``), so the input never passes through the coordinator.

The worker must read a file exactly as the coordinator would have, so the
reading settings (``encoding``, ``errors``) are plain, picklable fields that
travel with the paths, and both sides call the same ``read_file``.

Keys are the sorted absolute paths that ``glob(pattern, recursive=True)``
matches (files only), listed once when the source is first iterated: a file
created later is not part of the job.  Rejected: reading bytes and leaving
decoding to mapfn (octo.py jobs expect ``str``); a lazy value object (mapfn
would see a proxy, not a string, and results could differ between modes).

This module imports nothing from octostore: the job file imports it, and the
``octostore`` package exports ``files`` without importing anything heavy.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator


def read_file(path: str, encoding: str, errors: str) -> str:
    """Return the text of `path`, decoded with `encoding` and `errors` (coordinator and worker alike)."""
    with open(path, encoding=encoding, errors=errors, newline=None) as f:
        return f.read()


class FileSource:
    """The files a glob pattern matches, as a read-only mapping from absolute path to text."""

    def __init__(self, pattern: str, *, encoding: str = "utf-8", errors: str = "replace") -> None:
        self.pattern = pattern
        self.encoding = encoding
        self.errors = errors
        self._paths: list[str] | None = None

    def paths(self) -> list[str]:
        """The sorted absolute paths of the matching files (listed once, then fixed)."""
        if self._paths is None:
            found = glob.glob(os.path.expanduser(self.pattern), recursive=True)
            self._paths = sorted(os.path.abspath(p) for p in found if os.path.isfile(p))
        return self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths())

    def __len__(self) -> int:
        return len(self.paths())

    def __contains__(self, path: object) -> bool:
        return path in self.paths()

    def __getitem__(self, path: str) -> str:
        return read_file(path, self.encoding, self.errors)

    def __repr__(self) -> str:
        return f"octostore.files({self.pattern!r}, encoding={self.encoding!r}, errors={self.errors!r})"


def files(pattern: str, *, encoding: str = "utf-8", errors: str = "replace") -> FileSource:
    """Return the files matching `pattern` (``**`` recurses) as a job source: path -> text.

    In paths mode workers read the files themselves, so every worker host must see
    them at the same absolute paths (a shared filesystem)."""
    return FileSource(pattern, encoding=encoding, errors=errors)

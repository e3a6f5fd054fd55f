"""Map output files on the shared filesystem (shuffle mode 'paths').

Design
------
In paths mode no map output passes through the coordinator.  Each map
attempt writes exactly one file, ``<shared_root>/<job_id>/map-<task>-a<attempt>-e<epoch>.run``,
holding the sorted zstd blocks of all its runs (blocks.py), run after run and,
within a run, partition after partition.  The worker reports the file's size
and its *index*: one entry ``[partition, [[offset, length], ...]]`` per run and
partition, in (run, partition) order.  The coordinator checks the size, then
commits the path and the index in its state store (which stays in $OCTO_HOME,
on local disk: LMDB's locking is not safe on network filesystems).  A reducer
gets, per run of its partition, the path and the byte ranges, and reads them
with ``os.pread``.

Measured with ``python benchmarks/traffic.py`` (word count, 201 MiB corpus,
2 local workers, shared root on local disk): the coordinator moved 1.3 MiB
(0.66% of the input, nearly all of it reduce results) in paths mode against
99.8 MiB (49.6%) in payload mode; wall time 13.7 s against 16.2 s (warm cache).

One file per attempt, not per partition: a few large sequential writes and one
rename per attempt, and few files for the shared filesystem's metadata server.
The name carries the task, the attempt and the epoch, so two attempts never
write the same file, and the coordinator can work out (and remove) the file of
an attempt it gave up on without trusting any path a worker sends.

Write order (``MapFileWriter``; a crash between any two steps is safe):

1. blocks appended to ``<name>.tmp``   -> crash: a temp file, never referenced
2. fsync the file, ``os.replace`` to ``<name>``, fsync the folder
                                      -> crash: a complete file nobody committed
3. the worker reports path, size, index; the coordinator commits them
                                      -> the commit point (server.py)

Files no DONE task references (steps 1-2 of lost or losing attempts) are
removed by the coordinator when it drops the attempt (best effort), by
``collect_garbage`` at resume, and with the whole job folder when the job is
DONE.  A worker that outlives its lease may still rename its file into place
after the coordinator removed it; that file waits for the job's end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def job_dir(shared_root: str, job_id: str) -> Path:
    """The folder of one job's map files."""
    return Path(shared_root) / job_id


def map_file(folder: Path, task: int, attempt: int, epoch: int) -> Path:
    """The one file map task `task`, attempt `attempt` of epoch `epoch` may write."""
    return folder / f"map-{task:06d}-a{attempt}-e{epoch}.run"


class MapFileWriter:
    """Appends one map attempt's blocks to a temp file; ``finish`` makes it the attempt's file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(path.name + TMP_SUFFIX)
        self._file = open(self._tmp, "wb")
        self.size = 0  # bytes written so far
        self.index: list[list[Any]] = []  # [[partition, [[offset, length], ...]], ...] in (run, partition) order

    def add(self, partition: int, blocks: Iterable[bytes]) -> None:
        """Append one run's blocks of `partition` (the next entry of the index)."""
        ranges = []
        for block in blocks:
            self._file.write(block)
            ranges.append([self.size, len(block)])
            self.size += len(block)
        if ranges:
            self.index.append([partition, ranges])

    def finish(self) -> int:
        """Steps 1-2 of the write order: flush, fsync, rename into place, fsync the folder; return the size."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)
        _fsync_dir(self.path.parent)
        return self.size

    def abort(self) -> None:
        """Drop the temp file (the attempt failed)."""
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def check_map_file(expected: Path, path: str, size: int, index: list[list[Any]], partitions: int) -> str | None:
    """Why a reported map file cannot be committed, or None; checked against what this host sees.

    `expected` is the path the coordinator works out itself, so a worker can never make
    it commit (or later remove) a file outside the job's folder."""
    if path != str(expected):
        return f"the worker wrote {path!r}, not {str(expected)!r}"
    try:
        seen = os.stat(expected).st_size
    except OSError as e:
        return f"its map file {expected} cannot be seen here: {e.strerror or e}"
    if seen != size:
        return f"its map file {expected} has {seen} bytes here, the worker wrote {size}"
    for partition, ranges in index:
        if not 0 <= partition < partitions or any(offset + length > size for offset, length in ranges):
            return f"its map file {expected} has a bad index entry for partition {partition}"
    return None


def remove_attempt(folder: Path, task: int, attempt: int, epoch: int) -> None:
    """Remove an uncommitted attempt's file and temp file, if any (best effort)."""
    path = map_file(folder, task, attempt, epoch)
    for name in (path, path.with_name(path.name + TMP_SUFFIX)):
        try:
            name.unlink(missing_ok=True)
        except OSError:
            pass


def remove_unreferenced(folder: Path, keep: set[str]) -> int:
    """Remove every file in `folder` whose path is not in `keep`; return how many (resume's GC)."""
    removed = 0
    if not folder.is_dir():
        return 0
    for path in folder.iterdir():
        if str(path) not in keep:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def remove_job_dir(folder: Path) -> None:
    """Remove a finished job's folder and everything in it (best effort)."""
    shutil.rmtree(folder, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

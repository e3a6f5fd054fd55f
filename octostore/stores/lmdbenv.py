"""Opening LMDB environments, and growing their map when a write finds it full.

Traps this module guards (the brief, section 5):

- ``MapFullError`` means the memory map is too small.  The map can only be
  resized with no transaction open in this process, so ``write`` aborts the
  transaction, doubles the map and runs the whole write again: writes passed to
  it must be idempotent functions of the transaction.
- ``writemap=True`` would make a sparse file the size of the map; we leave it off.
- An environment must never be opened before ``fork()`` and used after: local
  workers are started with ``subprocess`` (a fresh interpreter), and workers
  never open the coordinator's stores at all.
- LMDB must not live on NFS; the shared-filesystem mode keeps it local.
- A ``data.mdb`` cut short (a full disk, a copy stopped half-way) is mapped
  whole anyway, and reading a page past its end kills the process with
  SIGBUS.  ``check_length`` compares the file with its own meta pages first
  and refuses a short file by name (``_META``: the layout of LMDB 0.9's
  ``MDB_meta``, two copies in pages 0 and 1, the newer one counts).
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import lmdb

from ..errors import DiskFull, StoreError

log = logging.getLogger(__name__)

LOW_SPACE_BYTES = 16 * 1024 * 1024
"""Free space under which a failed LMDB commit is taken as "disk full" (it cannot tell us itself)."""
T = TypeVar("T")


_MAGIC = 0xBEEFC0DE  # mm_magic, after a meta page's 16-byte header
_PAGE_SIZE_AT = 40  # mm_dbs[FREE_DBI].md_pad holds the page size
_LAST_PAGE_AT = 136  # mm_last_pg: LMDB never gives pages back, so the newer meta's is the larger


def check_length(path: Path) -> None:
    """Raise StoreError if `path`/data.mdb is shorter than its meta pages say it is."""
    data_file = path / "data.mdb"
    try:
        with open(data_file, "rb") as f:
            head = f.read(2 * 65536)  # both meta pages, whatever the page size
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return  # a new environment
    first = _needed_bytes(head, 0)
    needed = max(first, _needed_bytes(head, first and struct.unpack_from("<I", head, _PAGE_SIZE_AT)[0]))
    if size < needed:  # (no meta page at all: not LMDB's, and lmdb.open says so)
        raise StoreError(f"{data_file}: the file has {size} bytes, its last commit needs {needed}: "
                         "it was cut short")


def _needed_bytes(head: bytes, at: int) -> int:
    """The file size the meta page at offset `at` needs, or 0 if there is no meta page there."""
    if len(head) < at + _LAST_PAGE_AT + 8 or struct.unpack_from("<I", head, at + 16)[0] != _MAGIC:
        return 0
    page_size = struct.unpack_from("<I", head, at + _PAGE_SIZE_AT)[0]
    last_page = struct.unpack_from("<Q", head, at + _LAST_PAGE_AT)[0]
    return int((last_page + 1) * page_size)


def open_env(path: Path, map_size_bytes: int, *, sync: bool, max_dbs: int = 0,
             readonly: bool = False) -> lmdb.Environment:
    """Open (creating unless `readonly`) the environment in directory `path`; StoreError if its
    file was cut short (check_length)."""
    if not readonly:
        path.mkdir(parents=True, exist_ok=True)
    check_length(path)
    return lmdb.open(
        str(path),
        map_size=map_size_bytes,
        subdir=True,
        max_dbs=max_dbs,
        readonly=readonly,
        sync=sync,
        metasync=sync,
        writemap=False,
        readahead=False,
        max_readers=126,
        lock=True,  # readers register too, so `octo results` can read while a coordinator writes
    )


def write(env: lmdb.Environment, fn: Callable[[lmdb.Transaction], T]) -> T:
    """Run `fn` in a write transaction, doubling the map and retrying while it is full.

    Raises DiskFull (naming the folder) when the commit fails for lack of disk
    space: LMDB reports ENOSPC as an I/O error, so the free space decides."""
    while True:
        try:
            with env.begin(write=True) as txn:
                return fn(txn)
        except lmdb.MapFullError:
            grow(env)
        except lmdb.Error as e:
            raise write_error(env, e) from None


def sync(env: lmdb.Environment) -> None:
    """Flush `env` to disk, raising DiskFull or StoreError as `write` does."""
    try:
        env.sync(True)
    except lmdb.Error as e:
        raise write_error(env, e) from None


def write_error(env: lmdb.Environment, error: lmdb.Error) -> DiskFull | StoreError:
    """What a failed write or flush of `env` means: DiskFull when little space is left, else StoreError."""
    path = env.path()
    if shutil.disk_usage(path).free < LOW_SPACE_BYTES:
        return DiskFull(f"{path}: the disk is full ({error})",
                        "free some space there, then continue with: octo resume JOBID")
    return StoreError(f"{path}: LMDB write failed: {error}")


def grow(env: lmdb.Environment) -> None:
    """Double the map size of `env` (no transaction may be open in this process)."""
    new_size = env.info()["map_size"] * 2
    log.debug("LMDB map of %s is full; growing it to %d bytes", env.path(), new_size)
    env.set_mapsize(new_size)

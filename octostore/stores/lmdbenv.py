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
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import lmdb

from ..errors import DiskFull, StoreError

log = logging.getLogger(__name__)

LOW_SPACE_BYTES = 16 * 1024 * 1024
"""Free space under which a failed LMDB commit is taken as "disk full" (it cannot tell us itself)."""
T = TypeVar("T")


def open_env(path: Path, map_size_bytes: int, *, sync: bool, max_dbs: int = 0,
             readonly: bool = False) -> lmdb.Environment:
    """Open (creating unless `readonly`) the environment in directory `path`."""
    if not readonly:
        path.mkdir(parents=True, exist_ok=True)
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

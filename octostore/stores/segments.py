"""A segment store: opaque blocks under keys (segment id, block number), appended only.

One store per reduce partition holds the map side's output (the spill store),
and one per job holds reduce output (the results store).  A *segment* is the
blocks of one message from a worker; a *run* (one sorted output of one map
attempt for one partition) is a list of segments, recorded in the state store
only when its task commits.

Keys are ``segment_id`` (8 bytes) + ``block_no`` (4 bytes), big-endian, and
segment ids only grow, so every insert is an append (``putmulti(append=True)``,
~13 M pairs/s against ~70 k/s for per-pair records; see docs/architecture.md).
A whole segment is written in one transaction, so segments of different
workers arriving interleaved still append in order.

Trap: ``putmulti(append=True)`` silently drops a key that is not greater than
the last one.  ``append_segment`` checks ``consumed == added`` and raises.

Durability: opened with ``sync=False``, so an append costs no disk flush.  A
killed process (even ``kill -9``) loses nothing: written pages are in the OS
page cache.  Against an OS crash or power loss, the coordinator calls ``sync``
on every store it appended to before each group commit of the state store
(coordinator/commits.py), so a task is never DONE on disk while its blocks are
not; with ``state_sync: false`` neither is flushed.
Segments no committed task references are garbage; ``delete_segments`` drops
them and deleting the directory drops a finished job's spill.

Memory: LMDB reads through its memory map, and every page read stays in the
reading process's RSS until the map is unmapped (clean page cache, but RSS
all the same).  Appending maps what was written as well: each append reads
the last leaf page through the map, and the kernel's fault-around maps the
freshly written pages next to it (measured: 41 MiB mapped after 40 MB of
appends).  A coordinator would grow by the whole spill, once while storing
it and again while serving it.  So ``iter_blocks`` reads one segment per
transaction, never holding a transaction open across a yield, and after
``REMAP_AFTER_BYTES`` read or appended the environment is closed and opened
again, which unmaps those pages; the coordinator also calls ``release`` once
it has sent a reduce task's runs, or every partition's last pages would stay
mapped to the end of the job.  Safe
because this process's transactions are all short and synchronous (one event
loop thread): between two steps of any reader none is open.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import lmdb

from ..errors import OctostoreInternalError
from . import lmdbenv

_KEY = struct.Struct(">QI")

REMAP_AFTER_BYTES = 8 * 1024 * 1024
"""Bytes read or appended after which the memory map is unmapped (closed and opened again): a
reopen costs well under a millisecond, and the coordinator reads a store per reduce in flight."""


class SegmentStore:
    """Append-only blocks of segments in one LMDB environment (single writer: the coordinator)."""

    def __init__(self, path: Path, map_size_bytes: int, *, readonly: bool = False) -> None:
        self.path = path
        self._readonly = readonly
        self.env = lmdbenv.open_env(path, map_size_bytes, sync=False, readonly=readonly)
        self._next_id = self._last_segment_id() + 1
        self._mapped_since_open = 0
        self._env_lock = threading.Lock()  # sync() runs in the commit thread; release() swaps the env

    def _last_segment_id(self) -> int:
        with self.env.begin() as txn, txn.cursor() as cur:
            return _KEY.unpack(cur.key())[0] if cur.last() else 0

    def append_segment(self, blocks: list[bytes]) -> int:
        """Store `blocks` as a new segment and return its id (ids grow from 1)."""
        segment_id = self._next_id
        items = [(_KEY.pack(segment_id, i), block) for i, block in enumerate(blocks)]

        def put(txn: lmdb.Transaction) -> None:
            consumed, added = txn.cursor().putmulti(items, append=True)
            if consumed != len(items) or added != len(items):
                raise OctostoreInternalError(
                    f"{self.path}: segment {segment_id} appended {added} of {len(items)} blocks (keys out of order)"
                )

        lmdbenv.write(self.env, put)
        self._next_id += 1
        self._mapped_since_open += sum(map(len, blocks))
        if self._mapped_since_open >= REMAP_AFTER_BYTES:
            self.release()
        return segment_id

    def iter_blocks(self, segment_ids: Iterable[int]) -> Iterator[bytes]:
        """Yield the blocks of the given segments, in order (a short read transaction per segment)."""
        for segment_id in segment_ids:
            blocks = self._segment_blocks(segment_id)
            self._mapped_since_open += sum(map(len, blocks))
            if self._mapped_since_open >= REMAP_AFTER_BYTES:
                self.release()
            yield from blocks

    def _segment_blocks(self, segment_id: int) -> list[bytes]:
        blocks = []
        with self.env.begin() as txn, txn.cursor() as cur:
            if cur.set_range(_KEY.pack(segment_id, 0)):
                for key, block in cur:
                    if _KEY.unpack(key)[0] != segment_id:
                        break
                    blocks.append(block)
        return blocks

    def release(self) -> None:
        """Unmap the pages read or appended so far (close and reopen the environment): they leave RSS."""
        if not self._mapped_since_open:
            return
        with self._env_lock:
            map_size = self.env.info()["map_size"]
            self.env.close()
            self.env = lmdbenv.open_env(self.path, map_size, sync=False, readonly=self._readonly)
        self._mapped_since_open = 0

    def sync(self) -> None:
        """Flush every appended block to disk (any thread)."""
        with self._env_lock:
            lmdbenv.sync(self.env)

    def segment_ids(self) -> list[int]:
        """Every segment id present, ascending (skips from segment to segment, not block to block)."""
        ids = []
        with self.env.begin() as txn, txn.cursor() as cur:
            found = cur.first()
            while found:
                segment_id = _KEY.unpack(cur.key())[0]
                ids.append(segment_id)
                found = cur.set_range(_KEY.pack(segment_id + 1, 0))
        return ids

    def delete_segments(self, segment_ids: Iterable[int]) -> None:
        """Delete the blocks of the given segments (idempotent)."""
        ids = sorted(set(segment_ids))

        def delete(txn: lmdb.Transaction) -> None:
            cur = txn.cursor()
            for segment_id in ids:
                if cur.set_range(_KEY.pack(segment_id, 0)):
                    while cur.key() and _KEY.unpack(cur.key())[0] == segment_id:
                        if not cur.delete():
                            break

        lmdbenv.write(self.env, delete)

    def close(self) -> None:
        self.env.close()

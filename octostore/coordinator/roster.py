"""Who is connected: the coordinator's workers, what they moved, and the live status file.

The roster is bookkeeping for the I/O shell (server.py): the connections to
send to and to say goodbye to, the bytes they moved, workers per host for the
progress line, and ``status.json`` for ``octo status``.  It decides nothing:
leases, retries and respawns are the scheduler's (scheduler.py).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocol.channel import AsyncChannel

log = logging.getLogger(__name__)

NO_WORKERS_WARN_S = 30.0
"""How long the coordinator waits with no worker before it says so (server mode)."""


@dataclass(eq=False)
class WorkerConn:
    """One connected, authenticated worker (the scheduler's handle for it)."""

    name: str  # host:pid, in every log line about it
    pid: int
    channel: AsyncChannel
    compress_inputs: bool = True  # zstd its map inputs (config compress_inputs; not over loopback by default)


@dataclass
class Totals:
    """What the job moved, for progress and the final report."""

    records_in: int = 0
    pairs_out: int = 0
    worker_peak_rss_bytes: int = 0
    workers_seen: int = 0
    refused_peers: int = 0
    bytes_in: int = 0  # of connections that ended; live ones count their own (Roster.bytes_moved)
    bytes_out: int = 0


class Roster:
    """The connected workers, and what the ones that left moved."""

    def __init__(self, totals: Totals, now: float) -> None:
        self.totals = totals
        self._workers: set[WorkerConn] = set()
        self._last_worker_seen = now

    def add(self, worker: WorkerConn) -> None:
        self._workers.add(worker)
        self.totals.workers_seen += 1

    def remove(self, worker: WorkerConn) -> None:
        """Forget a worker whose connection ended, keeping the bytes it moved. Idempotent."""
        if worker in self._workers:
            self._workers.discard(worker)
            self.totals.bytes_in += worker.channel.bytes_in
            self.totals.bytes_out += worker.channel.bytes_out

    def __iter__(self) -> Iterator[WorkerConn]:
        return iter(list(self._workers))

    def __len__(self) -> int:
        return len(self._workers)

    def per_host(self) -> dict[str, int]:
        """Connected workers by host, for the progress line."""
        return dict(Counter(w.name.rpartition(":")[0] for w in self._workers))

    def bytes_moved(self) -> tuple[int, int]:
        """(in, out) over the job so far, live connections included."""
        return (self.totals.bytes_in + sum(w.channel.bytes_in for w in self._workers),
                self.totals.bytes_out + sum(w.channel.bytes_out for w in self._workers))

    def warn_if_empty(self, now: float) -> None:
        """Say so every NO_WORKERS_WARN_S that no worker is connected (an `octo server` nobody joined)."""
        if self._workers:
            self._last_worker_seen = now
        elif now - self._last_worker_seen > NO_WORKERS_WARN_S:
            self._last_worker_seen = now
            log.warning("no workers connected for %.0f s; start some with `octo client HOST:PORT`",
                        NO_WORKERS_WARN_S)


def write_live_status(path: Path, status: dict[str, Any]) -> None:
    """Replace the job's status.json (for `octo status`) atomically: temp file, then rename.
    Best effort: a full disk must not stop the job for the sake of a status file."""
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(status))
        os.replace(tmp, path)
    except OSError as e:
        log.debug("cannot write %s: %s", path, e)

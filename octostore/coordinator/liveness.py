"""Liveness: who is connected, who is silent, which local workers died, and the live status file.

The coordinator's side of fault detection, one concern apart from handing out
work (server.py, which mixes this class in):

- **Leases.** Every message from a worker, heartbeats included (a worker sends
  one every lease/4 from a thread, so a long mapfn is not mistaken for a dead
  worker), renews its lease (``WorkerConn.last_seen``).  ``_tick_forever``
  runs every min(1 s, lease/4); a worker silent past the lease has its
  connection closed, and the server's ``_lose`` requeues its task.  A SIGSTOPped
  worker is caught this way; a killed one sooner, by its connection's EOF.
- **Local workers.** The pool (launch/) reports processes that exited.  One
  that died while running a task (its connection was lost with that attempt)
  counts as a failed attempt of the task, with its signal or exit code: a
  segfault or OOM in user code must not retry forever.  A lost *remote*
  worker does not count (a network fault is not the task's).  Dead local
  workers are replaced, up to ``MAX_RESPAWNS_PER_WORKER`` each.
- **status.json.** Rewritten every tick, atomically, for ``octo status``.

Reads and writes the server's state: ``_workers``, ``scheduler``, ``state``,
``config``, ``paths``, ``totals``, ``pool`` and the attributes set in
``CoordinatorServer.__init__`` under "liveness".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import Config
from ..home import JobPaths
from ..protocol.channel import AsyncChannel
from ..protocol.messages import Heartbeat
from ..stores.state import StateStore, TaskState
from .scheduler import Assignment, Scheduler

log = logging.getLogger(__name__)

@dataclass(eq=False)
class WorkerConn:
    """One connected, authenticated worker."""

    name: str
    pid: int
    channel: AsyncChannel
    last_seen: float  # time.monotonic() of its last message: the lease runs from here
    assignment: Assignment | None = None
    compress_inputs: bool = True  # zstd its map inputs (config compress_inputs; not over loopback by default)


@dataclass
class Totals:
    """What the job moved, for progress and the final report."""

    records_in: int = 0
    pairs_out: int = 0
    worker_peak_rss_bytes: int = 0
    workers_seen: int = 0
    refused_peers: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class WorkerPool(Protocol):
    """Local worker processes the coordinator started (launch/local.py), seen from here."""

    def reap(self) -> list[tuple[int, int]]:
        """(pid, returncode) of workers that exited since the last call."""
        ...

    def start(self, count: int) -> None:
        """Start `count` more workers."""
        ...


MAX_RESPAWNS_PER_WORKER = 10
"""Local workers restarted per original worker before the coordinator stops replacing them."""


NO_WORKERS_WARN_S = 30.0
"""How long the coordinator waits with no worker before it says so (server mode)."""


def write_live_status(path: Path, status: dict[str, Any]) -> None:
    """Replace the job's status.json (for `octo status`) atomically: temp file, then rename.
    Best effort: a full disk must not stop the job for the sake of a status file."""
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(status))
        os.replace(tmp, path)
    except OSError as e:
        log.debug("cannot write %s: %s", path, e)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"



class Liveness:
    """Mixed into CoordinatorServer: leases, local worker reaping and replacement, status.json."""

    # Set by CoordinatorServer.__init__; listed here so this class reads on its own.
    _workers: set[WorkerConn]
    scheduler: Scheduler
    state: StateStore
    config: Config
    paths: JobPaths
    totals: Totals
    pool: WorkerPool | None
    _lost_local: dict[int, Assignment]
    _respawns_left: int
    _cancelled: bool
    _last_worker_seen: float

    def _fail(self, reason: str) -> None:
        raise NotImplementedError  # CoordinatorServer's

    async def _on_heartbeat(self, worker: WorkerConn, _: Heartbeat) -> None:
        pass  # receiving it renewed the lease (last_seen)

    async def _tick_forever(self) -> None:
        every_s = min(1.0, self.config.lease_s / 4)
        while True:
            await asyncio.sleep(every_s)
            self._expire_leases(time.monotonic())
            self._reap_local_workers()
            self._warn_if_no_workers(time.monotonic())
            write_live_status(self.paths.live_status, self.live_status())

    def _expire_leases(self, now: float) -> None:
        for worker in list(self._workers):
            if now - worker.last_seen > self.config.lease_s:
                log.warning("worker %s lost: silent for %.1f s (lease %.1f s)", worker.name,
                            now - worker.last_seen, self.config.lease_s)
                worker.channel.close()  # its reader sees the connection end and calls _lose
                worker.last_seen = float("inf")  # warn once

    def _reap_local_workers(self) -> None:
        if self.pool is None:
            return
        for pid, code in self.pool.reap():
            lost = self._lost_local.pop(pid, None)
            if code != 0 and lost is not None:
                self._count_crash(pid, code, lost)
            if not self.scheduler.is_finished and not self._cancelled and self._respawns_left > 0:
                self._respawns_left -= 1
                log.info("local worker %d exited (%s); starting a replacement", pid, _exit_text(code))
                self.pool.start(1)

    def _count_crash(self, pid: int, code: int, lost: Assignment) -> None:
        """A local worker died while running user code: that attempt failed (and counts)."""
        message = (f"worker process {pid} died ({_exit_text(code)}) while running {lost.kind} task {lost.task} "
                   f"(attempt {lost.attempt} of {self.config.max_attempts})")
        log.warning("%s", message)
        if self.scheduler.is_finished:
            return  # the task was redone and committed meanwhile; nothing left to count
        record = self.state.record_failure(lost.kind, lost.task, message, self.config.max_attempts)
        if record.state is TaskState.FAILED:
            self._fail(message)

    def _warn_if_no_workers(self, now: float) -> None:
        if self._workers:
            self._last_worker_seen = now
        elif now - self._last_worker_seen > NO_WORKERS_WARN_S:
            self._last_worker_seen = now
            log.warning("no workers connected for %.0f s; start some with `octo client HOST:PORT`",
                        NO_WORKERS_WARN_S)

    def live_status(self) -> dict[str, Any]:
        running = {id(w): f"{a.kind} {a.task} attempt {a.attempt}" for a, w in self.scheduler.running()}
        return {"pid": os.getpid(), "host": socket.gethostname(), "updated_at": time.time(),
                "phase": self.scheduler.phase.value,
                "workers": [{"name": w.name, "task": running.get(id(w))} for w in self._workers],
                "bytes_in": self.totals.bytes_in + sum(w.channel.bytes_in for w in self._workers),
                "bytes_out": self.totals.bytes_out + sum(w.channel.bytes_out for w in self._workers)}

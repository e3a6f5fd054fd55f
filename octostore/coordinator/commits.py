"""Group commit: finished attempts become DONE in batches, off the event loop.

A synced LMDB commit waits for the disk.  Made on the event loop once per task,
it held scheduling to ~1,100 tasks/s (``benchmarks/scheduling.py``; py-spy put
40% of the loop's samples in the commit).  So the server queues each finished
attempt here and goes on serving: one thread commits everything queued since
its last flush in a single transaction (one sync), then the loop is told, per
attempt, whether its commit took effect.

Handing a worker its next task before its last one is durable is safe: the
worker keeps nothing once it reported TaskDone, so that task is acked by
nothing durable either way.  If the coordinator dies before the commit, the
task is simply not DONE and ``octo resume`` runs it again (and collects its
segments).  What must wait for the commit is whatever relies on it: the
scheduler's ``task_done`` (no reduce task may read map output that is not
committed) and the end of the job.

Before each batch the thread flushes the segment stores appended to since
the last one (``before_commit`` names them), so a task DONE on disk never
points at blocks an OS crash could lose.

The commit thread is the state store's only writer while the loop is
serving, apart from the rare failure and phase records the loop writes
itself (LMDB serialises writers; py-lmdb releases the GIL while it waits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .. import failpoints
from ..stores.outputs import TaskOutput
from ..stores.state import StateStore

Commit = tuple[str, int, int, TaskOutput | None]  # (kind, task, attempt, output)
OnCommitted = Callable[[bool], None]  # True: the attempt is DONE; False: the task already was


class GroupCommit:
    """A queue of task commits, flushed in batches by one thread."""

    def __init__(self, state: StateStore, on_error: Callable[[Exception], None],
                 before_commit: Callable[[], list[Callable[[], None]]]) -> None:
        self._state = state
        self._on_error = on_error
        self._before_commit = before_commit  # on the loop: the flushes to run first, in the thread
        self._queue: list[tuple[Commit, OnCommitted]] = []
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="octo-commit")
        self._flusher: asyncio.Task[None] | None = None

    def add(self, commit: Commit, then: OnCommitted) -> None:
        """Queue `commit`; `then(committed)` runs on the event loop once it is durable."""
        self._queue.append((commit, then))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def drain(self) -> None:
        """Wait until every queued commit is made (or failed); call before the stores close."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        self._thread.shutdown()

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                flushes = self._before_commit()
                committed = await loop.run_in_executor(self._thread, self._commit, [c for c, _ in batch], flushes)
                for (_, then), ok in zip(batch, committed):
                    then(ok)
        except Exception as e:  # DiskFull, StoreError: nothing of this batch was committed
            self._queue.clear()
            self._on_error(e)
        finally:
            self._flusher = None

    def _commit(self, commits: list[Commit], flushes: list[Callable[[], None]]) -> list[bool]:
        for flush in flushes:
            flush()
        for kind, *_ in commits:
            failpoints.hit(f"before-{kind}-commit")
        committed = self._state.commit_tasks(commits)
        for kind, *_ in commits:
            failpoints.hit(f"after-{kind}-commit")
        return committed

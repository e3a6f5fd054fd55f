"""Several kinds of workers (local processes, SSH hosts) seen by the coordinator as one pool."""

from __future__ import annotations

from typing import Protocol


class WorkerPool(Protocol):
    """Workers the coordinator started (local processes, SSH hosts, or a group of both).

    The coordinator calls these off its event loop, from one thread (an SSH start can
    take seconds); none of them may block on a worker."""

    def reap(self) -> list[tuple[int, int]]:
        """(pid, returncode) of workers that exited since the last call."""
        ...

    def start(self, count: int) -> None:
        """Start `count` more workers."""
        ...

    def stop(self) -> None:
        """Stop every worker (they exit when their stdin closes)."""
        ...


class WorkerGroup:
    """Reap from all pools; replace a dead worker in the pool it came from."""

    def __init__(self, pools: list[WorkerPool]) -> None:
        self._pools = pools
        self._owed: list[WorkerPool] = []  # pools whose workers exited, oldest first: replacements go there

    def add(self, pool: WorkerPool) -> None:
        self._pools.append(pool)

    def reap(self) -> list[tuple[int, int]]:
        exited = []
        for pool in self._pools:
            for item in pool.reap():
                exited.append(item)
                self._owed.append(pool)
        return exited

    def start(self, count: int) -> None:
        for _ in range(count):
            pool = self._owed.pop(0) if self._owed else self._pools[0]
            pool.start(1)

    def stop(self) -> None:
        for pool in self._pools:
            pool.stop()

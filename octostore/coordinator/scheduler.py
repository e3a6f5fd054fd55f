"""Which task runs next and which attempt counts: a state machine with no I/O and no clock.

The server feeds it events (a worker asks for work, an attempt finished or
failed, a worker was lost) and acts on what it returns; it never touches a
socket or a store, so every rule here is tested by calling methods
(tests/test_scheduler.py).

Phases, as octo.py: MAP until every map task is done, then REDUCE, then DONE
(or FAILED).  Tasks are handed out first come, first served.  A task has at
most one *current* attempt; a result from any other attempt (a lost worker's,
a stale one) is not current and must be discarded by the caller.

Invariant: a task is in at most one of ``_pending``, ``_running`` and
``_done``; ``_check`` asserts it after every event in tests
(``test_scheduler_invariant_holds_under_random_events``).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ..protocol.messages import MAP, REDUCE


class Phase(str, enum.Enum):
    MAP = "map"
    REDUCE = "reduce"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Assignment:
    kind: str
    task: int
    attempt: int


TaskId = tuple[str, int]


class Scheduler:
    """Hands out tasks and decides which results count."""

    def __init__(self, map_tasks: int, reduce_tasks: int, *, done: Iterable[TaskId] = (),
                 attempts: dict[TaskId, int] | None = None) -> None:
        self.totals = {MAP: map_tasks, REDUCE: reduce_tasks}
        self._done: set[TaskId] = set(done)
        self._done_counts = {MAP: 0, REDUCE: 0}
        for kind, _ in self._done:
            self._done_counts[kind] += 1
        self._attempts: dict[TaskId, int] = dict(attempts or {})  # last attempt number handed out
        self._running: dict[TaskId, tuple[int, object]] = {}  # task -> (current attempt, worker)
        self._pending: deque[TaskId] = deque()
        self.phase = Phase.MAP
        self.failure: str | None = None
        self._enter(Phase.MAP)

    # -- events ---------------------------------------------------------------------------

    def assign(self, worker: object) -> Assignment | None:
        """Give `worker` the next pending task of the current phase, or None."""
        if self.phase not in (Phase.MAP, Phase.REDUCE) or not self._pending:
            return None
        task_id = self._pending.popleft()
        attempt = self._attempts.get(task_id, 0) + 1
        self._attempts[task_id] = attempt
        self._running[task_id] = (attempt, worker)
        return Assignment(task_id[0], task_id[1], attempt)

    def is_current(self, kind: str, task: int, attempt: int) -> bool:
        """True if (task, attempt) is the running attempt whose result would count."""
        running = self._running.get((kind, task))
        return running is not None and running[0] == attempt

    def task_done(self, kind: str, task: int, attempt: int) -> None:
        """Record a committed attempt (call after the durable commit); may advance the phase."""
        task_id = (kind, task)
        self._running.pop(task_id, None)
        if task_id not in self._done:
            self._done.add(task_id)
            self._done_counts[kind] += 1
        if self.phase.value == kind and self._phase_done():
            self._enter(Phase.REDUCE if kind == MAP else Phase.DONE)

    def task_failed(self, kind: str, task: int, attempt: int, *, retry: bool, reason: str) -> None:
        """Record a failed attempt: queue the task again, or fail the job."""
        if not self.is_current(kind, task, attempt):
            return
        del self._running[(kind, task)]
        if retry:
            self._pending.append((kind, task))
        else:
            self.fail(reason)

    def worker_lost(self, worker: object) -> list[Assignment]:
        """Put the lost worker's running tasks back in the queue (not counted as attempts)."""
        lost = [Assignment(k, t, a) for (k, t), (a, w) in self._running.items() if w is worker]
        for assignment in lost:
            del self._running[(assignment.kind, assignment.task)]
            self._pending.appendleft((assignment.kind, assignment.task))
        return lost

    def fail(self, reason: str) -> None:
        """End the job: nothing more is assigned."""
        if self.phase is not Phase.FAILED:
            self.phase, self.failure = Phase.FAILED, reason
            self._pending.clear()

    # -- queries --------------------------------------------------------------------------

    @property
    def is_finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)

    def done_count(self, kind: str) -> int:
        return self._done_counts[kind]

    def _phase_done(self) -> bool:
        kind = self.phase.value
        return self.done_count(kind) == self.totals[kind]

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        if phase in (Phase.MAP, Phase.REDUCE):
            kind = phase.value
            self._pending = deque((kind, t) for t in range(self.totals[kind]) if (kind, t) not in self._done)
            if not self._pending and not any(k == kind for k, _ in self._running):
                self._enter(Phase.REDUCE if phase is Phase.MAP else Phase.DONE)

    def _check(self) -> None:
        pending, running = set(self._pending), set(self._running)
        assert not (pending & running) and not (pending & self._done) and not (running & self._done)

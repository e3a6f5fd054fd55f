"""Which task runs next and which attempts count: a state machine with no I/O and no clock.

The server feeds it events (a worker asks for work, an attempt finished or
failed, a worker was lost) and acts on what it returns; it never touches a
socket or a store and reads no clock (``now`` is an argument), so every rule
here is tested by calling methods (tests/test_scheduler.py).

Phases, as octo.py: MAP until every map task is done, then REDUCE, then DONE
(or FAILED).  Tasks are handed out first come, first served.

Backup attempts (the MapReduce paper's answer to stragglers: without them,
sort took 44% longer).  When nothing is pending, at least
``BACKUP_AFTER_DONE`` of the phase is done, and a task's only attempt has run
``BACKUP_SLOWER_THAN`` times the median duration of the phase's finished
tasks, an idle worker gets a second attempt of it (the longest-running such
task first).  A task may then have two current attempts; the first to commit
wins and the other's result is refused (``is_current`` turns False).

A finished attempt is first *committing* (``finished``: its output is on its
way to the state store, group-committed off the event loop, see commits.py)
and only then done (``task_done``, after the durable commit).  A committing
task belongs to no worker: losing the worker that ran it does not requeue it,
and it is never given a backup attempt.

Invariant: a task is in at most one of ``_pending``, ``_running``,
``_committing`` and ``_done``, and every entry of ``_running`` has at least one attempt;
``_check`` asserts it after every event in tests
(``test_scheduler_invariant_holds_under_random_events``).
"""

from __future__ import annotations

import enum
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ..protocol.messages import MAP, REDUCE

BACKUP_AFTER_DONE = 0.75
"""Fraction of a phase's tasks that must be done before backups start (Spark's speculation quantile)."""

BACKUP_SLOWER_THAN = 1.5
"""A task is a straggler once it has run this many times the phase's median task duration."""


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
    is_backup: bool = False


TaskId = tuple[str, int]


class Scheduler:
    """Hands out tasks and decides which results count."""

    def __init__(self, map_tasks: int, reduce_tasks: int, *, done: Iterable[TaskId] = (),
                 attempts: dict[TaskId, int] | None = None, backup_tasks: bool = True) -> None:
        self.totals = {MAP: map_tasks, REDUCE: reduce_tasks}
        self.backup_tasks = backup_tasks
        self._done: set[TaskId] = set(done)
        self._done_counts = {MAP: 0, REDUCE: 0}
        for kind, _ in self._done:
            self._done_counts[kind] += 1
        self._attempts: dict[TaskId, int] = dict(attempts or {})  # last attempt number handed out
        self._running: dict[TaskId, dict[int, object]] = {}  # task -> {current attempt: worker}
        self._committing: set[TaskId] = set()  # finished, durable commit in progress
        self._started: dict[TaskId, float] = {}  # when the task's first running attempt started
        self._durations: dict[str, list[float]] = {MAP: [], REDUCE: []}
        self._pending: deque[TaskId] = deque()
        self.phase = Phase.MAP
        self.failure: str | None = None
        self._enter(Phase.MAP)

    # -- events ---------------------------------------------------------------------------

    def assign(self, worker: object, now: float = 0.0) -> Assignment | None:
        """Give `worker` the next pending task of the current phase, a backup attempt, or None."""
        if self.phase not in (Phase.MAP, Phase.REDUCE):
            return None
        if self._pending:
            task_id = self._pending.popleft()
            self._started[task_id] = now
            return self._start(task_id, worker, is_backup=False)
        straggler = self._straggler(worker, now)
        return self._start(straggler, worker, is_backup=True) if straggler else None

    def _start(self, task_id: TaskId, worker: object, *, is_backup: bool) -> Assignment:
        attempt = self._attempts.get(task_id, 0) + 1
        self._attempts[task_id] = attempt
        self._running.setdefault(task_id, {})[attempt] = worker
        return Assignment(task_id[0], task_id[1], attempt, is_backup)

    def _straggler(self, worker: object, now: float) -> TaskId | None:
        kind = self.phase.value
        finished = self._durations[kind]
        if not self.backup_tasks or not finished or self._done_counts[kind] < BACKUP_AFTER_DONE * self.totals[kind]:
            return None
        slow_after = BACKUP_SLOWER_THAN * statistics.median(finished)
        candidates = [(self._started[t], t) for t, attempts in self._running.items()
                      if t[0] == kind and len(attempts) == 1 and worker not in attempts.values()
                      and now - self._started[t] > slow_after]
        return min(candidates)[1] if candidates else None

    def is_current(self, kind: str, task: int, attempt: int) -> bool:
        """True if (task, attempt) is a running attempt whose result would count."""
        return attempt in self._running.get((kind, task), {})

    def holder(self, kind: str, task: int, attempt: int) -> object | None:
        """The worker running (task, attempt) if it is current, else None."""
        return self._running.get((kind, task), {}).get(attempt)

    def finished(self, kind: str, task: int, attempt: int) -> list[int]:
        """Record that a current attempt finished and its commit began; return the task's other
        attempts, which are stale from now on (their output is to be discarded)."""
        task_id = (kind, task)
        others = [a for a in self._running.pop(task_id, {}) if a != attempt]
        self._committing.add(task_id)
        return others

    def task_done(self, kind: str, task: int, attempt: int, now: float = 0.0) -> None:
        """Record a committed attempt (call after the durable commit); may advance the phase.
        Any other attempt of the task becomes stale."""
        task_id = (kind, task)
        self._running.pop(task_id, None)
        self._committing.discard(task_id)
        if task_id in self._started:
            self._durations[kind].append(now - self._started.pop(task_id))
        if task_id not in self._done:
            self._done.add(task_id)
            self._done_counts[kind] += 1
        if self.phase.value == kind and self._phase_done():
            self._enter(Phase.REDUCE if kind == MAP else Phase.DONE)

    def task_failed(self, kind: str, task: int, attempt: int, *, retry: bool, reason: str) -> None:
        """Record a failed attempt: queue the task again, or fail the job."""
        if not self.is_current(kind, task, attempt):
            return
        if not retry:
            self.fail(reason)
            return
        self._drop_attempt((kind, task), attempt, front=False)

    def worker_lost(self, worker: object) -> list[Assignment]:
        """Take back the lost worker's attempts; tasks left with none are queued first again."""
        lost = [Assignment(k, t, a) for (k, t), attempts in self._running.items()
                for a, w in attempts.items() if w is worker]
        for assignment in lost:
            self._drop_attempt((assignment.kind, assignment.task), assignment.attempt, front=True)
        return lost

    def _drop_attempt(self, task_id: TaskId, attempt: int, *, front: bool) -> None:
        attempts = self._running[task_id]
        del attempts[attempt]
        if not attempts:  # no other attempt carries on: the task waits for a worker again
            del self._running[task_id]
            self._started.pop(task_id, None)
            (self._pending.appendleft if front else self._pending.append)(task_id)

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

    def running(self) -> list[tuple[Assignment, object]]:
        """Every current attempt and its worker."""
        return [(Assignment(k, t, a), w) for (k, t), attempts in self._running.items() for a, w in attempts.items()]

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
        pending, running, committing = set(self._pending), set(self._running), self._committing
        assert not (pending & running) and not (pending & self._done) and not (running & self._done)
        assert not (committing & (pending | running | self._done))
        assert all(self._running.values())

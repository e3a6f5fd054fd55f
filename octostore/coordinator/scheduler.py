"""The task lifecycle: a state machine that takes events and returns actions, with no I/O.

Everything that decides what happens to a task lives here, and only here:
which task runs next and on which worker, which attempt's result counts,
when a failure is retried and when it fails the job, when a silent worker is
lost (leases), when a straggler gets a backup attempt, and when a dead local
worker is replaced.  The server (server.py) turns what happens on its sockets
and stores into events, calls ``Scheduler.handle``, and carries out the
actions it gets back; it decides nothing itself.  The scheduler never touches
a socket, a store or a clock (every event carries ``now``), so each rule is
tested by calling it (tests/test_scheduler.py), as distributed's
``WorkerState.handle_stimulus``.  The events and actions themselves are in
events.py.

    event (what happened)                       actions (what the server must do)
    WorkerJoined / WorkerReady                  Assign (send the task), Dismiss (job over)
    AttemptFinished (TaskDone from its holder)  Commit (queue the durable commit), Discard
    AttemptCommitted (the group commit landed)  Discard (if refused), EnterPhase
    AttemptFailed (user code raised)            Discard, RecordFailure, Assign | EnterPhase(FAILED)
    WorkerLost (its connection ended)           Discard (its attempts run again)
    WorkerExited (a local process was reaped)   RecordFailure (it died mid-task) | Warn, StartWorkers
    Tick (the clock)                            LoseWorker (lease expired), Assign (backups), Warn
                                                (a stuck task), EnterPhase(FAILED) (no workers left)
    Heard (any message: the lease renews)       nothing
    Abort / Halt (the job cannot / must not go on)  EnterPhase(FAILED) / nothing more is assigned

What happens when a worker dies mid-task:

1. Its connection ends (EOF: it was killed) or it stays silent past its lease
   (``Tick`` returns ``LoseWorker``; SIGSTOP, a cut network).  Either way the
   server sends ``WorkerLost``: each attempt the worker held is discarded, and
   a task left with no running attempt goes to the *front* of the queue.
2. If it was a local process, the pool reaps it and the server sends
   ``WorkerExited``.  Any exit while it ran an attempt (a signal, a segfault,
   an OOM kill, even ``os._exit(0)`` in mapfn) counts as a failure of that
   attempt's task, like an exception: a task that keeps killing its workers
   fails the job after ``max_attempts`` (Dask's ``allowed-failures``), not
   never.  A worker the server dropped for what it sent (``WorkerLost.fault``:
   a frame over the limit, a message out of place) fails its attempt at once,
   local or remote.  A remote worker that is merely lost does not count: a
   network fault is not the task's.
3. Unless the job is over or halted, a replacement is started, up to
   ``MAX_RESPAWNS_PER_WORKER`` per worker the job started with.  A job whose
   own workers are all gone with no replacement left fails after
   ``no_workers_timeout_s`` (a job of ``octo server``, whose clients come by
   hand, waits).

A task that runs ``STUCK_AFTER`` times its phase's median (and at least
``STUCK_MIN_S``) is reported once (``Warn``): it may be stuck.

Phases, as octo.py: MAP until every map task is done, then REDUCE, then DONE
(or FAILED).  Tasks are handed out first come, first served; a worker runs
one attempt at a time (it sends Ready for the next).

Backup attempts (the MapReduce paper: without them, sort took 44% longer).
When nothing is pending, at least ``BACKUP_AFTER_DONE`` of the phase is done,
and a task's only attempt has run ``BACKUP_SLOWER_THAN`` times the median
duration of the phase's finished tasks, an idle worker gets a second attempt
(the longest-running such task first).  The first to finish wins; the other
is discarded.

A finished attempt is first *committing* (its output is on its way to the
state store, group-committed off the event loop, see commits.py) and only
then done (``AttemptCommitted``).  A committing task belongs to no worker:
losing the worker that ran it does not requeue it, and it gets no backup.

Invariant: a task is in at most one of ``_pending``, ``_running``,
``_committing`` and ``_done``; every entry of ``_running`` has at least one
attempt; an idle worker holds no attempt.  ``check_invariants`` asserts it;
tests call it after every event (``test_invariants_hold_under_random_events``).
"""

from __future__ import annotations

import signal
import statistics
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..tasks import TaskKind
from .events import (
    Abort,
    Action,
    Assign,
    AttemptCommitted,
    AttemptFailed,
    AttemptFinished,
    Commit,
    Discard,
    DiscardReason,
    Dismiss,
    EnterPhase,
    Event,
    Halt,
    Heard,
    LoseWorker,
    Phase,
    RecordFailure,
    StartWorkers,
    TaskId,
    Tick,
    Warn,
    Worker,
    WorkerExited,
    WorkerJoined,
    WorkerLost,
    WorkerReady,
)

BACKUP_AFTER_DONE = 0.75
"""Fraction of a phase's tasks that must be done before backups start (Spark's speculation quantile)."""

BACKUP_SLOWER_THAN = 1.5
"""A task is a straggler once it has run this many times the phase's median task duration."""

MAX_RESPAWNS_PER_WORKER = 10
"""Local workers restarted per original worker before the coordinator stops replacing them."""

STUCK_AFTER = 10.0
"""A task running this many times its phase's median duration gets a warning (once)..."""

STUCK_MIN_S = 60.0
"""...and only once it has run this long: short phases have tiny medians."""


@dataclass(slots=True)
class _WorkerInfo:
    pid: int
    heard_at: float  # the lease runs from here
    is_expired: bool = False  # LoseWorker was returned: say it once


@dataclass(frozen=True, slots=True)
class _Held:
    """An attempt a lost worker held, kept until its process is reaped (was it a crash?)."""

    kind: TaskKind
    task: int
    attempt: int


@dataclass(slots=True)
class _Policy:
    max_attempts: int
    lease_s: float
    backup_tasks: bool
    respawns_left: int  # local workers the scheduler may still start as replacements
    no_workers_timeout_s: float  # a job with none of its workers left, and no replacement allowed, fails then
    launches_workers: bool  # the job started its own workers (else `octo server`: clients come by hand)


class Scheduler:
    """One job's task lifecycle; ``handle`` is the only way to change it."""

    def __init__(self, map_tasks: int, reduce_tasks: int, *, max_attempts: int, lease_s: float,
                 backup_tasks: bool = True, local_workers: int = 0, no_workers_timeout_s: float = 60.0,
                 done: Iterable[TaskId] = (), failures: dict[TaskId, int] | None = None) -> None:
        """`done` and `failures` come from the state store (a resumed job), so a task's
        failures and attempt numbers go on where they stopped."""
        self.totals = {TaskKind.MAP: map_tasks, TaskKind.REDUCE: reduce_tasks}
        self._policy = _Policy(max_attempts, lease_s, backup_tasks, MAX_RESPAWNS_PER_WORKER * local_workers,
                               no_workers_timeout_s, local_workers > 0)
        self._done: set[TaskId] = set(done)
        self._done_counts = {kind: sum(1 for k, _ in self._done if k == kind) for kind in TaskKind}
        self._failures: dict[TaskId, int] = dict(failures or {})  # attempts whose user code raised or crashed
        self._attempts: dict[TaskId, int] = dict(self._failures)  # last attempt number handed out
        self._running: dict[TaskId, dict[int, Worker]] = {}  # task -> {current attempt: its worker}
        self._committing: set[TaskId] = set()  # finished, durable commit in progress
        self._started: dict[TaskId, float] = {}  # when the task's first running attempt started
        self._durations: dict[TaskKind, list[float]] = {kind: [] for kind in TaskKind}
        self._pending: deque[TaskId] = deque()
        self._idle: list[Worker] = []  # workers that sent Ready and got nothing yet
        self._workers: dict[Worker, _WorkerInfo] = {}  # every connected worker
        self._lost_by_pid: dict[int, _Held] = {}  # lost workers' attempts, until their process is reaped
        self._exit_codes: dict[int, int] = {}  # processes reaped while their connection was still open
        self._stuck_warned: set[TaskId] = set()
        self._last_worker_at: float | None = None  # when a worker was last connected (None: not yet)
        self._is_halted = False
        self.phase = Phase.MAP
        self.failure: str | None = None
        self._enter(Phase.MAP, [])

    # -- the entry point ------------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; return what the server must do, in order (do not change the list)."""
        if type(event) is Heard:  # one per message received: renew the lease, nothing else can follow
            info = self._workers.get(event.worker)
            if info is not None:
                info.heard_at = event.now
            return _NOTHING
        actions: list[Action] = []
        _HANDLERS[type(event)](self, event, actions)
        if self._idle and self.phase in (Phase.MAP, Phase.REDUCE) and not self._is_halted:
            self._dispatch(event.now, actions)
        return actions

    def _on_worker_joined(self, e: WorkerJoined, actions: list[Action]) -> None:
        self._workers[e.worker] = _WorkerInfo(e.pid, e.now)
        self._last_worker_at = e.now

    def _on_worker_ready(self, e: WorkerReady, actions: list[Action]) -> None:
        if self.is_finished:
            actions.append(Dismiss(e.worker))
        elif e.worker in self._workers and e.worker not in self._idle:
            self._idle.append(e.worker)

    def _on_attempt_finished(self, e: AttemptFinished, actions: list[Action]) -> None:
        task_id = (e.kind, e.task)
        attempts = self._running.get(task_id, {})
        if e.attempt not in attempts:
            return  # stale: the server checks the holder, so this is a late duplicate
        del self._running[task_id]
        self._committing.add(task_id)
        actions.append(Commit(e.kind, e.task, e.attempt))
        actions += [Discard(e.kind, e.task, other, DiscardReason.BEATEN)
                    for other in attempts if other != e.attempt]

    def _on_attempt_committed(self, e: AttemptCommitted, actions: list[Action]) -> None:
        task_id = (e.kind, e.task)
        self._committing.discard(task_id)
        if not e.committed:  # the task was DONE already: nothing references this output
            actions.append(Discard(e.kind, e.task, e.attempt, DiscardReason.ALREADY_DONE))
        if task_id in self._started:
            self._durations[e.kind].append(e.now - self._started.pop(task_id))
        if task_id not in self._done:
            self._done.add(task_id)
            self._done_counts[e.kind] += 1
        if self.phase.value == e.kind and self._done_counts[e.kind] == self.totals[e.kind]:
            self._enter(Phase.REDUCE if e.kind is TaskKind.MAP else Phase.DONE, actions)

    def _on_attempt_failed(self, e: AttemptFailed, actions: list[Action]) -> None:
        if not self.is_current(e.kind, e.task, e.attempt):
            return
        actions.append(Discard(e.kind, e.task, e.attempt, DiscardReason.FAILED))
        self._drop_attempt((e.kind, e.task), e.attempt, front=False)
        self._count_failure((e.kind, e.task), e.message, e.error, e.is_contract_error, actions)

    def _on_worker_lost(self, e: WorkerLost, actions: list[Action]) -> None:
        info = self._workers.pop(e.worker, None)
        self._last_worker_at = e.now
        if e.worker in self._idle:
            self._idle.remove(e.worker)
        held = [(task_id, attempt) for task_id, attempts in self._running.items()
                for attempt, w in attempts.items() if w is e.worker]
        for (kind, task), attempt in held:
            actions.append(Discard(kind, task, attempt, DiscardReason.WORKER_LOST, e.worker))
            self._drop_attempt((kind, task), attempt, front=True)
            if e.fault is not None:
                message = (f"{e.fault} while running {kind} task {task} "
                           f"(attempt {attempt} of {self._policy.max_attempts})")
                self._count_failure((kind, task), message, message, False, actions)
            elif info is not None:  # if it was a local process and it exits, the attempt counts
                self._lost_by_pid[info.pid] = _Held(kind, task, attempt)
        if info is not None and info.pid in self._exit_codes:  # reaped before its connection ended
            self._count_crash(info.pid, self._exit_codes.pop(info.pid), actions)

    def _on_worker_exited(self, e: WorkerExited, actions: list[Action]) -> None:
        if any(info.pid == e.pid for info in self._workers.values()):
            self._exit_codes[e.pid] = e.code  # still connected: count it once WorkerLost says what it held
        else:
            self._count_crash(e.pid, e.code, actions)
        if not self.is_finished and not self._is_halted and self._policy.respawns_left > 0:
            self._policy.respawns_left -= 1
            actions.append(StartWorkers(1, f"local worker {e.pid} exited ({_exit_text(e.code)})"))

    def _on_tick(self, e: Tick, actions: list[Action]) -> None:
        for worker, info in self._workers.items():
            if not info.is_expired and e.now - info.heard_at > self._policy.lease_s:
                info.is_expired = True
                actions.append(LoseWorker(worker, e.now - info.heard_at))
        self._warn_of_stuck_tasks(e.now, actions)
        self._fail_without_workers(e.now, actions)

    def _warn_of_stuck_tasks(self, now: float, actions: list[Action]) -> None:
        """Say once of a task that has run STUCK_AFTER times its phase's median (and a minute)."""
        if self.is_finished:
            return
        finished = self._durations[TaskKind(self.phase.value)]
        if not finished:
            return
        stuck_after = max(STUCK_MIN_S, STUCK_AFTER * statistics.median(finished))
        for task_id, started in self._started.items():
            if task_id not in self._stuck_warned and task_id in self._running and now - started > stuck_after:
                self._stuck_warned.add(task_id)
                actions.append(Warn(f"{task_id[0]} task {task_id[1]} has run for {now - started:.0f} s, over "
                                    f"{STUCK_AFTER:g} times the median of its phase ({statistics.median(finished):.1f} "
                                    "s); it may be stuck (see its worker's stack with py-spy dump)"))

    def _fail_without_workers(self, now: float, actions: list[Action]) -> None:
        """A job whose own workers are all gone, with no replacement left to start, fails in
        bounded time instead of waiting forever (clients of `octo server` come by hand: no limit)."""
        if self._workers:
            self._last_worker_at = now
            return
        if (self.is_finished or self._is_halted or not self._policy.launches_workers
                or self._policy.respawns_left > 0 or self._last_worker_at is None):
            return
        if now - self._last_worker_at > self._policy.no_workers_timeout_s:
            self._fail(f"no worker has been connected for {self._policy.no_workers_timeout_s:g} s and no "
                       "replacement may be started (every local worker was replaced "
                       f"{MAX_RESPAWNS_PER_WORKER} times); see the workers' errors above", actions)

    def _on_abort(self, e: Abort, actions: list[Action]) -> None:
        self._fail(e.reason, actions)

    def _on_halt(self, e: Halt, actions: list[Action]) -> None:
        self._is_halted = True

    # -- policy ---------------------------------------------------------------------------

    def _count_failure(self, task_id: TaskId, message: str, error: str, is_contract_error: bool,
                       actions: list[Action]) -> None:
        """One more failed attempt of `task_id`: it runs again, or (at max_attempts, or a
        contract error, which no retry fixes) the job fails."""
        failures = self._failures.get(task_id, 0) + 1
        self._failures[task_id] = failures
        is_final = is_contract_error or failures >= self._policy.max_attempts
        actions.append(RecordFailure(*task_id, message, error, failures, self._policy.max_attempts, is_final))
        if is_final:
            self._fail(error, actions)

    def _count_crash(self, pid: int, code: int, actions: list[Action]) -> None:
        """A lost local worker's process exited: a crash while it ran an attempt counts, unless
        the task is done by now (then the user is only told)."""
        held = self._lost_by_pid.pop(pid, None)
        if held is None or self._is_halted:  # halted: the coordinator itself stopped it
            return
        how = "exited (exit code 0)" if code == 0 else f"died ({_exit_text(code)})"  # os._exit(0) in mapfn, say
        message = (f"worker process {pid} {how} while running {held.kind} task {held.task} "
                   f"(attempt {held.attempt} of {self._policy.max_attempts})")
        if self.is_finished or (held.kind, held.task) in self._done:
            actions.append(Warn(f"{message}; the task is done by now, so it does not count"))
        else:
            self._count_failure((held.kind, held.task), message, message, False, actions)

    def _dispatch(self, now: float, actions: list[Action]) -> None:
        """Give idle workers pending tasks, then backup attempts of stragglers."""
        while self._idle:
            if self._pending:
                task_id = self._pending.popleft()
                self._started[task_id] = now
                actions.append(self._start(task_id, self._idle.pop(0), is_backup=False))
                continue
            straggler = self._straggler(self._idle[0], now)
            if straggler is None:
                return
            actions.append(self._start(straggler, self._idle.pop(0), is_backup=True))

    def _start(self, task_id: TaskId, worker: Worker, *, is_backup: bool) -> Assign:
        attempt = self._attempts.get(task_id, 0) + 1
        self._attempts[task_id] = attempt
        self._running.setdefault(task_id, {})[attempt] = worker
        return Assign(worker, task_id[0], task_id[1], attempt, is_backup)

    def _straggler(self, worker: Worker, now: float) -> TaskId | None:
        kind = TaskKind(self.phase.value)
        finished = self._durations[kind]
        if not self._policy.backup_tasks or not finished:
            return None
        if self.done_count(kind) < BACKUP_AFTER_DONE * self.totals[kind]:
            return None
        slow_after = BACKUP_SLOWER_THAN * statistics.median(finished)
        candidates = [(self._started[t], t) for t, attempts in self._running.items()
                      if t[0] == kind and len(attempts) == 1 and worker not in attempts.values()
                      and now - self._started[t] > slow_after]
        return min(candidates)[1] if candidates else None

    def _drop_attempt(self, task_id: TaskId, attempt: int, *, front: bool) -> None:
        attempts = self._running[task_id]
        del attempts[attempt]
        if not attempts:  # no other attempt carries on: the task waits for a worker again
            del self._running[task_id]
            self._started.pop(task_id, None)
            if self.phase not in (Phase.DONE, Phase.FAILED):
                (self._pending.appendleft if front else self._pending.append)(task_id)

    def _fail(self, reason: str, actions: list[Action]) -> None:
        if not self.is_finished:
            self.failure = reason
            self._pending.clear()
            self._enter(Phase.FAILED, actions)

    def _enter(self, phase: Phase, actions: list[Action]) -> None:
        self.phase = phase
        actions.append(EnterPhase(phase, self.failure if phase is Phase.FAILED else None))
        if phase in (Phase.MAP, Phase.REDUCE):
            kind = TaskKind(phase.value)
            self._pending = deque((kind, t) for t in range(self.totals[kind]) if (kind, t) not in self._done)
            if not self._pending and not any(k == kind for k, _ in self._running):
                self._enter(Phase.REDUCE if phase is Phase.MAP else Phase.DONE, actions)
        else:
            self._idle.clear()  # the server says goodbye to every worker as it stops

    # -- queries --------------------------------------------------------------------------

    @property
    def is_finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)

    def is_current(self, kind: str, task: int, attempt: int) -> bool:
        """True if (task, attempt) is a running attempt whose result would count."""
        return attempt in self._running.get((kind, task), {})  # type: ignore[arg-type]  # "map" == TaskKind.MAP

    def holder(self, kind: str, task: int, attempt: int) -> Worker | None:
        """The worker running (task, attempt) if it is current, else None."""
        return self._running.get((kind, task), {}).get(attempt)  # type: ignore[arg-type]

    def done_count(self, kind: str) -> int:
        return self._done_counts[TaskKind(kind)]

    def stuck_tasks(self, now: float) -> list[tuple[TaskKind, int, float]]:
        """(kind, task, seconds running) of the tasks reported stuck that still run."""
        return [(kind, task, now - self._started[(kind, task)]) for kind, task in sorted(self._stuck_warned)
                if (kind, task) in self._running and (kind, task) in self._started]

    def running(self) -> list[tuple[Assign, Worker]]:
        """Every current attempt and its worker."""
        return [(Assign(w, k, t, a), w) for (k, t), attempts in self._running.items() for a, w in attempts.items()]

    def check_invariants(self) -> None:
        pending, running, committing = set(self._pending), set(self._running), self._committing
        assert len(pending) == len(self._pending), "a task is queued twice"
        assert not (pending & running) and not (pending & self._done) and not (running & self._done)
        assert not (committing & (pending | running | self._done))
        assert all(self._running.values())
        busy = {w for attempts in self._running.values() for w in attempts.values()}
        assert not any(w in busy for w in self._idle), "an idle worker holds an attempt"


_NOTHING: list[Action] = []  # what a Heard returns: shared, so a message costs no new list


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


_HANDLERS: dict[type, Callable[[Scheduler, Any, list[Action]], None]] = {
    WorkerJoined: Scheduler._on_worker_joined,
    WorkerReady: Scheduler._on_worker_ready,
    AttemptFinished: Scheduler._on_attempt_finished,
    AttemptCommitted: Scheduler._on_attempt_committed,
    AttemptFailed: Scheduler._on_attempt_failed,
    WorkerLost: Scheduler._on_worker_lost,
    WorkerExited: Scheduler._on_worker_exited,
    Tick: Scheduler._on_tick,
    Abort: Scheduler._on_abort,
    Halt: Scheduler._on_halt,
}

"""The scheduler core, without I/O: feed it events, check the actions it returns.

Time is an argument (every event carries `now`), so leases and backups are
tested instantly, as with trio's MockClock.  The property tests at the end
drive random event sequences, as a crowd of flaky workers would, and check
the invariants after every event and the outcome at the end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from octostore.coordinator.events import (
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
    Tick,
    Warn,
    WorkerExited,
    WorkerJoined,
    WorkerLost,
    WorkerReady,
)
from octostore.coordinator.scheduler import MAX_RESPAWNS_PER_WORKER, Scheduler
from octostore.coordinator.submit import _plan_map_tasks
from octostore.tasks import TaskKind

MAP, REDUCE = TaskKind.MAP, TaskKind.REDUCE


class FakeWorker:
    """A worker handle, as the server's WorkerConn is to the scheduler: compared by identity."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __repr__(self) -> str:
        return f"w{self.pid}"


def new(map_tasks: int, reduce_tasks: int, **options: Any) -> Scheduler:
    return Scheduler(map_tasks, reduce_tasks, **{"max_attempts": 4, "lease_s": 10.0, **options})


def join(s: Scheduler, count: int, now: float = 0.0) -> list[FakeWorker]:
    workers = [FakeWorker(100 + i) for i in range(count)]
    for w in workers:
        assert s.handle(WorkerJoined(w, w.pid, now)) == []
    return workers


def of(actions: list[Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def ready(s: Scheduler, w: FakeWorker, now: float = 0.0) -> Assign | None:
    assigned = of(s.handle(WorkerReady(w, now)), Assign)
    assert len(assigned) <= 1
    return assigned[0] if assigned else None


def finish(s: Scheduler, a: Assign, now: float = 0.0) -> list[Action]:
    """The attempt reports TaskDone and its commit lands: every action of both events."""
    actions = s.handle(AttemptFinished(a.kind, a.task, a.attempt, now))
    assert Commit(a.kind, a.task, a.attempt) in actions
    return actions + s.handle(AttemptCommitted(a.kind, a.task, a.attempt, True, now))


def failed(kind: TaskKind, task: int, attempt: int, *, contract: bool = False) -> AttemptFailed:
    return AttemptFailed(kind, task, attempt, "mapfn raised", "mapfn raised\nTraceback ...", contract, 0.0)


# -- phases and hand-out ------------------------------------------------------------------

def test_map_then_reduce_then_done_first_come_first_served() -> None:
    s = new(3, 2)
    (w,) = join(s, 1)
    tasks = []
    for _ in range(3):
        a = ready(s, w)
        assert a is not None
        tasks.append(a.task)
        actions = finish(s, a)
    assert tasks == [0, 1, 2]
    assert EnterPhase(Phase.REDUCE) in actions
    a = ready(s, w)
    assert (a.kind, a.task, a.attempt) == (REDUCE, 0, 1)
    finish(s, a)
    b = ready(s, w)
    assert (b.kind, b.task) == (REDUCE, 1)
    assert of(finish(s, b), EnterPhase) == [EnterPhase(Phase.DONE)]
    assert s.is_finished
    assert s.handle(WorkerReady(w, 1.0)) == [Dismiss(w)]


def test_a_phase_is_entered_only_once_its_last_commit_is_durable() -> None:
    s = new(1, 1)
    (w,) = join(s, 1)
    a = ready(s, w)
    actions = s.handle(AttemptFinished(MAP, 0, a.attempt, 1.0))
    assert actions == [Commit(MAP, 0, a.attempt)] and s.phase is Phase.MAP
    assert s.handle(AttemptCommitted(MAP, 0, a.attempt, True, 1.0)) == [EnterPhase(Phase.REDUCE)]


def test_no_map_tasks_goes_straight_to_reduce_and_done_tasks_are_not_handed_out_again() -> None:
    assert new(0, 2).phase is Phase.REDUCE
    assert new(2, 1, done=[(MAP, 0), (MAP, 1)]).phase is Phase.REDUCE
    s = new(3, 1, done=[(MAP, 0), (MAP, 2)])
    workers = join(s, 2)
    assert ready(s, workers[0]).task == 1
    assert ready(s, workers[1]) is None  # nothing else to do in this phase


def test_idle_workers_get_the_next_phase_s_tasks_as_it_starts() -> None:
    s = new(1, 2)
    w1, w2 = join(s, 2)
    a = ready(s, w1)
    assert ready(s, w2) is None  # idle: no map task left
    s.handle(AttemptFinished(MAP, 0, a.attempt, 1.0))
    actions = s.handle(AttemptCommitted(MAP, 0, a.attempt, True, 1.0))
    assert actions == [EnterPhase(Phase.REDUCE), Assign(w2, REDUCE, 0, 1)]


def test_only_the_current_attempt_counts() -> None:
    s = new(1, 1)
    w1, w2 = join(s, 2)
    first = ready(s, w1)
    assert s.holder(MAP, 0, first.attempt) is w1
    assert s.handle(WorkerLost(w1, 1.0)) == [Discard(MAP, 0, first.attempt, DiscardReason.WORKER_LOST, w1)]
    second = ready(s, w2)
    assert second.attempt == first.attempt + 1
    assert not s.is_current(MAP, 0, first.attempt)  # the lost worker's late result is stale
    assert s.handle(AttemptFinished(MAP, 0, first.attempt, 2.0)) == []
    assert s.holder(MAP, 0, second.attempt) is w2
    assert s.holder("map", 0, second.attempt) is w2  # the wire's text finds the same task


# -- failures -----------------------------------------------------------------------------

def test_a_failed_attempt_is_retried_until_max_attempts_then_fails_the_job() -> None:
    s = new(1, 1, max_attempts=3)
    (w,) = join(s, 1)
    for attempt in (1, 2):
        a = ready(s, w)
        assert a.attempt == attempt
        actions = s.handle(failed(MAP, 0, attempt))
        assert actions == [Discard(MAP, 0, attempt, DiscardReason.FAILED),
                           RecordFailure(MAP, 0, "mapfn raised", "mapfn raised\nTraceback ...", attempt, 3, False)]
    a = ready(s, w)
    actions = s.handle(failed(MAP, 0, 3))
    assert of(actions, RecordFailure)[0].is_final
    assert of(actions, EnterPhase) == [EnterPhase(Phase.FAILED, "mapfn raised\nTraceback ...")]
    assert s.failure == "mapfn raised\nTraceback ..." and ready(s, w) is None


def test_a_contract_error_fails_the_job_at_once() -> None:
    s = new(2, 1)
    (w,) = join(s, 1)
    a = ready(s, w)
    actions = s.handle(failed(MAP, a.task, a.attempt, contract=True))
    assert of(actions, RecordFailure)[0].is_final and s.phase is Phase.FAILED


def test_failures_go_on_counting_after_a_resume() -> None:
    s = new(1, 1, max_attempts=3, failures={(MAP, 0): 2})
    (w,) = join(s, 1)
    a = ready(s, w)
    assert a.attempt == 3  # attempt numbers go on where they stopped
    assert of(s.handle(failed(MAP, 0, 3)), RecordFailure)[0].is_final


def test_a_stale_failure_is_ignored() -> None:
    s = new(1, 1)
    w1, w2 = join(s, 2)
    a = ready(s, w1)
    s.handle(WorkerLost(w1, 1.0))
    b = ready(s, w2)
    assert s.handle(failed(MAP, 0, a.attempt, contract=True)) == []
    assert s.phase is Phase.MAP and s.is_current(MAP, 0, b.attempt)


def test_abort_fails_the_job_and_halt_stops_handing_out_work() -> None:
    s = new(2, 1)
    (w,) = join(s, 1)
    assert s.handle(Abort("the state store could not commit", 0.0)) == [
        EnterPhase(Phase.FAILED, "the state store could not commit")]
    h = new(2, 1)
    (w,) = join(h, 1)
    assert h.handle(Halt(0.0)) == []
    assert ready(h, w) is None and h.phase is Phase.MAP  # resumable: nothing failed


# -- a worker that dies mid-task ------------------------------------------------------------

def test_a_worker_killed_mid_task_fails_its_attempt_and_is_replaced() -> None:
    s = new(2, 1, local_workers=2)
    w1, w2 = join(s, 2)
    a = ready(s, w1)
    lost = s.handle(WorkerLost(w1, 1.0))  # its connection ended: the task is first in line again
    assert lost == [Discard(MAP, a.task, a.attempt, DiscardReason.WORKER_LOST, w1)]
    assert ready(s, w2).task == a.task
    actions = s.handle(WorkerExited(w1.pid, -9, 1.2))  # then the pool reaped it: SIGKILL
    record = of(actions, RecordFailure)[0]
    assert record.message == f"worker process {w1.pid} died (signal SIGKILL) while running map task 0 (attempt 1 of 4)"
    assert not record.is_final
    assert of(actions, StartWorkers) == [StartWorkers(1, f"local worker {w1.pid} exited (signal SIGKILL)")]


def test_a_worker_reaped_before_its_connection_ends_still_counts() -> None:
    s = new(1, 1, local_workers=1)
    (w,) = join(s, 1)
    a = ready(s, w)
    assert of(s.handle(WorkerExited(w.pid, 3, 1.0)), RecordFailure) == []  # its EOF is not read yet
    actions = s.handle(WorkerLost(w, 1.1))
    assert of(actions, RecordFailure)[0].message.startswith(f"worker process {w.pid} died (exit code 3) while running map task {a.task}")


def test_a_crash_after_the_task_was_redone_is_only_reported() -> None:
    s = new(2, 1, local_workers=2)
    w1, w2 = join(s, 2)
    a = ready(s, w1)
    s.handle(WorkerLost(w1, 1.0))
    finish(s, ready(s, w2), now=1.1)
    actions = s.handle(WorkerExited(w1.pid, 3, 1.2))
    assert of(actions, RecordFailure) == []
    assert of(actions, Warn) == [Warn(f"worker process {w1.pid} died (exit code 3) while running map task {a.task} "
                                      "(attempt 1 of 4); the task is done by now, so it does not count")]


def test_an_idle_worker_s_death_is_not_a_task_failure() -> None:
    s = new(1, 1, local_workers=1)
    (w,) = join(s, 1)
    s.handle(WorkerLost(w, 1.0))  # held nothing
    assert of(s.handle(WorkerExited(w.pid, -9, 1.1)), RecordFailure) == []


def test_a_worker_that_exits_cleanly_mid_task_fails_its_attempt_too() -> None:
    """os._exit(0) inside mapfn: not counting it restarted workers until their limit, then waited forever."""
    s = new(1, 1, max_attempts=2, local_workers=1)
    outcome: list[Action] = []
    for i in range(2):
        w = FakeWorker(300 + i)
        s.handle(WorkerJoined(w, w.pid, 0.0))
        a = ready(s, w)
        s.handle(WorkerLost(w, 1.0))
        outcome = s.handle(WorkerExited(w.pid, 0, 1.0))
        assert of(outcome, RecordFailure)[0].message == (
            f"worker process {w.pid} exited (exit code 0) while running map task 0 (attempt {a.attempt} of 2)")
    assert s.phase is Phase.FAILED


def test_a_worker_dropped_for_what_it_sent_fails_its_attempt_wherever_it_ran() -> None:
    s = new(1, 1)
    (w,) = join(s, 1)
    a = ready(s, w)
    actions = s.handle(WorkerLost(w, 1.0, fault="worker h:1 was dropped (peer announced a 300000000-byte frame)"))
    assert of(actions, RecordFailure)[0].message == (
        "worker h:1 was dropped (peer announced a 300000000-byte frame) while running map task 0 (attempt 1 of 4)")
    assert of(s.handle(WorkerExited(w.pid, 0, 1.1)), RecordFailure) == []  # counted once, not again at exit
    assert a is not None


def test_a_stopped_job_does_not_count_the_exits_of_the_workers_it_stopped() -> None:
    s = new(1, 1, local_workers=1)
    (w,) = join(s, 1)
    ready(s, w)
    s.handle(Halt(1.0))  # octo cancel
    s.handle(WorkerLost(w, 1.1))
    assert of(s.handle(WorkerExited(w.pid, -15, 1.2)), RecordFailure) == []


def test_a_job_whose_workers_are_all_gone_for_good_fails_in_bounded_time() -> None:
    s = new(1, 1, local_workers=1, no_workers_timeout_s=30.0)
    (w,) = join(s, 1)
    s.handle(Tick(1.0))
    s.handle(WorkerLost(w, 2.0))
    for _ in range(MAX_RESPAWNS_PER_WORKER):  # every replacement starts and dies at once
        assert of(s.handle(WorkerExited(-1, 1, 2.0)), StartWorkers)
    assert of(s.handle(WorkerExited(-1, 1, 2.0)), StartWorkers) == []  # none left to start
    assert s.handle(Tick(31.5)) == []  # 29.5 s without a worker
    (failed_,) = of(s.handle(Tick(32.5)), EnterPhase)
    assert failed_.phase is Phase.FAILED and failed_.reason is not None
    assert failed_.reason.startswith("no worker has been connected for 30 s and no replacement may be started")


def test_octo_server_waits_for_clients_however_long() -> None:
    s = new(1, 1, local_workers=0, no_workers_timeout_s=30.0)  # workers come by hand
    assert s.handle(Tick(10_000.0)) == [] and s.phase is Phase.MAP


def test_a_task_far_slower_than_its_peers_is_reported_once() -> None:
    s = new(3, 1)
    workers = join(s, 3)
    assigned = [ready(s, w, now=0.0) for w in workers]
    finish(s, assigned[0], now=2.0)
    finish(s, assigned[1], now=2.0)
    assert of(s.handle(Tick(59.0)), Warn) == []  # 29x the median, but not yet a minute
    (warning,) = of(s.handle(Tick(61.0)), Warn)
    assert warning.message.startswith("map task 2 has run for 61 s, over 10 times the median of its phase (2.0 s)")
    assert of(s.handle(Tick(120.0)), Warn) == []  # said once
    assert s.stuck_tasks(120.0) == [(MAP, 2, 120.0)]  # for octo status, while it runs


def test_a_task_that_keeps_killing_its_workers_fails_the_job() -> None:
    s = new(1, 1, max_attempts=2, local_workers=1)
    outcome: list[Action] = []
    for i in range(2):
        (w,) = [FakeWorker(200 + i)]
        s.handle(WorkerJoined(w, w.pid, 0.0))
        ready(s, w)
        s.handle(WorkerLost(w, 1.0))
        outcome = s.handle(WorkerExited(w.pid, -11, 1.0))
    assert s.phase is Phase.FAILED and "signal SIGSEGV" in (s.failure or "")
    assert of(outcome, StartWorkers) == []  # the job is over: nothing to replace


def test_replacements_stop_at_their_limit_and_after_a_halt() -> None:
    s = new(1, 1, local_workers=1)
    starts = [of(s.handle(WorkerExited(-1, 0, 0.0)), StartWorkers) for _ in range(MAX_RESPAWNS_PER_WORKER + 3)]
    assert sum(len(a) for a in starts) == MAX_RESPAWNS_PER_WORKER
    h = new(1, 1, local_workers=1)
    h.handle(Halt(0.0))
    assert of(h.handle(WorkerExited(-1, 1, 0.0)), StartWorkers) == []


def test_a_worker_silent_past_its_lease_is_lost_once() -> None:
    s = new(1, 1, lease_s=2.0)
    w1, w2 = join(s, 2, now=0.0)
    assert s.handle(Tick(1.9)) == []
    s.handle(Heard(w2, 1.5))
    assert s.handle(Tick(2.5)) == [LoseWorker(w1, 2.5)]
    assert s.handle(Tick(3.0)) == []  # said once; its connection is closing
    assert s.handle(Tick(3.6)) == [LoseWorker(w2, 3.6 - 1.5)]


# -- backups and commits --------------------------------------------------------------------

def finish_all_but_one(s: Scheduler, workers: list[FakeWorker], durations: list[float]) -> Assign:
    """Run 4 map tasks: three finish after `durations`, the last stays running (the straggler)."""
    assigned = [ready(s, w, now=0.0) for w in workers]
    for a, d in zip(assigned[:3], durations):
        finish(s, a, now=d)
    return assigned[3]


def test_a_straggler_gets_a_backup_attempt_and_the_first_to_finish_wins() -> None:
    s = new(4, 1)
    workers = join(s, 4)
    straggler = finish_all_but_one(s, workers, [1.0, 1.0, 1.0])
    assert ready(s, workers[0], now=1.2) is None  # not yet 1.5x the median (1.0 s); it waits idle
    assert s.handle(Tick(1.4)) == []
    (backup,) = of(s.handle(Tick(2.0)), Assign)  # time passes: the idle worker gets the backup
    assert backup == Assign(workers[0], MAP, straggler.task, straggler.attempt + 1, is_backup=True)
    assert ready(s, workers[1], now=2.0) is None  # one backup per task
    actions = finish(s, backup, now=2.5)
    assert Discard(MAP, straggler.task, straggler.attempt, DiscardReason.BEATEN) in actions
    assert not s.is_current(MAP, straggler.task, straggler.attempt)  # the slow original lost
    assert s.phase is Phase.REDUCE
    s.check_invariants()


def test_no_backup_before_most_of_the_phase_is_done_or_when_disabled() -> None:
    s = new(8, 1)
    workers = join(s, 9)
    assigned = [ready(s, w) for w in workers[:8]]
    finish(s, assigned[0], now=1.0)
    assert ready(s, workers[8], now=100.0) is None  # 1 of 8 done: too early
    off = new(4, 1, backup_tasks=False)
    workers = join(off, 5)
    finish_all_but_one(off, workers[:4], [1.0, 1.0, 1.0])
    assert ready(off, workers[4], now=100.0) is None


def test_a_failed_backup_leaves_the_original_running() -> None:
    s = new(4, 1)
    workers = join(s, 4)
    straggler = finish_all_but_one(s, workers, [1.0, 1.0, 1.0])
    backup = ready(s, workers[0], now=5.0)
    s.handle(failed(MAP, backup.task, backup.attempt))
    assert s.is_current(MAP, straggler.task, straggler.attempt)
    assert ready(s, workers[1], now=5.0) == Assign(workers[1], MAP, straggler.task, backup.attempt + 1, is_backup=True)
    s.check_invariants()


def test_a_committing_task_is_not_requeued_when_its_worker_is_lost() -> None:
    s = new(2, 1)
    w1, w2 = join(s, 2)
    a = ready(s, w1)
    assert s.handle(AttemptFinished(MAP, a.task, a.attempt, 1.0)) == [Commit(MAP, a.task, a.attempt)]
    assert s.handle(WorkerLost(w1, 1.0)) == [] and not s.is_current(MAP, a.task, a.attempt)
    b = ready(s, w2)
    assert b.task != a.task and s.handle(Tick(5.0)) == []  # no backup of a committing task
    s.handle(AttemptCommitted(MAP, a.task, a.attempt, True, 2.0))
    s.handle(AttemptFinished(MAP, b.task, b.attempt, 2.0))
    assert s.phase is Phase.MAP  # b's commit is not durable yet
    s.handle(AttemptCommitted(MAP, b.task, b.attempt, True, 2.0))
    assert s.phase is Phase.REDUCE
    s.check_invariants()


def test_a_refused_commit_discards_its_output_and_the_task_stays_done() -> None:
    s = new(1, 1)
    (w,) = join(s, 1)
    a = ready(s, w)
    s.handle(AttemptFinished(MAP, 0, a.attempt, 1.0))
    actions = s.handle(AttemptCommitted(MAP, 0, a.attempt, False, 1.0))  # DONE on disk already
    assert actions[0] == Discard(MAP, 0, a.attempt, DiscardReason.ALREADY_DONE)
    assert s.phase is Phase.REDUCE and s.done_count(MAP) == 1


# -- random event sequences -----------------------------------------------------------------

@dataclass
class Crowd:
    """Workers driving a scheduler at random, keeping their own record to check it against."""

    s: Scheduler
    rng: random.Random
    workers: list[FakeWorker] = field(default_factory=list)
    next_pid: int = 1000
    now: float = 0.0
    holding: dict[Any, Assign] = field(default_factory=dict)  # worker -> the attempt it runs
    committing: list[Commit] = field(default_factory=list)
    commits: list[tuple[TaskKind, int]] = field(default_factory=list)
    lost_pids: list[int] = field(default_factory=list)
    failures: dict[tuple[TaskKind, int], int] = field(default_factory=dict)
    last_attempt: dict[tuple[TaskKind, int], int] = field(default_factory=dict)

    def send(self, event: Event) -> None:
        for action in self.s.handle(event):
            self.apply(action)
        self.s.check_invariants()

    def apply(self, action: Action) -> None:
        if isinstance(action, Assign):
            assert action.worker not in self.holding, "a worker got two attempts at once"
            task_id = (action.kind, action.task)
            assert action.attempt > self.last_attempt.get(task_id, 0), "attempt numbers must rise"
            self.last_attempt[task_id] = action.attempt
            self.holding[action.worker] = action
        elif isinstance(action, Commit):
            self.committing.append(action)
            self.commits.append((action.kind, action.task))
        elif isinstance(action, RecordFailure):
            task_id = (action.kind, action.task)
            self.failures[task_id] = self.failures.get(task_id, 0) + 1
            assert action.failures == self.failures[task_id] <= action.max_attempts
        elif isinstance(action, StartWorkers):
            for _ in range(action.count):
                self.join()

    def join(self) -> None:
        w = FakeWorker(self.next_pid)
        self.next_pid += 1
        self.workers.append(w)
        self.send(WorkerJoined(w, w.pid, self.now))
        self.send(WorkerReady(w, self.now))

    def step(self, choice: int) -> None:
        self.now += self.rng.random()
        held = [(w, a) for w, a in self.holding.items() if self.s.is_current(a.kind, a.task, a.attempt)]
        if choice == 0 and held:  # an attempt finishes
            w, a = self.rng.choice(held)
            del self.holding[w]
            self.send(AttemptFinished(a.kind, a.task, a.attempt, self.now))
            self.send(WorkerReady(w, self.now))
        elif choice == 1 and self.committing:  # a group commit lands
            c = self.committing.pop(self.rng.randrange(len(self.committing)))
            self.send(AttemptCommitted(c.kind, c.task, c.attempt, True, self.now))
        elif choice == 2 and held:  # user code raises
            w, a = self.rng.choice(held)
            del self.holding[w]
            self.send(AttemptFailed(a.kind, a.task, a.attempt, "boom", "boom", False, self.now))
            self.send(WorkerReady(w, self.now))
        elif choice == 3 and self.workers:  # a worker dies (its process is reaped later)
            w = self.workers.pop(self.rng.randrange(len(self.workers)))
            self.holding.pop(w, None)
            self.send(WorkerLost(w, self.now))
            self.lost_pids.append(w.pid)
        elif choice == 4 and self.lost_pids:
            self.send(WorkerExited(self.lost_pids.pop(0), self.rng.choice([0, -9, 1]), self.now))
        else:
            self.send(Tick(self.now))

    def finish(self) -> None:
        """Every worker behaves from now on: the job must end, and end DONE."""
        for pid in self.lost_pids:
            self.send(WorkerExited(pid, 0, self.now))
        if not self.workers:
            self.join()
        for _ in range(10_000):
            if self.s.is_finished:
                return
            self.now += 1.0
            if self.committing:
                c = self.committing.pop(0)
                self.send(AttemptCommitted(c.kind, c.task, c.attempt, True, self.now))
                continue
            for w, a in list(self.holding.items()):
                if self.s.is_current(a.kind, a.task, a.attempt):
                    del self.holding[w]
                    self.send(AttemptFinished(a.kind, a.task, a.attempt, self.now))
                    self.send(WorkerReady(w, self.now))
                    break
            else:
                for w in list(self.holding):  # stale attempts: their workers ask again
                    del self.holding[w]
                    self.send(WorkerReady(w, self.now))
                self.send(Tick(self.now))
        raise AssertionError("the job did not end")


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 12), st.integers(1, 6), st.integers(1, 4), st.integers(2, 6),
       st.lists(st.integers(0, 5), max_size=300), st.integers(0, 2**32))
def test_invariants_hold_under_random_events(map_tasks: int, reduce_tasks: int, workers: int, max_attempts: int,
                                             choices: list[int], seed: int) -> None:
    s = Scheduler(map_tasks, reduce_tasks, max_attempts=max_attempts, lease_s=5.0, local_workers=workers)
    crowd = Crowd(s, random.Random(seed))
    for _ in range(workers):
        crowd.join()
    for choice in choices:
        if s.is_finished:
            break
        crowd.step(choice)
    crowd.finish()
    assert len(crowd.commits) == len(set(crowd.commits)), "a task was committed twice"
    if s.phase is Phase.DONE:
        assert sorted(crowd.commits) == sorted([(MAP, t) for t in range(map_tasks)]
                                               + [(REDUCE, p) for p in range(reduce_tasks)])
        assert all(n < max_attempts for n in crowd.failures.values())
    else:  # FAILED: only because some task used up its attempts
        assert s.phase is Phase.FAILED and max(crowd.failures.values()) == max_attempts


def test_many_random_runs_with_a_fixed_seed_end_done_or_failed_as_they_should() -> None:
    rng = random.Random(5)
    outcomes = set()
    for _ in range(40):
        s = Scheduler(30, 7, max_attempts=4, lease_s=5.0, local_workers=4)
        crowd = Crowd(s, random.Random(rng.random()))
        for _ in range(4):
            crowd.join()
        for _ in range(400):
            if s.is_finished:
                break
            crowd.step(rng.choice([0, 0, 0, 1, 1, 2, 3, 4, 5]))
        crowd.finish()
        outcomes.add(s.phase)
        if s.phase is Phase.DONE:
            assert s.done_count(MAP) == 30 and s.done_count(REDUCE) == 7
    assert Phase.DONE in outcomes  # the sequences are not all doomed: the test would then prove little


def test_map_tasks_shrink_from_first_to_last_and_cover_every_key_once() -> None:
    assert [len(t) for t in _plan_map_tasks(list(range(64)), 8)] == [12, 11, 10, 8, 8, 6, 5, 4]
    assert _plan_map_tasks([], 0) == [] and _plan_map_tasks(["a"], 1) == [["a"]]
    rng = random.Random(2)
    for _ in range(300):
        count = rng.randint(1, 40)
        keys = list(range(rng.randint(count, 5000)))
        tasks = _plan_map_tasks(keys, count)
        assert len(tasks) == count and [k for t in tasks for k in t] == keys
        sizes = [len(t) for t in tasks]
        assert min(sizes) >= 1
        assert all(a >= b - 1 for a, b in zip(sizes, sizes[1:]))  # never growing, but for rounding
        if len(keys) >= 20 * count >= 40:
            mean = len(keys) / count
            assert 1.3 * mean <= sizes[0] <= 1.6 * mean and 0.4 * mean <= sizes[-1] <= 0.7 * mean

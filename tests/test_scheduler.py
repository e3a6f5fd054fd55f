"""The scheduler core, without I/O: feed events, check what it hands out and which results count."""

from __future__ import annotations

import random

from octostore.coordinator.scheduler import Assignment, Phase, Scheduler
from octostore.coordinator.submit import _plan_map_tasks
from octostore.protocol.messages import MAP, REDUCE


def drain(s: Scheduler, worker: object) -> list[Assignment]:
    out = []
    while (a := s.assign(worker)) is not None:
        out.append(a)
    return out


def test_map_then_reduce_then_done_first_come_first_served() -> None:
    s = Scheduler(3, 2)
    w = object()
    assert [a.task for a in drain(s, w)] == [0, 1, 2]
    assert s.phase is Phase.MAP
    for t in range(3):
        s.task_done(MAP, t, 1)
    assert s.phase is Phase.REDUCE
    reduces = drain(s, w)
    assert [(a.kind, a.task, a.attempt) for a in reduces] == [(REDUCE, 0, 1), (REDUCE, 1, 1)]
    s.task_done(REDUCE, 0, 1)
    s.task_done(REDUCE, 1, 1)
    assert s.phase is Phase.DONE and s.is_finished


def test_no_map_tasks_goes_straight_to_reduce() -> None:
    assert Scheduler(0, 2).phase is Phase.REDUCE


def test_done_tasks_are_not_handed_out_again() -> None:
    s = Scheduler(3, 1, done=[(MAP, 0), (MAP, 2)])
    assert [a.task for a in drain(s, object())] == [1]
    assert Scheduler(2, 1, done=[(MAP, 0), (MAP, 1)]).phase is Phase.REDUCE


def test_only_the_current_attempt_counts() -> None:
    s = Scheduler(1, 1)
    w1, w2 = object(), object()
    first = s.assign(w1)
    assert s.is_current(MAP, 0, first.attempt)
    assert s.worker_lost(w1) == [first]
    second = s.assign(w2)
    assert second.attempt == first.attempt + 1
    assert not s.is_current(MAP, 0, first.attempt)  # the lost worker's late result is stale
    assert s.is_current(MAP, 0, second.attempt)


def test_failed_attempt_is_retried_or_fails_the_job() -> None:
    s = Scheduler(1, 1)
    w = object()
    a = s.assign(w)
    s.task_failed(MAP, 0, a.attempt, retry=True, reason="boom")
    b = s.assign(w)
    assert (b.task, b.attempt) == (0, 2)
    s.task_failed(MAP, 0, b.attempt, retry=False, reason="boom for good")
    assert s.phase is Phase.FAILED and s.failure == "boom for good"
    assert s.assign(w) is None


def test_a_stale_failure_is_ignored() -> None:
    s = Scheduler(1, 1)
    w1, w2 = object(), object()
    a = s.assign(w1)
    s.worker_lost(w1)
    b = s.assign(w2)
    s.task_failed(MAP, 0, a.attempt, retry=False, reason="late")
    assert s.phase is Phase.MAP and s.is_current(MAP, 0, b.attempt)


def test_scheduler_invariant_holds_under_random_events() -> None:
    rng = random.Random(5)
    s = Scheduler(30, 7)
    workers = [object() for _ in range(4)]
    running: list[tuple[Assignment, object]] = []
    committing: list[Assignment] = []
    for _ in range(2000):
        if s.is_finished:
            break
        event = rng.random()
        if event < 0.4:
            w = rng.choice(workers)
            a = s.assign(w)
            if a:
                running.append((a, w))
        elif event < 0.6 and running:
            a, w = running.pop(rng.randrange(len(running)))
            if s.is_current(a.kind, a.task, a.attempt):
                s.finished(a.kind, a.task, a.attempt)  # its durable commit begins
                committing.append(a)
        elif event < 0.75 and committing:
            a = committing.pop(rng.randrange(len(committing)))
            s.task_done(a.kind, a.task, a.attempt)
        elif event < 0.9 and running:
            a, w = running.pop(rng.randrange(len(running)))
            s.task_failed(a.kind, a.task, a.attempt, retry=True, reason="x")
        else:
            w = rng.choice(workers)
            s.worker_lost(w)
            running = [(a, ww) for a, ww in running if ww is not w]
        s._check()
    assert s.phase is Phase.DONE
    assert s.done_count(MAP) == 30 and s.done_count(REDUCE) == 7


def finish_all_but_one(s: Scheduler, workers: list[object], durations: list[float]) -> Assignment:
    """Run 4 map tasks: three finish after `durations`, the last stays running (the straggler)."""
    assigned = [s.assign(w, now=0.0) for w in workers]
    for a, d in zip(assigned[:3], durations):
        s.task_done(a.kind, a.task, a.attempt, now=d)
    return assigned[3]


def test_a_straggler_gets_a_backup_attempt_and_the_first_commit_wins() -> None:
    s = Scheduler(4, 1)
    workers = [object() for _ in range(4)]
    straggler = finish_all_but_one(s, workers, [1.0, 1.0, 1.0])
    assert s.assign(workers[0], now=1.2) is None  # not yet 1.5x the median (1.0 s)
    backup = s.assign(workers[0], now=2.0)
    assert backup == Assignment(MAP, straggler.task, straggler.attempt + 1, is_backup=True)
    assert s.assign(workers[1], now=2.0) is None  # one backup per task
    s.task_done(MAP, backup.task, backup.attempt, now=2.5)
    assert not s.is_current(MAP, straggler.task, straggler.attempt)  # the slow original lost
    assert s.phase is Phase.REDUCE
    s._check()


def test_no_backup_before_most_of_the_phase_is_done_or_when_disabled() -> None:
    s = Scheduler(8, 1)
    workers = [object() for _ in range(8)]
    assigned = [s.assign(w) for w in workers]
    s.task_done(MAP, assigned[0].task, 1, now=1.0)
    assert s.assign(workers[0], now=100.0) is None  # 1 of 8 done: too early
    off = Scheduler(4, 1, backup_tasks=False)
    finish_all_but_one(off, [object() for _ in range(4)], [1.0, 1.0, 1.0])
    assert off.assign(object(), now=100.0) is None


def test_a_failed_backup_leaves_the_original_running() -> None:
    s = Scheduler(4, 1)
    workers = [object() for _ in range(4)]
    straggler = finish_all_but_one(s, workers, [1.0, 1.0, 1.0])
    backup = s.assign(workers[0], now=5.0)
    s.task_failed(MAP, backup.task, backup.attempt, retry=True, reason="boom")
    assert s.is_current(MAP, straggler.task, straggler.attempt)
    assert s.assign(workers[1], now=5.0) == Assignment(MAP, straggler.task, backup.attempt + 1, is_backup=True)
    s._check()


def test_a_committing_task_is_not_requeued_when_its_worker_is_lost() -> None:
    s = Scheduler(2, 1)
    w = object()
    a = s.assign(w)
    assert a is not None
    assert s.finished(a.kind, a.task, a.attempt) == []
    assert s.worker_lost(w) == [] and not s.is_current(a.kind, a.task, a.attempt)
    b = s.assign(w)
    assert b is not None and b.task != a.task and s.assign(w) is None  # no backup of a committing task
    s.task_done(a.kind, a.task, a.attempt)
    s.finished(b.kind, b.task, b.attempt)
    assert s.phase is Phase.MAP  # b's commit is not durable yet
    s.task_done(b.kind, b.task, b.attempt)
    assert s.phase is Phase.REDUCE
    s._check()


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

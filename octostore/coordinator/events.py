"""The scheduler's vocabulary: the events it takes and the actions it returns (scheduler.py).

The server (server.py) builds the events from what happens on its sockets, stores and clock,
and carries out the actions; the scheduler decides which actions follow which events.  Nothing
here does anything: these are plain records, and the job's phases.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ..tasks import TaskKind


class Phase(enum.StrEnum):
    MAP = "map"
    REDUCE = "reduce"
    DONE = "done"
    FAILED = "failed"


TaskId = tuple[TaskKind, int]
Worker = Any  # the server's handle for a connection; the scheduler only compares and stores it


# -- events -------------------------------------------------------------------------------
#
# Events and actions are plain slotted dataclasses, never changed once made.  Not frozen: a frozen
# dataclass takes 0.53 us to create against 0.15 us (Python 3.11, its __init__ goes through
# object.__setattr__), and a task makes about nine of them (benchmarks/scheduling.py).

@dataclass(slots=True)
class WorkerJoined:
    worker: Worker
    pid: int  # to match a local process the pool reaps later (WorkerExited)
    now: float


@dataclass(slots=True)
class WorkerReady:
    """The worker holds no attempt and wants one."""

    worker: Worker
    now: float


@dataclass(slots=True)
class Heard:
    """Any message from the worker: its lease runs from `now`."""

    worker: Worker
    now: float


@dataclass(slots=True)
class AttemptFinished:
    """The attempt's holder reported TaskDone (the server checked epoch and holder: fencing)."""

    kind: TaskKind
    task: int
    attempt: int
    now: float


@dataclass(slots=True)
class AttemptCommitted:
    """The durable commit of a finished attempt landed; `committed` is False if the task was already DONE."""

    kind: TaskKind
    task: int
    attempt: int
    committed: bool
    now: float


@dataclass(slots=True)
class AttemptFailed:
    """The attempt's user code raised (`error` holds the traceback); a contract error is never retried."""

    kind: TaskKind
    task: int
    attempt: int
    message: str
    error: str
    is_contract_error: bool
    now: float


@dataclass(slots=True)
class WorkerLost:
    """The worker's connection ended (EOF, a protocol error, or LoseWorker carried out).

    `fault` says why, when the coordinator dropped the worker for what it sent (a frame over
    the limit, a message out of place): then its attempts fail, wherever the worker ran."""

    worker: Worker
    now: float
    fault: str | None = None


@dataclass(slots=True)
class WorkerExited:
    """A local worker process the pool started has exited with `code` (negative: a signal)."""

    pid: int
    code: int
    now: float


@dataclass(slots=True)
class Tick:
    now: float


@dataclass(slots=True)
class Abort:
    """The job cannot go on (a source read raised, the state store cannot commit): it fails."""

    reason: str
    now: float


@dataclass(slots=True)
class Halt:
    """Stop handing out work and starting workers (cancel, disk full); the job stays resumable."""

    now: float


Event = (WorkerJoined | WorkerReady | Heard | AttemptFinished | AttemptCommitted | AttemptFailed
         | WorkerLost | WorkerExited | Tick | Abort | Halt)


# -- actions ------------------------------------------------------------------------------

@dataclass(slots=True)
class Assign:
    """Send the worker this attempt of a task."""

    worker: Worker
    kind: TaskKind
    task: int
    attempt: int
    is_backup: bool = False


@dataclass(slots=True)
class Commit:
    """Queue the attempt's output for the durable group commit; report back with AttemptCommitted."""

    kind: TaskKind
    task: int
    attempt: int


class DiscardReason(enum.StrEnum):
    WORKER_LOST = "its worker was lost"
    BEATEN = "another attempt finished first"
    FAILED = "its user code raised"
    ALREADY_DONE = "the task was already done"


@dataclass(slots=True)
class Discard:
    """Drop whatever the attempt wrote that is not committed; its results no longer count."""

    kind: TaskKind
    task: int
    attempt: int
    why: DiscardReason
    worker: Worker = None  # the worker that ran it, when that is why (WORKER_LOST)


@dataclass(slots=True)
class RecordFailure:
    """Store the failed attempt's error durably; `is_final`: the task is FAILED (and so is the job)."""

    kind: TaskKind
    task: int
    message: str
    error: str
    failures: int  # the task's failures so far, this one included
    max_attempts: int
    is_final: bool


@dataclass(slots=True)
class EnterPhase:
    """The job entered `phase`: report it, store the job state; DONE and FAILED end serving."""

    phase: Phase
    reason: str | None = None  # why it FAILED


@dataclass(slots=True)
class Dismiss:
    """Tell an idle worker the job is over (Shutdown)."""

    worker: Worker


@dataclass(slots=True)
class LoseWorker:
    """The worker was silent past its lease: close its connection (WorkerLost follows)."""

    worker: Worker
    silent_s: float


@dataclass(slots=True)
class StartWorkers:
    """Start `count` local workers (off the event loop); `reason` is for the log."""

    count: int
    reason: str


@dataclass(slots=True)
class Warn:
    """Tell the user something they may act on (a log warning)."""

    message: str


Action = Assign | Commit | Discard | RecordFailure | EnterPhase | Dismiss | LoseWorker | StartWorkers | Warn

"""Read-only views of $OCTO_HOME: the job list for ``octo jobs`` and one job's report for ``octo status``.

This module returns data (``JobSummary``, ``JobStatus``); ``cli/show.py`` turns it
into the text those commands print.

Two sources, read separately, never joined into one truth:

``state/``       the job's state store (LMDB): facts, task states, failure counts
                 and the last error of each task.  Durable, so it answers for a
                 job whose coordinator died as well as for a running one.
``status.json``  a snapshot the *running* coordinator rewrites atomically
                 (write a temporary file, then rename): pid, host, updated_at,
                 workers ``[{"name": str, "task": str | None}]``, bytes_in,
                 bytes_out, and (optional) ``stuck``: the tasks the scheduler
                 reported as maybe stuck.  Missing, unreadable or malformed means "no live
                 view" (None), never an error: the store still answers.

Decisions:

- Each call opens the store read-only and closes it before returning; no cache.
  That is cheap: ``list_jobs`` over 200 jobs of 24 tasks each takes 26 ms (a
  loop of ``StateStore.create_job`` into a temp home, then ``list_jobs``).  LMDB
  readers register in ``lock.mdb`` (``lmdbenv.open_env`` keeps ``lock=True``),
  so this is safe while a coordinator writes, but it does create ``lock.mdb``
  if it is missing: "read-only" means no job data is written.
- LMDB forbids opening one environment twice in a process, so never call this
  for a job whose store the calling process holds open (a coordinator asking
  about its own job).
- The phase is derived from the task records, not from the meta "state": a job
  whose coordinator died keeps its last meta state (MAPPING, REDUCING) forever,
  but its records still say how far it got.
- Liveness is ``kill(pid, 0)`` on the host that wrote the snapshot.  Rejected:
  asking the coordinator over TCP (needs the secret and a protocol message, and
  says nothing once it is dead); live counters in the state store (a synced
  write per message, against state.py's "durable writes per task" rule);
  probing the job's flock (``stores/lock.is_locked``), which is exact but takes
  the lock for a moment, so a coordinator starting then would fail as "already
  running": an inspector must never get in a coordinator's way.
  Known gap: a pid reused by an unrelated process after the coordinator died
  looks running; a zombie (exited, not yet reaped) does too.

Layer: like ``stores`` (2).  Imports only ``stores``, ``home`` and ``errors``;
never ``coordinator``, ``worker``, ``launch``, ``api`` or ``cli``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import lmdb

from .errors import StoreError
from .home import require_job
from .stores.state import JobState, StateStore, TaskRecord, TaskState

log = logging.getLogger(__name__)

DAMAGED = "DAMAGED"
"""The state ``list_jobs`` gives a job folder whose state store cannot be read (never stored: not a JobState)."""

STATUS_FILE = "status.json"
"""Name of the running coordinator's snapshot in the job folder (see the module docstring for its keys)."""

_READ_MAP_SIZE_BYTES = 1 << 20  # LMDB raises a reader's map to the data's size at open, so any size works
_KINDS = ("map", "reduce")
_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "created_at": (int, float), "state": str, "epoch": int, "partitions": int, "map_tasks": int,
}
"""Job facts this module reads, and their types as submit.py writes them."""
_LIVE_TYPES: dict[str, type | tuple[type, ...]] = {
    "pid": int, "host": str, "updated_at": (int, float), "workers": list, "bytes_in": int, "bytes_out": int,
}


# -- vocabulary ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One row of ``octo jobs``: a job's state and how many of its tasks are done."""

    job_id: str  # the job folder's name
    state: str  # a JobState value, or DAMAGED
    started_at: float  # epoch s: meta created_at; for DAMAGED, the mtime of state/data.mdb (else of state/)
    duration_s: float | None  # finished_at - started_at, else now - started_at; None for DAMAGED
    map_done: int
    map_total: int
    reduce_done: int
    reduce_total: int


@dataclass(frozen=True, slots=True)
class JobStatus:
    """Everything ``octo status`` shows about one job."""

    summary: JobSummary
    phase: str  # "map", "reduce" or "final": the first with work left; "done" once the job is DONE
    epoch: int
    partitions: int
    tasks_by_state: dict[str, dict[str, int]]  # "map" / "reduce" -> every TaskState value -> task count
    attempts: int  # failed attempts of user code, summed over all tasks (TaskRecord.failures)
    failures: list[tuple[str, int, int, str]]  # (kind, task, failures, last_error), map first, in task order
    error: str | None  # meta "error": why the job FAILED
    live: dict[str, Any] | None  # status.json as written, or None when missing or unreadable
    is_running: bool  # live's pid is a process on this host (module docstring: pid reuse)
    moved: tuple[int, int] | None = None  # bytes in, out over the job's finished runs (meta), if recorded


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one read of a state store returned."""

    meta: dict[str, Any]
    tasks: dict[str, list[tuple[int, TaskRecord]]]  # kind -> (task, record), in task order


# -- reading the stores -------------------------------------------------------------------


def _read_store(path: Path) -> _Snapshot:
    """Read a job's facts and task records from the state store in `path`, opened read-only.

    Raises StoreError naming `path` when the store is missing, is not LMDB, or holds
    records this version cannot read."""
    try:
        store = StateStore(path, _READ_MAP_SIZE_BYTES, readonly=True)
    except lmdb.Error as e:  # StateStore leaves lmdb's errors unwrapped
        raise _damaged(path, str(e).removeprefix(f"{path}: ")) from None
    try:
        meta = store.meta()
        tasks = {kind: list(store.tasks(kind)) for kind in _KINDS}
    except (lmdb.Error, ValueError, TypeError) as e:  # msgpack and TaskRecord.unpack raise ValueError/TypeError
        raise _damaged(path, f"unreadable record: {e}") from None
    finally:
        store.close()
    _check_snapshot(path, meta, tasks)
    return _Snapshot(meta, tasks)


def _check_snapshot(path: Path, meta: dict[str, Any], tasks: dict[str, list[tuple[int, TaskRecord]]]) -> None:
    for name, types in _META_TYPES.items():
        if not isinstance(meta.get(name), types):
            raise _damaged(path, f"job fact {name!r} is missing or not of type {_type_names(types)}")
    # The meta reads and the task reads are separate transactions, but the task
    # counts never change after create_job, so this holds even mid-commit.
    for kind, fact in (("map", "map_tasks"), ("reduce", "partitions")):
        if len(tasks[kind]) != meta[fact]:
            raise _damaged(path, f"{len(tasks[kind])} {kind} task records, but {fact} is {meta[fact]}")


def _damaged(path: Path, reason: str) -> StoreError:
    return StoreError(f"{path}: state store is damaged ({reason})",
                      f"it cannot be inspected or resumed; if you no longer need the job: rm -rf {path.parent}")


def _type_names(types: type | tuple[type, ...]) -> str:
    return " | ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def _read_live(path: Path) -> dict[str, Any] | None:
    """Return the coordinator's snapshot in `path`, or None if it is missing, unreadable or malformed."""
    try:
        live = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        log.debug("%s: unreadable (%s); showing the job without it", path, e)
        return None
    if not _is_live_shape(live):
        log.debug("%s: not a coordinator status snapshot; showing the job without it", path)
        return None
    return live


def _is_live_shape(live: object) -> TypeGuard[dict[str, Any]]:
    if not isinstance(live, dict):
        return False
    for name, types in _LIVE_TYPES.items():
        if not isinstance(live.get(name), types) or isinstance(live.get(name), bool):
            return False
    stuck = live.get("stuck", [])
    if not isinstance(stuck, list) or not all(isinstance(task, str) for task in stuck):
        return False
    return all(isinstance(w, dict) and isinstance(w.get("name"), str) and isinstance(w.get("task"), (str, type(None)))
               for w in live["workers"])


def _is_running(live: dict[str, Any]) -> bool:
    """Return True if the process that wrote `live` is alive on this host (False for other hosts)."""
    pid = live["pid"]
    if live["host"] != socket.gethostname() or pid <= 0:  # kill(2): 0 and negative pids name process groups
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # it exists, but belongs to another user
        return True
    return True


# -- summaries ------------------------------------------------------------------------------


def _summarize(job_id: str, snapshot: _Snapshot, now: float) -> JobSummary:
    meta = snapshot.meta
    started = float(meta["created_at"])
    finished = meta.get("finished_at")
    end = float(finished) if isinstance(finished, (int, float)) else now
    done = {kind: sum(r.state is TaskState.DONE for _, r in snapshot.tasks[kind]) for kind in _KINDS}
    return JobSummary(job_id, meta["state"], started, max(end - started, 0.0),  # max: the clock may have stepped back
                      done["map"], len(snapshot.tasks["map"]), done["reduce"], len(snapshot.tasks["reduce"]))


def _summarize_damaged(job_id: str, state_dir: Path) -> JobSummary | None:
    """Summarize a job whose store cannot be read; None if its folder is gone (removed while we listed)."""
    data = state_dir / "data.mdb"
    try:
        # data.mdb, not state/: opening the store read-only creates lock.mdb and so moves state/'s mtime.
        started = (data if data.exists() else state_dir).stat().st_mtime
    except FileNotFoundError:
        return None
    return JobSummary(job_id, DAMAGED, started, None, 0, 0, 0, 0)


def _phase(summary: JobSummary) -> str:
    if summary.state == JobState.DONE.value:
        return "done"
    if summary.map_done < summary.map_total:
        return "map"
    if summary.reduce_done < summary.reduce_total:
        return "reduce"
    return "final"


def _count_states(records: Iterable[tuple[int, TaskRecord]]) -> dict[str, int]:
    counts = {state.value: 0 for state in TaskState}
    for _, record in records:
        counts[record.state.value] += 1
    return counts


# -- entry points -----------------------------------------------------------------------------


def list_jobs(home: Path) -> list[JobSummary]:
    """Summarize every job folder under home/jobs that has a state/ folder, oldest first.

    Never raises for one bad job: a store that cannot be read is listed as DAMAGED
    (``job_status`` says why)."""
    jobs_dir = home / "jobs"
    if not jobs_dir.is_dir():
        return []
    now = time.time()
    summaries = []
    for root in jobs_dir.iterdir():
        state_dir = root / "state"
        if not state_dir.is_dir():
            continue
        try:
            summaries.append(_summarize(root.name, _read_store(state_dir), now))
        except StoreError as e:
            log.debug("job %s: %s", root.name, e.message)
            damaged = _summarize_damaged(root.name, state_dir)
            if damaged is not None:
                summaries.append(damaged)
    return sorted(summaries, key=lambda s: (s.started_at, s.job_id))


def job_status(home: Path, job_id: str) -> JobStatus:
    """Report one job from its state store and, if present, its coordinator's status.json.

    Raises StoreError for an unknown job or a damaged store (one line naming the
    store's path), ConfigError for an invalid job id."""
    paths = require_job(home, job_id)
    snapshot = _read_store(paths.state)
    summary = _summarize(job_id, snapshot, time.time())
    records = [(kind, task, record) for kind in _KINDS for task, record in snapshot.tasks[kind]]
    failures = [(kind, task, r.failures, r.last_error) for kind, task, r in records
                if r.failures > 0 or r.state is TaskState.FAILED]
    live = _read_live(paths.live_status)
    error = snapshot.meta.get("error")
    return JobStatus(
        summary=summary,
        phase=_phase(summary),
        epoch=snapshot.meta["epoch"],
        partitions=snapshot.meta["partitions"],
        tasks_by_state={kind: _count_states(snapshot.tasks[kind]) for kind in _KINDS},
        attempts=sum(r.failures for _, _, r in records),
        failures=failures,
        error=str(error) if error is not None else None,
        live=live,
        is_running=live is not None and _is_running(live),
        moved=_moved(snapshot.meta),
    )


def _moved(meta: dict[str, Any]) -> tuple[int, int] | None:
    moved_in, moved_out = meta.get("bytes_in"), meta.get("bytes_out")
    if isinstance(moved_in, int) and isinstance(moved_out, int):
        return moved_in, moved_out
    return None

"""The state store: what a job is, which tasks it has, and which are committed.

One LMDB environment per job, opened with ``sync=True``: a commit returns only
once it is on disk, so an acknowledged task survives ``kill -9`` and power
loss alike.  It holds three databases:

``meta``      job facts (id, job file, partitions, map task count, epoch, state, times)
``manifest``  map task number -> pickled list of the source keys it reads
``tasks``     "m<task>" / "r<task>" -> TaskRecord (state, attempts, committed output)

What is *not* stored: which worker runs what, heartbeats, in-flight attempts.
Those live in the coordinator's memory; after a crash every task that is not
DONE is simply PENDING again (``octo resume``, issue #4).  So a durable write
happens only when a task commits or fails, when the phase changes, and at
submit; that keeps the cost of durability per task, not per message.

The manifest is written at submit, so a resumed job never depends on `source`
iterating in the same order twice.

Invariant: a task's ``output`` is set exactly once, by the commit that moves it
to DONE; later commits of the same task are refused (``commit_task`` returns
False) and the caller discards their segments.  This is the single point at
which a task becomes done (MapReduce's rename-to-commit).
"""

from __future__ import annotations

import enum
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from ..errors import StoreError
from . import lmdbenv
from .outputs import TaskOutput, pack_output, unpack_output


class TaskState(str, enum.Enum):
    PENDING = "PENDING"
    DONE = "DONE"
    FAILED = "FAILED"


class JobState(str, enum.Enum):
    MAPPING = "MAPPING"
    REDUCING = "REDUCING"
    FINALIZING = "FINALIZING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # stopped by `octo cancel`; `octo resume` continues it


@dataclass(slots=True)
class TaskRecord:
    """One task's durable state; `output` is set once it is DONE (stores/outputs.py: where its
    runs or results are, in the shape of the shuffle mode that wrote them)."""

    state: TaskState = TaskState.PENDING
    failures: int = 0  # attempts whose user code raised, or whose worker crashed
    committed_attempt: int = 0
    output: TaskOutput | None = None
    last_error: str = ""

    def pack(self) -> bytes:
        data: bytes = msgpack.packb([self.state.value, self.failures, self.committed_attempt,
                                     pack_output(self.output), self.last_error])
        return data

    @classmethod
    def unpack(cls, data: bytes) -> TaskRecord:
        state, failures, attempt, output, error = msgpack.unpackb(data)
        return cls(TaskState(state), failures, attempt, unpack_output(output), error)


def task_key(kind: str, task: int) -> bytes:
    return f"{kind[0]}{task:010d}".encode()


class StateStore:
    """The durable state of one job (single writer: the coordinator's event loop)."""

    def __init__(self, path: Path, map_size_bytes: int, *, sync: bool = True, readonly: bool = False) -> None:
        if readonly and not (path / "data.mdb").exists():
            raise StoreError(f"{path}: no state store here")
        self.env = lmdbenv.open_env(path, map_size_bytes, sync=sync, max_dbs=4, readonly=readonly)
        self._meta = self.env.open_db(b"meta", create=not readonly)
        self._manifest = self.env.open_db(b"manifest", create=not readonly)
        self._tasks = self.env.open_db(b"tasks", create=not readonly)

    # -- creation -------------------------------------------------------------------------

    def create_job(self, meta: dict[str, Any], manifest: list[list[Any]], partitions: int) -> None:
        """Write the job's facts, its manifest and a PENDING record per task, in one commit."""

        def put(txn: lmdb.Transaction) -> None:
            for name, value in {**meta, "created_at": time.time(), "state": JobState.MAPPING.value}.items():
                txn.put(name.encode(), msgpack.packb(value), db=self._meta)
            for task, keys in enumerate(manifest):
                txn.put(task.to_bytes(8, "big"), pickle.dumps(keys, protocol=5), db=self._manifest)
                txn.put(task_key("map", task), TaskRecord().pack(), db=self._tasks)
            for partition in range(partitions):
                txn.put(task_key("reduce", partition), TaskRecord().pack(), db=self._tasks)

        lmdbenv.write(self.env, put)

    # -- meta -----------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        with self.env.begin(db=self._meta) as txn:
            return {k.decode(): msgpack.unpackb(v) for k, v in txn.cursor()}

    def set_meta(self, **values: Any) -> None:
        def put(txn: lmdb.Transaction) -> None:
            for name, value in values.items():
                txn.put(name.encode(), msgpack.packb(value), db=self._meta)

        lmdbenv.write(self.env, put)

    # -- tasks ----------------------------------------------------------------------------

    def manifest_keys(self, task: int) -> list[Any]:
        """Return the source keys of map task `task` (unpickled: they came from this coordinator)."""
        with self.env.begin(db=self._manifest) as txn:
            data = txn.get(task.to_bytes(8, "big"))
        if data is None:
            raise StoreError(f"map task {task} is missing from the manifest")
        keys: list[Any] = pickle.loads(data)
        return keys

    def task(self, kind: str, task: int) -> TaskRecord:
        with self.env.begin(db=self._tasks) as txn:
            data = txn.get(task_key(kind, task))
        if data is None:
            raise StoreError(f"{kind} task {task} is missing from the state store")
        return TaskRecord.unpack(data)

    def tasks(self, kind: str) -> Iterator[tuple[int, TaskRecord]]:
        """Yield (task, record) for every task of `kind`, in task order."""
        prefix = kind[0].encode()
        with self.env.begin(db=self._tasks) as txn, txn.cursor() as cur:
            if cur.set_range(prefix):
                for key, value in cur:
                    if not key.startswith(prefix):
                        break
                    yield int(key[1:]), TaskRecord.unpack(value)

    def commit_task(self, kind: str, task: int, attempt: int, output: TaskOutput | None) -> bool:
        """Make `output` the task's result; return False if the task was already DONE.
        Idempotent: a repeated commit of a done task changes nothing."""
        return self.commit_tasks([(kind, task, attempt, output)])[0]

    def commit_tasks(self, commits: list[tuple[str, int, int, TaskOutput | None]]) -> list[bool]:
        """commit_task for each (kind, task, attempt, output), all in one transaction (one sync):
        the group commit of coordinator/commits.py."""

        def put(txn: lmdb.Transaction) -> list[bool]:
            committed = []
            for kind, task, attempt, output in commits:
                key = task_key(kind, task)
                record = self._record(txn, key)
                if record.state is TaskState.DONE:
                    committed.append(False)
                    continue
                record.state, record.committed_attempt, record.output = TaskState.DONE, attempt, output
                txn.put(key, record.pack(), db=self._tasks)
                committed.append(True)
            return committed

        return lmdbenv.write(self.env, put)

    def record_failure(self, kind: str, task: int, error: str, *, failed: bool) -> TaskRecord:
        """Count a failed attempt of user code, and make the task FAILED if `failed` (the
        scheduler decides: coordinator/scheduler.py). A DONE task is left as it is."""

        def put(txn: lmdb.Transaction) -> TaskRecord:
            key = task_key(kind, task)
            record = self._record(txn, key)
            if record.state is TaskState.DONE:
                return record
            record.failures += 1
            record.last_error = error
            if failed:
                record.state = TaskState.FAILED
            txn.put(key, record.pack(), db=self._tasks)
            return record

        return lmdbenv.write(self.env, put)

    def _record(self, txn: lmdb.Transaction, key: bytes) -> TaskRecord:
        data = txn.get(key, db=self._tasks)
        if data is None:
            raise StoreError(f"task {key.decode()} is missing from the state store")
        return TaskRecord.unpack(bytes(data))

    def reopen_failed(self) -> int:
        """Make FAILED tasks PENDING with no failures counted; return how many. Idempotent."""

        def put(txn: lmdb.Transaction) -> int:
            reopened = 0
            for key, value in list(txn.cursor(db=self._tasks)):
                record = TaskRecord.unpack(bytes(value))
                if record.state is TaskState.FAILED:
                    record.state, record.failures = TaskState.PENDING, 0
                    txn.put(key, record.pack(), db=self._tasks)
                    reopened += 1
            return reopened

        return lmdbenv.write(self.env, put)

    def close(self) -> None:
        self.env.close()

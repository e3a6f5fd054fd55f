"""How map output reaches the reducers: the two shuffle modes, behind one seam.

The server (server.py) knows a shuffle only through ``Shuffle``: it hands it
each map attempt's output messages, asks it to describe a committed attempt
(the ``TaskOutput`` the state store records), to drop a lost or losing one,
and to send a reduce task its runs.  Everything that differs between the
modes is here, in two classes:

``PayloadShuffle`` (mode 'payload', the default): the data travels through the
    coordinator.  A map attempt sends its runs as ``Segment`` messages of zstd
    blocks; they are appended to one LMDB spill store per partition as they
    arrive (coordinator-local disk), and the commit records their segment ids
    (``SpillRuns``).  A reduce task gets its partition's committed runs as
    ``RunBlocks``.  Dropping an attempt deletes its segments; resume deletes
    every segment no DONE task references.
``PathsShuffle`` (mode 'paths'): the data travels through a folder every host
    mounts at the same path (``shared_root``).  A map attempt writes one file
    there and reports it with ``MapFile`` (path, size, block index,
    stores/mapfiles.py); the coordinator checks the file as this host sees it
    and commits its path and ranges (``FileRuns``).  A reduce task gets
    ``RunRanges`` and reads the bytes itself.  Dropping an attempt removes its
    file; resume removes every file no DONE task references.  The coordinator
    moves metadata only (0.66% of the 200 MiB word count's input against
    49.43% in payload mode, ``benchmarks/traffic.py``).

Each side refuses the other's messages (a ``Segment`` in paths mode, a
``MapFile`` in payload mode) as a protocol error.  What a map task's *input*
is on the wire is a seam of its own (inputs.py); reduce results always go to
the coordinator's results store (server.py).  The worker's half of this seam
is ``worker/shuffle.py``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lmdb

from ..config import Config
from ..errors import ConfigError, DiskFull, ProtocolError, StoreError
from ..home import JobPaths
from ..protocol.channel import AsyncChannel
from ..protocol.messages import MapFile, RunBlocks, RunRanges, Segment
from ..stores.mapfiles import check_map_file, job_dir, map_file, remove_attempt, remove_job_dir, remove_unreferenced
from ..stores.outputs import FileRuns, SpillRuns, TaskOutput
from ..stores.segments import SegmentStore
from ..stores.state import StateStore, TaskState
from ..tasks import TaskKind

log = logging.getLogger(__name__)


class Shuffle(Protocol):
    """The coordinator's half of a shuffle mode.  `pending` is the object `begin_map` made for one
    map attempt: what it has written so far, until it is committed or dropped."""

    @property
    def shared_dir(self) -> Path | None:
        """Paths mode: the job's folder of map files, which workers are told; else None."""

    def open(self) -> None:
        """Before serving: open the stores, create the shared folder (ConfigError if it cannot)."""

    def close(self) -> None: ...

    def begin_map(self) -> Any: ...

    def accept_segment(self, pending: Any, msg: Segment) -> None:
        """Take a Segment of the attempt's output (raise ProtocolError where none belongs)."""

    def accept_map_file(self, pending: Any, msg: MapFile, epoch: int) -> str | None:
        """Take a MapFile report; return why it cannot be committed, or None."""

    def is_complete(self, pending: Any) -> bool:
        """Whether a map attempt that reported TaskDone has reported all of its output."""

    def committed(self, pending: Any) -> TaskOutput:
        """What the state store records for the attempt, as it commits."""

    def drop(self, task: int, attempt: int, epoch: int, pending: Any) -> None:
        """Delete an uncommitted attempt's output (best effort: resume collects what is left)."""

    def take_appended(self) -> list[SegmentStore]:
        """The stores appended to since the last call (flushed before a group commit)."""

    async def send_runs(self, channel: AsyncChannel, partition: int, runs: list[Any]) -> None:
        """Send a reduce task the pieces of `partition` in `runs` (runs_of: every committed run's)."""

    def collect_garbage(self, state: StateStore) -> int:
        """Resume: delete the map output no DONE task references (closed stores); return how much."""

    def remove_job(self) -> None:
        """The job is DONE: delete all of its map output (no reducer reads it again)."""


def committed_map_outputs(state: StateStore) -> list[TaskOutput]:
    return [r.output for _, r in state.tasks(TaskKind.MAP) if r.state is TaskState.DONE and r.output is not None]


def runs_of(state: StateStore, partition: int) -> list[Any]:
    """Where each committed run's piece of `partition` is: (map task, segment ids, their block
    count or None), or (path, ranges)."""
    pieces: list[Any] = []
    for task, record in state.tasks(TaskKind.MAP):
        output = record.output if record.state is TaskState.DONE else None
        if isinstance(output, SpillRuns):
            counts: list[int | None] = list(output.blocks) if output.blocks else [None] * len(output.runs)
            pieces += [(task, segments, n) for (p, segments), n in zip(output.runs, counts) if p == partition]
        elif isinstance(output, FileRuns):
            pieces += [(output.path, ranges) for p, ranges in output.runs if p == partition]
    return pieces


@dataclass
class _SpillWrites:
    """What one map attempt has appended to the spill stores, per (partition, run)."""

    segments: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    blocks: dict[tuple[int, int], int] = field(default_factory=dict)


class PayloadShuffle:
    """Map output through the coordinator: segments in one spill store per partition."""

    shared_dir = None

    def __init__(self, paths: JobPaths, config: Config, partitions: int) -> None:
        self._paths, self._config, self._partitions = paths, config, partitions
        self._batch_bytes = config.memory_plan().input_batch_bytes
        self.spill: list[SegmentStore] = []
        self._appended: set[SegmentStore] = set()

    def open(self) -> None:
        self.spill = [SegmentStore(self._paths.partition_spill(p), self._config.map_size_bytes)
                      for p in range(self._partitions)]

    def close(self) -> None:
        for store in self.spill:
            store.close()

    def begin_map(self) -> _SpillWrites:
        return _SpillWrites()

    def accept_segment(self, pending: _SpillWrites, msg: Segment) -> None:
        if not 0 <= msg.partition < self._partitions:
            raise ProtocolError(f"map task {msg.task} attempt {msg.attempt}: no partition {msg.partition}")
        store = self.spill[msg.partition]
        piece = (msg.partition, msg.run)
        pending.segments.setdefault(piece, []).append(store.append_segment(msg.blocks))
        pending.blocks[piece] = pending.blocks.get(piece, 0) + len(msg.blocks)
        self._appended.add(store)

    def accept_map_file(self, pending: Any, msg: MapFile, epoch: int) -> str | None:
        raise ProtocolError("a map file reported in shuffle mode 'payload'")

    def is_complete(self, pending: Any) -> bool:
        return True

    def committed(self, pending: _SpillWrites) -> SpillRuns:
        pieces = sorted(pending.segments, key=lambda piece: (piece[1], piece[0]))  # run, then partition
        return SpillRuns([(piece[0], pending.segments[piece]) for piece in pieces],
                         [pending.blocks[piece] for piece in pieces])

    def drop(self, task: int, attempt: int, epoch: int, pending: _SpillWrites) -> None:
        try:
            for (partition, _), segments in pending.segments.items():
                self.spill[partition].delete_segments(segments)
        except (DiskFull, StoreError) as e:
            log.debug("segments of a discarded attempt stay until resume collects them: %s", e.message)

    def take_appended(self) -> list[SegmentStore]:
        stores, self._appended = list(self._appended), set()
        return stores

    def collect_garbage(self, state: StateStore) -> int:
        kept: list[set[int]] = [set() for _ in range(self._partitions)]
        for output in committed_map_outputs(state):
            if isinstance(output, SpillRuns):
                for partition, segments in output.runs:
                    kept[partition].update(segments)
        deleted = sum(delete_unreferenced(self._paths.partition_spill(p), kept[p], self._config.map_size_bytes)
                      for p in range(self._partitions))
        if deleted:
            log.info("dropped %d uncommitted segment(s) from before the crash", deleted)
        return deleted

    def remove_job(self) -> None:
        shutil.rmtree(self._paths.spill, ignore_errors=True)

    async def send_runs(self, channel: AsyncChannel, partition: int, runs: list[Any]) -> None:
        store = self.spill[partition]
        for run, (task, segments, expected) in enumerate(runs):
            batch: list[bytes] = []
            size = sent = 0
            for block in store.iter_blocks(segments):
                batch.append(block)
                size, sent = size + len(block), sent + 1
                if size >= self._batch_bytes:
                    await channel.send(RunBlocks(run, batch))
                    batch, size = [], 0
            if batch:
                await channel.send(RunBlocks(run, batch))
            if expected is not None and sent != expected:
                raise StoreError(f"{store.path}: map task {task} wrote {expected} blocks for partition {partition}, "
                                 f"the spill store holds {sent}", "the spill store lost data; run the job again "
                                 "under a new id")
        store.release()


class PathsShuffle:
    """Map output through a shared filesystem: one file per map attempt under shared_root/<job>."""

    def __init__(self, config: Config, job_id: str, partitions: int) -> None:
        assert config.shared_root, "Config's rule: mode 'paths' needs a shared_root"
        self._config, self._partitions = config, partitions
        self.shared_dir: Path = job_dir(config.shared_root, job_id)

    def open(self) -> None:
        try:
            self.shared_dir.mkdir(exist_ok=True)
        except OSError as e:
            raise ConfigError(f"shared_root {self._config.shared_root}: cannot create {self.shared_dir}: "
                              f"{e.strerror or e}", "check that the folder is writable here") from None

    def close(self) -> None:
        pass

    def begin_map(self) -> list[Any]:
        return []  # the checked (path, index) once MapFile arrives

    def accept_segment(self, pending: Any, msg: Segment) -> None:
        raise ProtocolError("map output sent as segments in shuffle mode 'paths'")

    def accept_map_file(self, pending: list[Any], msg: MapFile, epoch: int) -> str | None:
        expected = map_file(self.shared_dir, msg.task, msg.attempt, epoch)
        problem = check_map_file(expected, msg.path, msg.size, msg.index, self._partitions)
        if problem is None:
            pending[:] = [msg.path, msg.index]
        return problem

    def is_complete(self, pending: list[Any]) -> bool:
        return bool(pending)

    def committed(self, pending: list[Any]) -> FileRuns:
        path, index = pending
        return FileRuns(path, [(partition, [(o, n) for o, n in ranges]) for partition, ranges in index])

    def drop(self, task: int, attempt: int, epoch: int, pending: Any) -> None:
        remove_attempt(self.shared_dir, task, attempt, epoch)

    def take_appended(self) -> list[SegmentStore]:
        return []

    def collect_garbage(self, state: StateStore) -> int:
        kept = {output.path for output in committed_map_outputs(state) if isinstance(output, FileRuns)}
        removed = remove_unreferenced(self.shared_dir, kept)
        if removed:
            log.info("removed %d uncommitted map file(s) from before the crash", removed)
        return removed

    def remove_job(self) -> None:
        remove_job_dir(self.shared_dir)

    async def send_runs(self, channel: AsyncChannel, partition: int, runs: list[Any]) -> None:
        for run, (path, ranges) in enumerate(runs):
            await channel.send(RunRanges(run, path, [list(r) for r in ranges]))


def delete_unreferenced(path: Path, keep: set[int], map_size_bytes: int) -> int:
    """Delete every segment of the store at `path` that is not in `keep`; return how many.

    A store that cannot be opened (cut short, half created when the disk filled up) holding
    nothing committed is removed whole, to be created again; one holding committed segments
    is a StoreError naming it."""
    if not (path / "data.mdb").exists():
        return 0
    try:
        store = SegmentStore(path, map_size_bytes)
    except (StoreError, lmdb.Error) as e:
        if keep:
            raise StoreError(f"{path}: the store is damaged and holds committed output: "
                             f"{getattr(e, 'message', None) or e}", "run the job again under a new id") from None
        log.warning("%s: removed a damaged store that held nothing committed (%s)", path,
                    getattr(e, "message", None) or e)
        shutil.rmtree(path)
        return 0
    try:
        garbage = [s for s in store.segment_ids() if s not in keep]
        store.delete_segments(garbage)
    finally:
        store.close()
    return len(garbage)


def shuffle_for(config: Config, paths: JobPaths, job_id: str, partitions: int) -> Shuffle:
    """The job's shuffle mode (config.shuffle_mode, stored with the job)."""
    if config.shuffle_mode == "paths":
        return PathsShuffle(config, job_id, partitions)
    return PayloadShuffle(paths, config, partitions)

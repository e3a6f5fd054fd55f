"""Where a map attempt's output goes: the worker's half of the shuffle seam (coordinator/shuffle.py).

The map side (mapside.py) hands every spilled run to ``MapOutputSink.add``,
one partition at a time, and knows nothing of the mode:

``SendSegments`` (mode 'payload'): each run's blocks go to the coordinator as
    ``Segment`` messages of at most ``SEGMENT_BYTES``, which it appends to its
    spill stores as they arrive.
``WriteMapFile`` (mode 'paths', ``WorkerSettings.shared_dir`` set): the blocks
    go into this attempt's one file in the shared folder
    (stores/mapfiles.py: temp file, fsync, rename); ``finish`` then reports
    it with ``MapFile`` before TaskDone.  A file it cannot write fails the
    attempt, naming the path (``OSError`` from ``open``, ``add`` or
    ``finish``; the caller reports it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ..protocol.channel import SyncChannel
from ..protocol.messages import MapFile, MapTask, Segment
from ..settings import WorkerSettings
from ..stores.mapfiles import MapFileWriter, map_file

SEGMENT_BYTES = 8 * 1024 * 1024
"""Blocks per Segment message: big enough to amortise a frame, small enough to interleave workers."""


class MapOutputSink(Protocol):
    where: str  # for error messages: "the coordinator", or the map file's path

    @property
    def bytes_out(self) -> int:
        """Compressed bytes written so far, for the task's stats."""

    def open(self) -> None: ...

    def add(self, partition: int, run: int, blocks: list[bytes]) -> None: ...

    def finish(self) -> None:
        """All runs are added: make the output complete (before TaskDone)."""

    def abort(self) -> None:
        """The attempt failed: drop what can be dropped here."""


class SendSegments:
    """Map output to the coordinator, as Segment messages."""

    where = "the coordinator"

    def __init__(self, channel: SyncChannel, task: MapTask) -> None:
        self._channel, self._task = channel, task
        self.bytes_out = 0

    def open(self) -> None:
        pass

    def add(self, partition: int, run: int, blocks: list[bytes]) -> None:
        for batch in _batches(blocks, SEGMENT_BYTES):
            self.bytes_out += sum(len(b) for b in batch)
            self._channel.send(Segment(self._task.task, self._task.attempt, partition, run, batch))

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass  # the coordinator drops the attempt's segments when it learns the attempt failed


class WriteMapFile:
    """Map output into this attempt's file in the shared folder, reported with MapFile."""

    def __init__(self, channel: SyncChannel, task: MapTask, shared_dir: str) -> None:
        self._channel, self._task = channel, task
        self.where = str(map_file(Path(shared_dir), task.task, task.attempt, task.epoch))
        self._writer: MapFileWriter | None = None

    @property
    def bytes_out(self) -> int:
        return self._writer.size if self._writer is not None else 0

    def open(self) -> None:
        self._writer = MapFileWriter(Path(self.where))

    def add(self, partition: int, run: int, blocks: list[bytes]) -> None:
        assert self._writer is not None, "open() first"
        self._writer.add(partition, blocks)

    def finish(self) -> None:
        assert self._writer is not None, "open() first"
        size = self._writer.finish()
        self._channel.send(MapFile(self._task.task, self._task.attempt, self.where, size, self._writer.index))

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


def map_output_for(settings: WorkerSettings, channel: SyncChannel, task: MapTask) -> MapOutputSink:
    """Where this map attempt's output goes, by the job's shuffle mode."""
    if settings.shared_dir:
        return WriteMapFile(channel, task, settings.shared_dir)
    return SendSegments(channel, task)


def _batches(blocks: list[bytes], max_bytes: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for block in blocks:
        if batch and size + len(block) > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(block)
        size += len(block)
    if batch:
        yield batch

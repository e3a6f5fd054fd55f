"""What a committed task produced: one tagged shape, stored in its TaskRecord.

A map task's output is its runs, each cut into one piece per partition, and
where those pieces are depends on the shuffle mode that wrote them
(coordinator/shuffle.py): segments of the coordinator's spill stores
(``SpillRuns``, payload mode) or byte ranges of one map file on the shared
filesystem (``FileRuns``, paths mode).  A reduce task's output is segments of
the results store (``ResultSegments``).  Each shape is packed as
``[tag, fields...]``, so a reader tells them apart by the tag, never by
guessing from the value.

Records written before the tag existed (untagged lists) are read into the
same shapes (``_legacy``), so a job stopped under an older octostore still
resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class SpillRuns:
    """Map output in the coordinator's spill stores: (partition, segment ids) per run and
    partition, in run order; the segments are in that partition's spill store.  `blocks[i]` is
    how many blocks runs[i] holds (None in records written before it was counted)."""

    TAG: ClassVar[str] = "spill"
    runs: list[tuple[int, list[int]]]
    blocks: list[int] | None = None

    def pack(self) -> list[Any]:
        return [self.TAG, [[p, segments] for p, segments in self.runs], self.blocks]


@dataclass(frozen=True, slots=True)
class FileRuns:
    """Map output in one map file on the shared filesystem (stores/mapfiles.py): (partition,
    [(offset, length), ...]) per run and partition, in (run, partition) order."""

    TAG: ClassVar[str] = "file"
    path: str
    runs: list[tuple[int, list[tuple[int, int]]]]

    def pack(self) -> list[Any]:
        return [self.TAG, self.path, [[p, [list(r) for r in ranges]] for p, ranges in self.runs]]


@dataclass(frozen=True, slots=True)
class ResultSegments:
    """Reduce output: segment ids in the results store, in key order, and how many blocks they
    hold (None in records written before it was counted), so a short or missing store is caught."""

    TAG: ClassVar[str] = "results"
    segments: list[int]
    blocks: int | None = None

    def pack(self) -> list[Any]:
        return [self.TAG, self.segments, self.blocks]


TaskOutput = SpillRuns | FileRuns | ResultSegments


def pack_output(output: TaskOutput | None) -> list[Any] | None:
    return None if output is None else output.pack()


def unpack_output(packed: Any) -> TaskOutput | None:
    """The shape a TaskRecord holds; ValueError for a tag this octostore does not know."""
    if not packed:
        return None
    tag = packed[0]
    if tag == SpillRuns.TAG:
        return SpillRuns([(p, segments) for p, segments in packed[1]], packed[2] if len(packed) > 2 else None)
    if tag == FileRuns.TAG:
        return FileRuns(packed[1], [(p, [(o, n) for o, n in ranges]) for p, ranges in packed[2]])
    if tag == ResultSegments.TAG:
        return ResultSegments(packed[1], packed[2] if len(packed) > 2 else None)
    if not isinstance(tag, str):
        return _legacy(packed)
    raise ValueError(f"unknown task output {tag!r}")


def _legacy(packed: list[Any]) -> TaskOutput:
    """An untagged record: [segment ids] (reduce), [[partition, [segment ids]], ...] (payload) or
    [[partition, {"file", "blocks"}], ...] (paths)."""
    if isinstance(packed[0], int):
        return ResultSegments(packed)
    if isinstance(packed[0][1], dict):
        return FileRuns(packed[0][1]["file"], [(p, [(o, n) for o, n in e["blocks"]]) for p, e in packed])
    return SpillRuns([(p, segments) for p, segments in packed])

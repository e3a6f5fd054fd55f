"""Every message a coordinator and a worker exchange, in one place.

A message is a frozen dataclass; on the wire it is the msgpack array
``[op, field1, field2, ...]`` (fields in declaration order).  msgpack, not
pickle: a control message can never execute code, and bytes fields (blocks,
pickled inputs) travel as raw ``bin`` without copies.  Pickled data inside a
message is only ever unpickled after the handshake and the frame MAC checked.

Conversation (the worker pulls, as in octo.py: first come, first served)::

    worker                                coordinator
    Hello          ->
                   <-  Welcome            (job id, epoch, functions by value) | Refused
    Ready          ->
                   <-  MapTask, Input*, InputEnd      | ReduceTask, RunBlocks*, InputEnd | Shutdown
    Segment*       ->                     (map output: sorted zstd blocks of one partition)

In shuffle mode 'paths' (stores/mapfiles.py) the data moves through a shared
filesystem instead, and only metadata through the coordinator: MapPaths
replaces Input when the source is ``octostore.files(...)``, one MapFile (path,
size, block index) replaces the Segments, and RunRanges replaces RunBlocks::

                   <-  MapTask, MapPaths*, InputEnd   | ReduceTask, RunRanges*, InputEnd
    MapFile        ->                     (then TaskDone)
    Results*       ->                     (reduce output blocks)
    TaskDone       ->                     (commit; the next task is the ack)
    TaskFailed     ->                     (user code raised: traceback text)
    Heartbeat      ->                     (every lease/4 seconds, from a thread, at any time)
"""

from __future__ import annotations

import dataclasses
import struct
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from ..errors import ProtocolError

PYTHON_VERSION = "%d.%d" % sys.version_info[:2]


@dataclass(frozen=True, slots=True)
class Hello:
    op: ClassVar[str] = "hello"
    version: str  # octostore's
    python: str  # "3.11": functions travel as bytecode, which only the same minor version runs
    host: str
    pid: int


@dataclass(frozen=True, slots=True)
class Welcome:
    op: ClassVar[str] = "welcome"
    job_id: str
    epoch: int
    functions: bytes  # cloudpickle of the job's worker-side functions
    settings: dict[str, Any]  # settings.WorkerSettings.to_wire(): what the worker runs its tasks with


@dataclass(frozen=True, slots=True)
class Refused:
    op: ClassVar[str] = "refused"
    reason: str  # why this worker cannot work for this coordinator (version mismatch)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    op: ClassVar[str] = "heartbeat"  # "still alive", from a worker thread while user code runs


@dataclass(frozen=True, slots=True)
class Ready:
    op: ClassVar[str] = "ready"


@dataclass(frozen=True, slots=True)
class MapTask:
    op: ClassVar[str] = "map_task"
    task: int
    attempt: int
    epoch: int


@dataclass(frozen=True, slots=True)
class ReduceTask:
    op: ClassVar[str] = "reduce_task"
    task: int  # the partition
    attempt: int
    epoch: int
    runs: int


@dataclass(frozen=True, slots=True)
class Input:
    op: ClassVar[str] = "input"
    items: bytes  # pickle(list of (source key, value)), zstd-compressed if `compressed`
    compressed: bool  # not over loopback (config compress_inputs), where it would only cost CPU


@dataclass(frozen=True, slots=True)
class RunBlocks:
    op: ClassVar[str] = "run_blocks"
    run: int  # index among the task's runs, 0..runs-1
    blocks: list[bytes]


@dataclass(frozen=True, slots=True)
class MapPaths:
    op: ClassVar[str] = "map_paths"
    paths: list[str]  # files the worker reads itself (octostore.files source, paths mode)
    encoding: str
    errors: str


@dataclass(frozen=True, slots=True)
class RunRanges:
    op: ClassVar[str] = "run_ranges"
    run: int  # index among the task's runs, 0..runs-1
    path: str  # a committed map file on the shared filesystem
    ranges: list[list[int]]  # [[offset, length], ...] of the run's blocks in that file


@dataclass(frozen=True, slots=True)
class InputEnd:
    op: ClassVar[str] = "input_end"


@dataclass(frozen=True, slots=True)
class Segment:
    op: ClassVar[str] = "segment"
    task: int
    attempt: int
    partition: int
    run: int  # the worker's spill number within this attempt
    blocks: list[bytes]


@dataclass(frozen=True, slots=True)
class MapFile:
    op: ClassVar[str] = "map_file"
    task: int
    attempt: int
    path: str  # where the attempt wrote its output, renamed into place and fsynced
    size: int  # bytes, checked by the coordinator before it commits
    index: list[list[Any]]  # [[partition, [[offset, length], ...]], ...], one entry per run and partition


@dataclass(frozen=True, slots=True)
class Results:
    op: ClassVar[str] = "results"
    task: int
    attempt: int
    blocks: list[bytes]


@dataclass(frozen=True, slots=True)
class TaskDone:
    op: ClassVar[str] = "task_done"
    kind: str  # a TaskKind (octostore/tasks.py) as its text
    task: int
    attempt: int
    epoch: int
    stats: dict[str, int]  # records_in, pairs_out, ..., peak_rss_bytes


@dataclass(frozen=True, slots=True)
class TaskFailed:
    op: ClassVar[str] = "task_failed"
    kind: str
    task: int
    attempt: int
    epoch: int
    message: str  # one line: what raised, on which key
    traceback: str  # the user's frames only
    is_contract_error: bool  # the job broke the contract: retrying cannot help


@dataclass(frozen=True, slots=True)
class Shutdown:
    op: ClassVar[str] = "shutdown"
    reason: str


_MESSAGES: dict[str, type] = {
    cls.op: cls
    for cls in (Hello, Welcome, Refused, Heartbeat, Ready, MapTask, ReduceTask, Input, MapPaths, RunBlocks, RunRanges,
                InputEnd, Segment, MapFile, Results, TaskDone, TaskFailed, Shutdown)
}
_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in dataclasses.fields(cls))
                                        for cls in _MESSAGES.values()}


def _is_int(v: object) -> bool:
    return type(v) is int


def _is_bytes_list(v: object) -> bool:
    return type(v) is list and all(type(b) is bytes for b in v)


def _is_int_dict(v: object) -> bool:
    return type(v) is dict and all(type(k) is str and type(i) is int for k, i in v.items())


def _is_ranges(v: object) -> bool:
    """[[offset, length], ...] with non-negative ints."""
    return type(v) is list and all(
        type(r) is list and len(r) == 2 and type(r[0]) is int and type(r[1]) is int and r[0] >= 0 and r[1] >= 0
        for r in v)


def _is_index(v: object) -> bool:
    """[[partition, [[offset, length], ...]], ...]."""
    return type(v) is list and all(
        type(e) is list and len(e) == 2 and type(e[0]) is int and _is_ranges(e[1]) for e in v)


# A peer that holds the secret can still send nonsense; every field is checked before use.
_CHECKS: dict[str, Any] = {
    "int": _is_int, "str": lambda v: type(v) is str, "bytes": lambda v: type(v) is bytes,
    "bool": lambda v: type(v) is bool, "list[bytes]": _is_bytes_list,
    "dict[str, int]": _is_int_dict, "dict[str, Any]": lambda v: type(v) is dict,
    "list[str]": lambda v: type(v) is list and all(type(s) is str for s in v),
    "list[list[int]]": _is_ranges, "list[list[Any]]": _is_index,
}
_FIELD_CHECKS: dict[type, tuple[tuple[str, Any], ...]] = {
    cls: tuple((f.name, _CHECKS[str(f.type)]) for f in dataclasses.fields(cls)) for cls in _MESSAGES.values()
}


OUT_OF_LINE_BYTES = 64 * 1024
"""A bytes value above this size is sent as its own buffer after its msgpack header, not copied
into the message: a 16 MiB source file was otherwise held three more times while it was sent."""

_BIN32 = struct.Struct(">BI")  # msgpack's bin 32 header: 0xc6, then the length


def encode_message_parts(msg: Any) -> list[bytes]:
    """Return the msgpack encoding of `msg` as buffers to send in order (their concatenation is
    the msgpack bytes).  Large bytes fields, and large bytes items of list fields, stay separate
    buffers; everything else is packed into the buffers between them."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    parts: list[bytes] = []

    def pack(value: Any) -> None:
        if type(value) is bytes and len(value) > OUT_OF_LINE_BYTES:
            if len(value) >= 2 ** 32:
                raise ValueError(f"{len(value)}-byte value is too large for one message")
            parts.append(packer.bytes() + _BIN32.pack(0xC6, len(value)))
            parts.append(value)
            packer.reset()
        else:
            packer.pack(value)

    fields = _FIELDS[type(msg)]
    packer.pack_array_header(1 + len(fields))
    packer.pack(msg.op)
    for name in fields:
        value = getattr(msg, name)
        if type(value) is list and value and type(value[0]) is bytes:  # blocks
            packer.pack_array_header(len(value))
            for item in value:
                pack(item)
        else:
            pack(value)
    if tail := packer.bytes():
        parts.append(tail)
    return parts


def encode_message(msg: Any) -> bytes:
    """Return the msgpack bytes of `msg`."""
    return b"".join(encode_message_parts(msg))


def decode_message(data: bytes | memoryview) -> Any:
    """Return the message in `data`, or raise ProtocolError for anything malformed."""
    try:
        items = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as e:
        raise ProtocolError(f"undecodable message: {e}") from None
    if not isinstance(items, list) or not items or not isinstance(items[0], str):
        raise ProtocolError("message is not [op, fields...]")
    cls = _MESSAGES.get(items[0])
    if cls is None:
        raise ProtocolError(f"unknown message op {items[0]!r}")
    if len(items) - 1 != len(_FIELDS[cls]):
        raise ProtocolError(f"message {items[0]!r} has {len(items) - 1} fields, expected {len(_FIELDS[cls])}")
    for (name, check), value in zip(_FIELD_CHECKS[cls], items[1:]):
        if not check(value):
            raise ProtocolError(f"message {items[0]!r}: field {name} has the wrong type ({type(value).__name__})")
    return cls(*items[1:])

"""Message encoding: octostore's msgpack dataclasses against msgspec Structs, in one process.

    python benchmarks/messages.py [--repeat 7]

For each message shape the engine sends (a small control message, a map
task's TaskDone with its stats, a Segment of 8 blocks of 128 KiB, a 4 MiB
Input), times encode + decode with octostore's ``protocol/messages.py``
(dataclasses; checked field by field on decode; bytes over 64 KiB out of line,
not copied into the message) and with msgspec (tagged ``array_like`` Structs, a typed
``Decoder`` over their union, which checks types as it decodes), and prints
microseconds per message and the ratio.  glibc's malloc thresholds are set
as octostore's processes set them (allocator.py): left adaptive, a decoded
128 KiB block is sometimes a fresh mmap, and its page faults (~0.5 ms per
MiB here) swamp both encoders.  msgspec must be installed
(``pip install msgspec``); it is not a dependency of octostore.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import msgspec

from octostore.allocator import return_freed_memory
from octostore.protocol.messages import Input, Ready, Segment, TaskDone, decode_message, encode_message_parts


class SReady(msgspec.Struct, tag="ready", array_like=True, frozen=True):
    pass


class STaskDone(msgspec.Struct, tag="task_done", array_like=True, frozen=True):
    kind: str
    task: int
    attempt: int
    epoch: int
    stats: dict[str, int]


class SSegment(msgspec.Struct, tag="segment", array_like=True, frozen=True):
    task: int
    attempt: int
    partition: int
    run: int
    blocks: list[bytes]


class SInput(msgspec.Struct, tag="input", array_like=True, frozen=True):
    items: bytes
    compressed: bool


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(SReady | STaskDone | SSegment | SInput)


def best_us(fn: Callable[[], Any], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e6


def ours(msg: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Encode as the channel does (parts, written to the socket one after another, never joined)
    and decode as the receiver does (from the frame's bytes)."""
    frame = b"".join(encode_message_parts(msg))
    return (lambda: encode_message_parts(msg)), (lambda: decode_message(frame))


def theirs(msg: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
    frame = _ENCODER.encode(msg)
    return (lambda: _ENCODER.encode(msg)), (lambda: _DECODER.decode(frame))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    return_freed_memory()  # glibc's thresholds as in the coordinator and workers: else 128 KiB blocks may be mmapped
    stats = {"records_in": 1234, "pairs_out": 987654, "runs": 2, "bytes_in": 4 << 20, "bytes_out": 1 << 20,
             "peak_rss_bytes": 123 << 20}
    blocks = [bytes(range(256)) * 512 for _ in range(8)]  # 8 x 128 KiB
    payload = b"x" * (4 << 20)
    shapes = [
        ("Ready", Ready(), SReady(), 20000),
        ("TaskDone", TaskDone("map", 3, 1, 2, stats), STaskDone("map", 3, 1, 2, stats), 20000),
        ("Segment 8 x 128 KiB", Segment(3, 1, 5, 0, blocks), SSegment(3, 1, 5, 0, blocks), 200),
        ("Input 4 MiB", Input(payload, False), SInput(payload, False), 50),
    ]
    print(f"{'message':<22}{'octostore encode+decode us':>28}{'msgspec us':>12}{'ratio':>8}")
    for name, mine, struct, count in shapes:
        a = sum(best_us(fn, count, args.repeat) for fn in ours(mine))
        b = sum(best_us(fn, count, args.repeat) for fn in theirs(struct))
        print(f"{name:<22}{a:>28.2f}{b:>12.2f}{a / b:>8.2f}")


if __name__ == "__main__":
    main()

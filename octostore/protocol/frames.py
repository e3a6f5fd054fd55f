"""Length-prefixed frames, with the size checked before the body is read.

A frame is an 8-byte big-endian length followed by that many bytes.  The length
is checked against a cap *before* anything is allocated (``multiprocessing``'s
``_recv_bytes(maxsize)`` does the same; distributed's ``TCP.read`` does not, and
a peer can make it allocate 2**64 bytes).  Eight bytes rather than four so that a
hostile prefix up to 2**64 is a clean refusal, not a wrap-around.

After the handshake every frame body ends with a 32-byte HMAC-SHA256 over
``direction || sequence number || payload`` under the session key
(``Sealer``/``Opener``).  The direction byte stops a frame from being reflected
back at its sender; the sequence number stops replays and reordering.  Nothing
is unpickled from a frame whose MAC did not verify.

How a connection ended matters (``multiprocessing.connection._recv``): EOF
before a frame starts is "the peer left", EOF inside a frame is "the peer
broke".  Both become ``ConnectionLost`` with a message that says which; any
frame we refuse becomes ``ProtocolError`` and the caller must drop the
connection, since the stream is out of sync.

There is one reader for asyncio streams (coordinator) and one for blocking
sockets (worker); both share ``parse_length`` so the cap rule is written once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import struct
from typing import Protocol

from ..errors import ConnectionLost, ProtocolError


class BlockingStream(Protocol):
    """What the blocking frame functions need: a socket, or a ``tls.TlsSocket`` over one."""

    def recv_into(self, buffer: memoryview) -> int: ...

    def sendall(self, data: bytes) -> None: ...


_HEADER = struct.Struct(">Q")
HEADER_BYTES = _HEADER.size
MAC_BYTES = 32
SMALL_FRAME_BYTES = 64 * 1024
"""Frames up to this size are copied into one buffer, and queued frames sent in one system call:
per-message syscalls and MAC objects were most of the coordinator's cost per tiny task."""


def parse_length(header: bytes, max_bytes: int) -> int:
    """Return the body length announced by `header`, refusing anything above `max_bytes`."""
    length: int = _HEADER.unpack(header)[0]
    if length > max_bytes:
        raise ProtocolError(f"peer announced a {length}-byte frame; the limit is {max_bytes}")
    return length


def frame_header(body_bytes: int) -> bytes:
    """Return the length prefix for a body of `body_bytes` bytes."""
    return _HEADER.pack(body_bytes)


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    """Read one frame body from an asyncio stream."""
    try:
        header = await reader.readexactly(HEADER_BYTES)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise ConnectionLost("peer closed the connection inside a frame header") from None
        raise ConnectionLost("peer closed the connection") from None
    except OSError as e:
        raise ConnectionLost(f"connection error: {e}") from None
    length = parse_length(header, max_bytes)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as e:
        raise ConnectionLost(f"peer closed the connection after {len(e.partial)} of {length} bytes") from None
    except OSError as e:
        raise ConnectionLost(f"connection error: {e}") from None


def frame(*parts: bytes) -> list[bytes]:
    """One frame made of `parts`, as buffers to write in order (small frames joined into one)."""
    size = sum(len(p) for p in parts)
    if size <= SMALL_FRAME_BYTES:
        return [b"".join([frame_header(size), *parts])]
    return [frame_header(size), *parts]


def write_frame(writer: asyncio.StreamWriter, *parts: bytes) -> None:
    """Queue one frame made of `parts` on an asyncio stream (the caller drains)."""
    writer.writelines(frame(*parts))


WRITE_CHUNK_BYTES = 1024 * 1024


async def write_buffers(writer: asyncio.StreamWriter, buffers: list[bytes]) -> None:
    """Write frames (from ``frame``) on an asyncio stream and wait until it has room again.

    Large buffers go in chunks, draining after each: asyncio's socket transport joins what
    writelines() is given and copies whatever the socket does not take at once, so a 16 MiB
    source value written whole was held three more times while it went out.  The caller must
    not let another write in between (AsyncChannel holds a lock)."""
    small: list[bytes] = []
    for buffer in buffers:
        if len(buffer) <= WRITE_CHUNK_BYTES:
            small.append(buffer)
            continue
        if small:
            writer.writelines(small)
            small = []
        view = memoryview(buffer)
        for start in range(0, len(view), WRITE_CHUNK_BYTES):
            writer.write(view[start : start + WRITE_CHUNK_BYTES])
            await writer.drain()
    if small:
        writer.writelines(small)
    await writer.drain()


def send_frame(sock: BlockingStream, *parts: bytes) -> None:
    """Send one frame made of `parts` on a blocking socket."""
    send_buffers(sock, frame(*parts))


def recv_frame(sock: BlockingStream, max_bytes: int) -> bytes:
    """Read one frame body from a blocking socket."""
    return bytes(recv_frame_buffer(sock, max_bytes))


def recv_frame_buffer(sock: BlockingStream, max_bytes: int) -> bytearray:
    """recv_frame without the final copy (a worker's inputs: each one would be copied for nothing)."""
    header = _recv_exactly(sock, HEADER_BYTES, at_frame_start=True)
    return _recv_exactly(sock, parse_length(bytes(header), max_bytes), at_frame_start=False)


def send_buffers(sock: BlockingStream, buffers: list[bytes]) -> None:
    """Send frames (from ``frame``) on a blocking socket; small ones in one system call."""
    if len(buffers) > 1 and sum(len(b) for b in buffers) <= SMALL_FRAME_BYTES:
        buffers = [b"".join(buffers)]
    try:
        for part in buffers:
            sock.sendall(part)
    except OSError as e:
        raise ConnectionLost(f"connection error while sending: {e}") from None


def _recv_exactly(sock: BlockingStream, size: int, at_frame_start: bool) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        try:
            n = sock.recv_into(view[got:])
        except OSError as e:
            raise ConnectionLost(f"connection error: {e}") from None
        if n == 0:
            if got == 0 and at_frame_start:
                raise ConnectionLost("peer closed the connection")
            raise ConnectionLost(f"peer closed the connection after {got} of {size} bytes")
        got += n
    return buf


class Sealer:
    """MACs outgoing frame payloads for one direction of one authenticated connection."""

    def __init__(self, session_key: bytes, direction: bytes) -> None:
        self._key = session_key
        self._direction = direction
        self._seq = 0

    def seal(self, *parts: bytes | memoryview) -> bytes:
        """Return the MAC to append to the payload made of `parts` (and advance the sequence number)."""
        prefix = self._direction + self._seq.to_bytes(8, "big")
        self._seq += 1
        if sum(map(len, parts)) <= SMALL_FRAME_BYTES:  # one-shot C call; copying a small payload is cheaper
            return hmac.digest(self._key, b"".join([prefix, *parts]), "sha256")
        mac = hmac.new(self._key, prefix, hashlib.sha256)
        for part in parts:
            mac.update(part)
        return mac.digest()


class Opener:
    """Checks the MACs of incoming frames for one direction of one connection."""

    def __init__(self, session_key: bytes, direction: bytes) -> None:
        self._sealer = Sealer(session_key, direction)

    def open(self, body: bytes | bytearray) -> memoryview:
        """Return the payload of `body` if its MAC verifies, else raise ProtocolError."""
        if len(body) < MAC_BYTES:
            raise ProtocolError(f"frame of {len(body)} bytes is too short to carry a MAC")
        view = memoryview(body)
        payload, mac = view[:-MAC_BYTES], view[-MAC_BYTES:]
        if not hmac.compare_digest(self._sealer.seal(payload), mac):
            raise ProtocolError("frame MAC does not verify (tampered, replayed or out of order)")
        return payload

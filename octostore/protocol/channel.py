"""An authenticated, MAC-sealed message channel: asyncio for the coordinator, blocking for workers.

The two classes are mirror images over the same frames, handshake and message
codec; each is a thin shell so that the rules live in one place
(``frames``, ``handshake``, ``messages``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from typing import Any

from ..errors import ConnectionLost
from .frames import Opener, Sealer, frame, read_frame, recv_frame_buffer, send_buffers, write_buffers
from .handshake import COORDINATOR_TO_WORKER, WORKER_TO_COORDINATOR, accept_handshake, connect_handshake
from .messages import decode_message, encode_message_parts
from .tls import TlsSocket


class AsyncChannel:
    """The coordinator's end of one worker connection (one asyncio task reads, any task writes)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame_bytes: int) -> None:
        self.reader = reader
        self.writer = writer
        self.max_frame_bytes = max_frame_bytes
        self._sealer: Sealer | None = None
        self._opener: Opener | None = None
        self._corked: list[bytes] = []  # frames held back by send(flush=False)
        self._write_lock = asyncio.Lock()
        self.bytes_in = 0
        self.bytes_out = 0

    async def start_tls(self, context: ssl.SSLContext, timeout_s: float) -> None:
        """Upgrade to TLS before authenticate(); raises ssl.SSLError, OSError or TimeoutError."""
        await self.writer.start_tls(context, ssl_handshake_timeout=timeout_s)

    async def authenticate(self, secret: bytes) -> None:
        """Run the coordinator's half of the handshake; raise AuthenticationError on a bad peer."""
        key = await accept_handshake(self.reader, self.writer, secret)
        self._sealer = Sealer(key, COORDINATOR_TO_WORKER)
        self._opener = Opener(key, WORKER_TO_COORDINATOR)

    async def send(self, msg: Any, *, flush: bool = True) -> None:
        """Send one message and wait until the transport has room again (backpressure).

        With flush=False the frame is held back and goes out with the next flushed
        one, in one system call (a small task's MapTask, Input and InputEnd)."""
        assert self._sealer is not None, "send before authenticate"
        parts = encode_message_parts(msg)
        self._corked += frame(*parts, self._sealer.seal(*parts))  # sealed in call order: sequence numbers
        self.bytes_out += sum(map(len, parts))
        if not flush:
            return
        async with self._write_lock:  # a large frame goes out in chunks: no other frame in between
            buffers, self._corked = self._corked, []
            try:
                await write_buffers(self.writer, buffers)
            except (OSError, RuntimeError) as e:  # reset, broken pipe; RuntimeError: transport already closed
                raise ConnectionLost(f"connection error while sending: {e}") from None

    async def recv(self) -> Any:
        """Receive one message; raise ConnectionLost or ProtocolError."""
        assert self._opener is not None, "recv before authenticate"
        body = await read_frame(self.reader, self.max_frame_bytes)
        self.bytes_in += len(body)
        return decode_message(self._opener.open(body))

    def close(self) -> None:
        """Abort the connection (used after any error: the stream may be out of sync)."""
        self.writer.close()


class SyncChannel:
    """A worker's end of its connection to the coordinator (blocking socket)."""

    def __init__(self, sock: socket.socket, max_frame_bytes: int) -> None:
        self.sock: socket.socket | TlsSocket = sock
        self.max_frame_bytes = max_frame_bytes
        self._sealer: Sealer | None = None
        self._opener: Opener | None = None
        self._send_lock = threading.Lock()  # the heartbeat thread sends too; frames must not interleave
        self._corked: list[bytes] = []  # frames held back by send(flush=False)

    def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """Upgrade to TLS before authenticate(), checking the certificate for `server_hostname`.

        Raises ssl.SSLCertVerificationError, ssl.SSLError or OSError (the caller words them)."""
        tls = TlsSocket(self.sock, context, server_hostname)  # type: ignore[arg-type]  # once, before any frame
        tls.handshake()
        self.sock = tls

    def settimeout(self, seconds: float | None) -> None:
        """Bound every later blocking read and write (None: wait forever)."""
        self.sock.settimeout(seconds)

    def authenticate(self, secret: bytes) -> None:
        """Run the worker's half of the handshake; raise AuthenticationError on a bad coordinator."""
        key = connect_handshake(self.sock, secret)
        self._sealer = Sealer(key, WORKER_TO_COORDINATOR)
        self._opener = Opener(key, COORDINATOR_TO_WORKER)

    def send(self, msg: Any, *, flush: bool = True) -> None:
        """Send one message (thread-safe: the MAC's sequence number and the frame go out together).

        With flush=False the frame waits for the next flushed send (a TaskDone and the
        Ready after it go out in one system call)."""
        assert self._sealer is not None, "send before authenticate"
        parts = encode_message_parts(msg)
        with self._send_lock:
            self._corked += frame(*parts, self._sealer.seal(*parts))
            if flush:
                buffers, self._corked = self._corked, []
                send_buffers(self.sock, buffers)

    def recv(self) -> Any:
        assert self._opener is not None, "recv before authenticate"
        return decode_message(self._opener.open(recv_frame_buffer(self.sock, self.max_frame_bytes)))

    def close(self) -> None:
        self.sock.close()

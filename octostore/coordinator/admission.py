"""Who may join: a connection becomes a worker only after TLS (if on), the HMAC handshake and Hello.

Nothing from a peer is unpickled before the handshake and the frame MAC pass
(protocol/handshake.py).  With ``config.tls`` each accepted connection is
upgraded to TLS first: a peer that fails the TLS handshake (a plain worker, a
wrong CA) is logged and counted as a refused peer, and the HMAC handshake then
runs inside TLS, unchanged.  A worker of another Python or octostore version
is refused with the reason (functions travel as bytecode), so its user sees
why.  Each step has ``HANDSHAKE_TIMEOUT_S``: a silent peer cannot hold a
connection open.

Unauthenticated connections are capped (``MAX_HANDSHAKING``, as sshd's
``MaxStartups``): past the cap the *oldest* one still in its handshake is
dropped, not the newest.  A real worker finishes its handshake in
milliseconds, so it is never the oldest for long, while idle peers holding
sockets open are shed first; the coordinator's descriptors stay bounded
whatever a flood does (measured: 400 idle connections against a coordinator
with ``ulimit -n 256``, and a real client still joined,
``tests/test_security.py``).  Each refused peer is one line.  When a burst still
exhausts the descriptors before admission sees it (asyncio accepts a whole
backlog at once), asyncio stops accepting for a second; ``on_loop_error``
says so in one line instead of a traceback, at most once a second.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from typing import Any

from .. import __version__
from ..config import Config
from ..errors import AuthenticationError, ConnectionLost, ProtocolError
from ..protocol.channel import AsyncChannel
from ..protocol.handshake import HANDSHAKE_TIMEOUT_S
from ..protocol.messages import PYTHON_VERSION, Hello, Refused
from ..protocol.tls import server_context
from .roster import Totals, WorkerConn

log = logging.getLogger(__name__)

MAX_HANDSHAKING = 64
"""Connections that may be in their handshake at once; past it the oldest is dropped."""

DROPPED = f"dropped: over {MAX_HANDSHAKING} connections were in their handshake, and it was the oldest"

ACCEPT_ERRORS_PER_S = 1
"""Accept errors (out of descriptors) logged at most per second; the rest are counted."""


class Admission:
    """Admits authenticated workers of the same versions; counts and logs the peers it refuses."""

    def __init__(self, secret: bytes, config: Config, totals: Totals) -> None:
        self._secret, self._config, self._totals = secret, config, totals
        # ConfigError now, before anything listens, if the files do not load
        self._tls = server_context(str(config.tls_cert), str(config.tls_key)) if config.tls else None
        self._handshaking: dict[asyncio.StreamWriter, str | None] = {}  # oldest first; why it was dropped
        self._is_closing = False
        self._accept_errors = _RateLimitedLog()

    async def admit(self, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> tuple[WorkerConn, Hello] | None:
        """The worker on this connection and its Hello, or None (the connection is closed)."""
        peer = "%s:%s" % writer.get_extra_info("peername")[:2]
        channel = AsyncChannel(reader, writer, self._config.max_frame_bytes)
        if len(self._handshaking) >= MAX_HANDSHAKING:
            oldest = next(iter(self._handshaking))
            self._handshaking[oldest] = DROPPED
            oldest.transport.abort()  # its admit() sees the connection end and counts the refusal
        self._handshaking[writer] = None
        try:
            if self._tls is not None:
                await self._start_tls(channel)
            await asyncio.wait_for(channel.authenticate(self._secret), HANDSHAKE_TIMEOUT_S)
            hello = await asyncio.wait_for(channel.recv(), HANDSHAKE_TIMEOUT_S)
            if not isinstance(hello, Hello):
                raise ProtocolError(f"expected hello, got {hello.op}")
        except (TimeoutError, AuthenticationError, ProtocolError, ConnectionLost, OSError) as e:
            if not self._is_closing:  # at shutdown we close half-open connections ourselves
                self._totals.refused_peers += 1
                why = self._handshaking.get(writer) or getattr(e, "message", None) or type(e).__name__
                log.warning("refused a peer from %s: %s", peer, why)
            writer.close()
            return None
        finally:
            self._handshaking.pop(writer, None)
        mismatch = _version_mismatch(hello)
        if mismatch:
            self._totals.refused_peers += 1
            log.warning("refused worker %s:%d: %s", hello.host, hello.pid, mismatch)
            await channel.send(Refused(mismatch))
            channel.close()
            return None
        worker = WorkerConn(f"{hello.host}:{hello.pid}", hello.pid, channel,
                            compress_inputs=self._compresses_for(writer.get_extra_info("peername")[0]))
        return worker, hello

    def on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's exception handler: out of descriptors, asyncio stops accepting for a
        second and says so with a traceback; say it in one line instead (and rate-limited)."""
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            error = context.get("exception")
            self._accept_errors.say("cannot accept connections: %s; trying again in 1 s",
                                    getattr(error, "strerror", None) or error)
            return
        loop.default_exception_handler(context)

    def close(self) -> None:
        """At shutdown: abort the peers still in the handshake (no need to wait for their timeout)."""
        self._is_closing = True
        for writer in list(self._handshaking):
            writer.transport.abort()

    def _compresses_for(self, peer_host: str) -> bool:
        """Whether map inputs to a worker at `peer_host` are compressed: zstd level 1 saves ~58%
        of the bytes on a network, but over loopback it only costs CPU the workers need (on the
        200 MiB word count ~1.2 s of the coordinator's and ~0.5 s of the workers')."""
        if self._config.compress_inputs != "auto":
            return self._config.compress_inputs == "always"
        try:
            return not ipaddress.ip_address(peer_host.partition("%")[0]).is_loopback
        except ValueError:  # not an IP address (a Unix socket, say): assume a network
            return True

    async def _start_tls(self, channel: AsyncChannel) -> None:
        """Upgrade to TLS, or raise ConnectionLost naming TLS (a plain worker, a wrong CA, a timeout)."""
        assert self._tls is not None
        try:
            await channel.start_tls(self._tls, HANDSHAKE_TIMEOUT_S)
        except ssl.SSLError as e:
            raise ConnectionLost(f"TLS handshake failed: {e.reason or e}") from None
        except (TimeoutError, ConnectionAbortedError):  # asyncio aborts after ssl_handshake_timeout
            raise ConnectionLost(f"TLS handshake failed: no TLS hello within {HANDSHAKE_TIMEOUT_S:g} s "
                                 "(a worker without --tls-ca?)") from None
        except OSError as e:
            raise ConnectionLost(f"TLS handshake failed: {e.strerror or e}") from None


class _RateLimitedLog:
    """A warning said at most ACCEPT_ERRORS_PER_S times a second; the ones held back are counted
    and reported with the next one said."""

    def __init__(self) -> None:
        self._window_started = float("-inf")
        self._said_in_window = 0
        self._held_back = 0

    def say(self, text: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window_started >= 1.0:
            self._window_started, self._said_in_window = now, 0
        if self._said_in_window >= ACCEPT_ERRORS_PER_S:
            self._held_back += 1
            return
        self._said_in_window += 1
        more = f" ({self._held_back} more since the last such line)" if self._held_back else ""
        log.warning(text + "%s", *args, more)
        self._held_back = 0


def _version_mismatch(hello: Hello) -> str | None:
    """Why a worker cannot run our functions, or None."""
    if hello.python != PYTHON_VERSION:
        return f"it runs Python {hello.python}, the coordinator Python {PYTHON_VERSION} (functions travel as bytecode)"
    if hello.version != __version__:
        return f"it runs octostore {hello.version}, the coordinator octostore {__version__}"
    return None

"""Optional TLS under the frames: encryption, with the coordinator's certificate checked by workers.

TLS adds privacy only.  Authentication stays where it was: the HMAC handshake
(``handshake.py``) and the per-frame MACs (``frames.py``) run unchanged inside
the TLS stream, so a peer without the secret is refused exactly as before, and
a worker with the secret but the wrong CA never gets as far as the handshake.

- The coordinator (asyncio) upgrades each accepted connection with
  ``StreamWriter.start_tls(server_context(...))`` inside its accept handler, so
  a peer that fails the TLS handshake is logged and counted as a refused peer,
  like one that fails the HMAC handshake.  TLS 1.2 at least.
- A worker (blocking) wraps its socket in ``TlsSocket``, which verifies the
  coordinator's certificate against the CA file and the host it dialled
  (``check_hostname``; an IP address needs an IP subjectAltName).

Why ``TlsSocket`` (an ``SSLObject`` over memory BIOs) rather than
``ssl.SSLSocket``: a worker reads in its main thread while its heartbeat thread
writes.  OpenSSL does not allow one ``SSL`` object to be used by two threads at
once (its docs; TLS 1.3 post-handshake messages are processed inside
``SSL_read`` and change state ``SSL_write`` reads), and ``SSLSocket`` releases
the GIL around both calls.  ``TlsSocket`` keeps every call into the
``SSLObject`` under one lock and does the socket I/O outside it.

Layer: imports only ``errors``; ``coordinator`` and ``worker`` use it.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections.abc import Callable
from typing import TypeVar, cast

from ..errors import ConfigError

_T = TypeVar("_T")

_READ_BYTES = 256 * 1024
"""Raw bytes read from the socket per call: a few TLS records (16 KiB each)."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The coordinator's context: its certificate chain and key, TLS 1.2 or later.

    No session tickets: nobody resumes sessions, and without them no
    post-handshake message reaches a worker (see the module note)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.num_tickets = 0
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:  # SSLError is an OSError; named for the reader
        raise ConfigError(f"tls: cannot load certificate {cert} with key {key}: {_reason(e)}",
                          "give PEM files: the certificate (chain) and its unencrypted private key") from None
    return context


def client_context(ca: str) -> ssl.SSLContext:
    """A worker's context: trust the CA certificates in the PEM file `ca`, check the host name."""
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"--tls-ca {ca}: cannot load the CA certificate: {_reason(e)}",
                          "give the PEM file of the CA that signed the coordinator's certificate "
                          "(for a self-signed certificate, the certificate itself)") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def _reason(e: OSError) -> str:
    """OpenSSL's words without CPython's decoration: '[SSL] PEM lib (_ssl.c:3905)' -> 'PEM lib'."""
    text = (e.reason if isinstance(e, ssl.SSLError) else None) or e.strerror or str(e)
    return re.sub(r"^\[\w+\]\s*|\s*\(_ssl\.c:\d+\)$", "", text)


class TlsSocket:
    """A connected blocking socket speaking TLS, safe for one reading and one writing thread.

    Offers the socket calls the frames use (``sendall``, ``recv_into``,
    ``settimeout``, ``close``).  TLS errors are ``ssl.SSLError``, an ``OSError``,
    so ``frames`` turns them into ``ConnectionLost`` like any other."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        # Invariant: every call into _tls, and every read of _outgoing, holds _state_lock; whoever
        # takes bytes from _outgoing sends them before releasing _write_lock (taken first), so
        # records reach the wire in the order TLS sealed them (their sequence numbers).
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def handshake(self) -> None:
        """Run the TLS handshake; raises ssl.SSLError (e.g. SSLCertVerificationError) or OSError."""
        while True:
            try:
                self._call(self._tls.do_handshake)
                return
            except ssl.SSLWantReadError:
                if not self._receive_raw():
                    raise ConnectionAbortedError("the peer closed the connection during the TLS handshake") from None

    def sendall(self, data: bytes | memoryview) -> None:
        """Encrypt and send all of `data`."""
        view = memoryview(data)
        while view:
            view = view[self._call(self._tls.write, view):]

    def recv_into(self, buffer: memoryview) -> int:
        """Read decrypted bytes into `buffer`; 0 when the peer closed the connection."""
        while True:
            try:
                count = self._call(self._tls.read, len(buffer), buffer)  # with a buffer: a count, not bytes
                return cast(int, count)
            except ssl.SSLWantReadError:
                if not self._receive_raw():
                    return 0
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                return 0

    def settimeout(self, seconds: float | None) -> None:
        self._sock.settimeout(seconds)

    def close(self) -> None:
        self._sock.close()

    def _call(self, op: Callable[..., _T], *args: object) -> _T:
        """Run one SSLObject call, then send what it produced, in order (see the invariant)."""
        with self._write_lock:
            try:
                with self._state_lock:
                    return op(*args)
            finally:
                with self._state_lock:
                    pending = self._outgoing.read()
                if pending:
                    self._sock.sendall(pending)

    def _receive_raw(self) -> bool:
        """Feed the next bytes from the socket to TLS; False at EOF.  Blocks without any lock held."""
        data = self._sock.recv(_READ_BYTES)
        if not data:
            return False
        with self._state_lock:
            self._incoming.write(data)
        return True

"""Mutual HMAC-SHA256 authentication, before anything is unpickled.

::

    coordinator (accepts)                          worker (connects)
    1. -> "OCTO" version nonce_c          (37 B)
                                                   2. <- nonce_w  MAC(secret, "worker"|v|nonce_c|nonce_w)
    3. check MAC in constant time; on failure send "FAIL" and close
    4. -> MAC(secret, "coordinator"|v|nonce_c|nonce_w)
                                                   5. check MAC; on failure close
    both: session key = MAC(secret, "session"|nonce_c|nonce_w)

Each side proves it holds the secret with a fresh nonce from the other side, so
a recorded handshake cannot be replayed.  The role names are inside the MAC, so
one side's answer can never pass as the other's (``multiprocessing.connection``
uses the same MAC both ways; we do not).  Handshake frames are capped at 256
bytes, so an unauthenticated peer cannot make us allocate more, and the
coordinator gives a peer ``HANDSHAKE_TIMEOUT_S`` to finish.  Everything after
step 5 is a sealed frame (``frames.Sealer``) under the session key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

from ..errors import AuthenticationError, ConnectionLost, ProtocolError
from .frames import BlockingStream, read_frame, recv_frame, send_frame, write_frame

PROTOCOL_VERSION = 1
MAGIC = b"OCTO"
NONCE_BYTES = 32
HANDSHAKE_MAX_BYTES = 256
HANDSHAKE_TIMEOUT_S = 10.0
"""A peer that has not finished the handshake by then is dropped (it holds a socket, nothing more)."""

_FAIL = b"FAIL"
_WORKER_ROLE = b"worker"
_COORDINATOR_ROLE = b"coordinator"
COORDINATOR_TO_WORKER = b"C"
WORKER_TO_COORDINATOR = b"W"


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"|".join(parts), hashlib.sha256).digest()


def _session_key(secret: bytes, nonce_c: bytes, nonce_w: bytes) -> bytes:
    return _mac(secret, b"session", nonce_c, nonce_w)


async def accept_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes) -> bytes:
    """Authenticate a connecting worker (steps 1, 3, 4); return the session key."""
    version = bytes([PROTOCOL_VERSION])
    nonce_c = secrets.token_bytes(NONCE_BYTES)
    write_frame(writer, MAGIC + version + nonce_c)
    await writer.drain()
    answer = await read_frame(reader, HANDSHAKE_MAX_BYTES)
    if len(answer) != NONCE_BYTES * 2:
        raise AuthenticationError(f"handshake answer of {len(answer)} bytes, expected {NONCE_BYTES * 2}")
    nonce_w, mac = answer[:NONCE_BYTES], answer[NONCE_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, _WORKER_ROLE, version, nonce_c, nonce_w)):
        write_frame(writer, _FAIL)
        await writer.drain()
        raise AuthenticationError("peer does not hold the secret (wrong secret file?)")
    write_frame(writer, _mac(secret, _COORDINATOR_ROLE, version, nonce_c, nonce_w))
    await writer.drain()
    return _session_key(secret, nonce_c, nonce_w)


def connect_handshake(sock: BlockingStream, secret: bytes) -> bytes:
    """Authenticate to a coordinator (steps 2 and 5); return the session key."""
    hello = recv_frame(sock, HANDSHAKE_MAX_BYTES)
    if len(hello) != len(MAGIC) + 1 + NONCE_BYTES or not hello.startswith(MAGIC):
        raise ProtocolError("the server did not greet like an octostore coordinator")
    version, nonce_c = hello[len(MAGIC) : len(MAGIC) + 1], hello[len(MAGIC) + 1 :]
    if version[0] != PROTOCOL_VERSION:
        raise ProtocolError(
            f"coordinator speaks protocol {version[0]}, this worker speaks {PROTOCOL_VERSION}",
            "install the same octostore version on both machines",
        )
    nonce_w = secrets.token_bytes(NONCE_BYTES)
    send_frame(sock, nonce_w, _mac(secret, _WORKER_ROLE, version, nonce_c, nonce_w))
    try:
        proof = recv_frame(sock, HANDSHAKE_MAX_BYTES)
    except ConnectionLost:
        proof = _FAIL
    if proof == _FAIL:
        raise AuthenticationError(
            "the coordinator refused our secret",
            "copy the coordinator's $OCTO_HOME/secret here, or pass --secret-file",
        )
    if not hmac.compare_digest(proof, _mac(secret, _COORDINATOR_ROLE, version, nonce_c, nonce_w)):
        raise AuthenticationError("the coordinator does not hold our secret; refusing to work for it")
    return _session_key(secret, nonce_c, nonce_w)

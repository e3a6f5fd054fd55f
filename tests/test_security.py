"""Peers without the secret are refused, hostile frames never run code, and the coordinator keeps serving.

The end-to-end tests start `octo server JOB --workers 0`, attack it over real
TCP on 127.0.0.1 (one connection at a time, each waited for by its
"refused a peer" line on the coordinator's stderr), then let one good
`octo client` run the job, whose output must equal the oracle's exactly.
The protocol tests drive ``octostore.protocol`` directly over a real socket.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import pickle
import random
import resource
import socket
import struct
import time
from pathlib import Path

import pytest

from octostore.errors import AuthenticationError, OctoError, ProtocolError
from octostore.protocol.frames import MAC_BYTES, Opener, Sealer, parse_length, recv_frame, send_frame
from octostore.protocol.handshake import (
    COORDINATOR_TO_WORKER,
    HANDSHAKE_TIMEOUT_S,
    MAGIC,
    WORKER_TO_COORDINATOR,
    accept_handshake,
    connect_handshake,
)

from . import oracle
from .conftest import JOBS, WAIT_S, Running, octo, start_server

JOB = JOBS / "wordcount_dict.py"


# -- raw peers ---------------------------------------------------------------------------------


def frame(body: bytes) -> bytes:
    """A frame as the wire carries it: 8-byte big-endian length, then the body (no MAC)."""
    return struct.pack(">Q", len(body)) + body


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)


def read_raw_frame(sock: socket.socket) -> bytes:
    header = _read_exactly(sock, 8)
    return _read_exactly(sock, struct.unpack(">Q", header)[0])


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"the coordinator hung up after {len(data)} of {size} bytes"
        data += chunk
    return data


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send, ignoring a coordinator that already hung up (that is the point of some attacks)."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def wait_until_hung_up(sock: socket.socket) -> None:
    """Read (and drop) whatever the coordinator sends until it closes the connection."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass  # it closed with our unread bytes in its buffer: a reset, not a FIN
    finally:
        sock.close()


class Attack:
    """Runs hostile connections one by one against a server, waiting for each refusal on its stderr."""

    def __init__(self, server: Running, port: int) -> None:
        self.server, self.port, self.refused = server, port, 0

    def connect(self) -> socket.socket:
        return connect(self.port)

    def expect_refusal(self, sock: socket.socket, reason: str) -> None:
        wait_until_hung_up(sock)
        self.refused += 1
        line = self.server.wait_for("refused a peer from 127.0.0.1:", count=self.refused)[-1]
        assert reason in line, line
        assert self.server.proc.poll() is None, self.server.stderr_text()


def finish_with_a_good_client(home: Path, server: Running, port: int) -> str:
    """Run one `octo client` to the end; return the server's stdout after checking both exit codes."""
    client = octo(home, "client", f"127.0.0.1:{port}", "--wait", "5", timeout_s=60)
    assert client.returncode == 0, client.stderr
    code, out, err = server.finish()
    assert code == 0, err
    return out


# -- (a) a peer with the wrong secret -------------------------------------------------------


def test_client_with_the_wrong_secret_is_refused_and_the_job_completes(home: Path, tmp_path: Path) -> None:
    bad_secret = tmp_path / "bad-secret"
    bad_secret.write_bytes(os.urandom(32))
    bad_secret.chmod(0o600)
    server, port = start_server(home, JOB)
    try:
        bad = octo(home, "client", f"127.0.0.1:{port}", "--secret-file", str(bad_secret), "--wait", "5",
                       timeout_s=30)
        assert bad.returncode != 0, bad.stderr
        lines = bad.stderr.splitlines()
        assert lines[0] == "octo: error: the coordinator refused our secret", bad.stderr
        assert lines[1] == "hint: copy the coordinator's $OCTO_HOME/secret here, or pass --secret-file", bad.stderr
        assert "--secret-file" in lines[1]
        refusal = server.wait_for("refused a peer")[0]
        assert refusal.startswith("octo: warning: refused a peer from 127.0.0.1:"), refusal
        assert "peer does not hold the secret (wrong secret file?)" in refusal
        assert server.proc.poll() is None
        assert finish_with_a_good_client(home, server, port) == oracle.final_output(JOB)
    finally:
        server.kill()


# -- (b) a pickle that would run code ------------------------------------------------------


class _Touch:
    """Unpickling this creates `path`: proof that a frame was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (pathlib.Path.touch, (self.path,))


def test_hostile_pickle_frames_never_run(home: Path, tmp_path: Path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Touch(control)))
    assert control.exists(), "the payload must really run code when unpickled"
    pwned = tmp_path / "pwned"
    payload = pickle.dumps(_Touch(pwned))
    assert len(payload) < 256, "small enough to pass the handshake's size cap and reach the length check"
    secret_path = home / "secret"
    server, port = start_server(home, JOB)
    attack = Attack(server, port)
    try:
        # 1. right after connecting, before reading the coordinator's greeting
        sock = attack.connect()
        sock.sendall(frame(payload))
        attack.expect_refusal(sock, f"handshake answer of {len(payload)} bytes, expected 64")

        # 2. after the greeting, in place of the handshake answer
        sock = attack.connect()
        greeting = read_raw_frame(sock)
        assert greeting.startswith(MAGIC) and len(greeting) == 37, greeting
        sock.sendall(frame(payload))
        attack.expect_refusal(sock, "handshake answer of")

        # 3. a wrong answer, the coordinator's FAIL, then the pickle in a MAC-less frame
        sock = attack.connect()
        read_raw_frame(sock)
        sock.sendall(frame(os.urandom(64)))
        assert read_raw_frame(sock) == b"FAIL"
        send_quietly(sock, frame(payload))
        attack.expect_refusal(sock, "peer does not hold the secret")

        # 4. a real handshake (this test holds the secret), then the pickle with a forged MAC
        sock = attack.connect()
        connect_handshake(sock, secret_path.read_bytes())
        send_quietly(sock, frame(payload + os.urandom(MAC_BYTES)))
        attack.expect_refusal(sock, "frame MAC does not verify")

        assert not pwned.exists(), "a hostile pickle was unpickled by the coordinator"
        assert finish_with_a_good_client(home, server, port) == oracle.final_output(JOB)
        assert not pwned.exists(), "a hostile pickle was unpickled by the coordinator"
    finally:
        server.kill()


# -- (c) hostile lengths and garbage --------------------------------------------------------


def test_huge_lengths_and_garbage_are_refused_and_the_job_completes(home: Path) -> None:
    garbage = random.Random(7).randbytes(4096)
    server, port = start_server(home, JOB)
    attack = Attack(server, port)
    try:
        for length in (2**63, 2**64 - 1, 257):
            sock = attack.connect()
            sock.sendall(struct.pack(">Q", length) + b"x" * 16)
            attack.expect_refusal(sock, f"peer announced a {length}-byte frame; the limit is 256")

        sock = attack.connect()
        send_quietly(sock, garbage)
        attack.expect_refusal(sock, f"peer announced a {struct.unpack('>Q', garbage[:8])[0]}-byte frame")

        sock = attack.connect()  # a well-formed frame of garbage, the size of a real answer
        sock.sendall(frame(garbage[:64]))
        attack.expect_refusal(sock, "peer does not hold the secret")

        sock = attack.connect()  # authenticated, then a length far above the post-handshake cap
        connect_handshake(sock, (home / "secret").read_bytes())
        send_quietly(sock, struct.pack(">Q", 2**63) + garbage)
        attack.expect_refusal(sock, "peer announced a 9223372036854775808-byte frame; the limit is 268435456")

        sock = attack.connect()  # authenticated, then garbage where Hello belongs
        connect_handshake(sock, (home / "secret").read_bytes())
        send_quietly(sock, frame(garbage[:100]))
        attack.expect_refusal(sock, "frame MAC does not verify")

        sock = attack.connect()  # the peer leaves in the middle of a frame header
        sock.sendall(b"\x00\x00\x00")
        sock.shutdown(socket.SHUT_WR)
        attack.expect_refusal(sock, "peer closed the connection inside a frame header")

        assert finish_with_a_good_client(home, server, port) == oracle.final_output(JOB)
    finally:
        server.kill()


def test_a_flood_of_idle_connections_cannot_keep_a_real_worker_out(home: Path) -> None:
    """400 connections that never say a word, against a coordinator allowed 256 descriptors: it
    drops the oldest unauthenticated ones past MAX_HANDSHAKING, keeps serving, and a real client
    still joins and finishes the job; the refusals do not flood stderr."""
    server, port = start_server(home, JOB)
    idle: list[socket.socket] = []
    try:
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (256, 256))
        for _ in range(400):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT_S))
        started = time.monotonic()
        assert finish_with_a_good_client(home, server, port) == oracle.final_output(JOB)
        # Without the cap it got in too, but only once the idle ones' handshakes had timed out.
        assert time.monotonic() - started < HANDSHAKE_TIMEOUT_S
        refusals = [line for line in server.stderr_text().splitlines() if "refused a peer" in line]
        assert 1 <= len(refusals) <= 400, refusals[:5]  # one line each, at most, for the oldest dropped
        assert "Traceback" not in server.stderr_text()
    finally:
        for sock in idle:
            sock.close()
        server.kill()


# -- (d) the protocol itself --------------------------------------------------------------


def handshake_over_tcp(coordinator_secret: bytes, worker_secret: bytes) -> tuple[object, object]:
    """Run accept_handshake (asyncio) against connect_handshake (blocking, in a thread) on 127.0.0.1.

    Returns what each side returned (the session key) or raised."""

    async def main() -> tuple[object, object]:
        accepted: asyncio.Future[object] = asyncio.get_running_loop().create_future()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                accepted.set_result(await accept_handshake(reader, writer, coordinator_secret))
            except OctoError as e:
                accepted.set_result(e)
            finally:
                writer.close()

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        def worker() -> object:
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
                try:
                    return connect_handshake(sock, worker_secret)
                except OctoError as e:
                    return e

        try:
            worker_result = await asyncio.wait_for(asyncio.to_thread(worker), WAIT_S)
            coordinator_result = await asyncio.wait_for(accepted, WAIT_S)
        finally:
            server.close()
            await server.wait_closed()
        return coordinator_result, worker_result

    return asyncio.run(main())


def test_handshake_with_the_same_secret_agrees_on_a_session_key() -> None:
    secret = os.urandom(32)
    coordinator_key, worker_key = handshake_over_tcp(secret, secret)
    assert isinstance(coordinator_key, bytes) and len(coordinator_key) == 32
    assert coordinator_key == worker_key


def test_handshake_with_mismatched_secrets_fails_on_both_sides() -> None:
    coordinator, worker = handshake_over_tcp(os.urandom(32), os.urandom(32))
    assert isinstance(coordinator, AuthenticationError), coordinator
    assert coordinator.message == "peer does not hold the secret (wrong secret file?)"
    assert isinstance(worker, AuthenticationError), worker
    assert worker.message == "the coordinator refused our secret"
    assert worker.hint and "--secret-file" in worker.hint


def test_worker_refuses_a_coordinator_that_does_not_hold_the_secret() -> None:
    """A fake coordinator that greets correctly but cannot prove it holds the secret."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        worker_sock = socket.create_connection(listener.getsockname(), timeout=WAIT_S)
        fake, _ = listener.accept()
        with worker_sock, fake:
            fake.settimeout(WAIT_S)
            send_frame(fake, MAGIC + bytes([1]) + os.urandom(32))
            send_frame(fake, os.urandom(32))  # sent early: a "proof" made without the secret
            with pytest.raises(AuthenticationError) as raised:
                connect_handshake(worker_sock, os.urandom(32))
            assert raised.value.message == "the coordinator does not hold our secret; refusing to work for it"
            assert len(recv_frame(fake, 256)) == 64  # the worker's answer arrived, nothing else matters


def test_worker_refuses_a_peer_that_does_not_greet_like_a_coordinator() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        worker_sock = socket.create_connection(listener.getsockname(), timeout=WAIT_S)
        fake, _ = listener.accept()
        with worker_sock, fake:
            send_frame(fake, b"HTTP/1.1 200 OK\r\n")
            with pytest.raises(ProtocolError) as raised:
                connect_handshake(worker_sock, os.urandom(32))
            assert raised.value.message == "the server did not greet like an octostore coordinator"


def sealed(sealer: Sealer, payload: bytes) -> bytes:
    return payload + sealer.seal(payload)


def test_sealed_frames_open_in_order() -> None:
    key = os.urandom(32)
    sealer, opener = Sealer(key, WORKER_TO_COORDINATOR), Opener(key, WORKER_TO_COORDINATOR)
    for payload in (b"first", b"", b"third" * 1000):
        assert bytes(opener.open(sealed(sealer, payload))) == payload


@pytest.mark.parametrize("attack", ["altered", "replayed", "reordered", "reflected", "other key", "truncated"])
def test_tampered_sealed_frame_is_refused(attack: str) -> None:
    key = os.urandom(32)
    sealer, opener = Sealer(key, WORKER_TO_COORDINATOR), Opener(key, WORKER_TO_COORDINATOR)
    first, second = sealed(sealer, b"payload one"), sealed(sealer, b"payload two")
    if attack == "altered":
        body = bytes([first[0] ^ 1]) + first[1:]
    elif attack == "replayed":
        assert bytes(opener.open(first)) == b"payload one"
        body = first
    elif attack == "reordered":
        body = second
    elif attack == "reflected":  # a frame the coordinator sent, sent back to it
        body = sealed(Sealer(key, COORDINATOR_TO_WORKER), b"payload one")
    elif attack == "other key":
        body = sealed(Sealer(os.urandom(32), WORKER_TO_COORDINATOR), b"payload one")
    else:
        body = first[:MAC_BYTES - 1]
    with pytest.raises(ProtocolError) as raised:
        opener.open(body)
    if attack == "truncated":
        assert raised.value.message == f"frame of {MAC_BYTES - 1} bytes is too short to carry a MAC"
    else:
        assert raised.value.message == "frame MAC does not verify (tampered, replayed or out of order)"


def test_frame_length_is_checked_before_anything_is_read() -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_length(struct.pack(">Q", 2**63), 256)
    assert raised.value.message == "peer announced a 9223372036854775808-byte frame; the limit is 256"
    assert parse_length(struct.pack(">Q", 256), 256) == 256

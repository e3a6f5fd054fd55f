"""Fencing: output from a worker that no longer owns its attempt never reaches the results.

Every test runs `octo server` on the canary job (tests/jobs/canary.py, slowed by
$OCTO_TEST_PAUSE_S so tasks are in flight long enough to interfere with) over real
TCP on 127.0.0.1, lets something go wrong on one worker connection while a real
`octo client` does the work, and compares the job's stdout with the oracle's
exactly: the canary turns any lost map output into a missing ("rec", i) or a low
("all",) count, and any output counted twice into a 2 or a high ("all",) count.

The peers that misbehave are real: a TCP proxy thread that cuts a worker's
connection inside a frame, a fake worker speaking the real protocol with the real
secret (``SyncChannel``), and an `octo client` frozen with SIGSTOP.  The forged
Segments carry *well-formed* blocks (the real output of the fake worker's own
task, computed with the job's own functions), so storing or committing one would
silently double-count records instead of crashing the reduce; a block of random
bytes rides along too.  Readiness is always a line on the coordinator's stderr
(`-vv` adds "map task N attempt M: assigned to HOST:PID"); nothing sleeps, and
the lease tests wait for the coordinator's "silent for" line of a 1.5 s lease.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import signal
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard

from octostore import __version__
from octostore.config import MAX_FRAME_BYTES
from octostore.errors import ConnectionLost
from octostore.job import unpack_functions
from octostore.protocol.channel import SyncChannel
from octostore.protocol.frames import HEADER_BYTES, MAC_BYTES
from octostore.protocol.messages import (
    PYTHON_VERSION,
    Hello,
    Input,
    InputEnd,
    MapTask,
    Ready,
    Segment,
    TaskDone,
    Welcome,
)
from octostore.tasks import TaskKind
from octostore.worker.mapside import MapOutput

from . import oracle
from .conftest import JOBS, WAIT_S, Running, start_client, start_octo

CANARY = JOBS / "canary.py"
SLOW = {"OCTO_TEST_PAUSE_S": "0.01"}  # 20 records per map task: ~0.2 s of mapfn per task
HOST = socket.gethostname()  # what an `octo client` on this machine calls itself: HOST:PID
CANARY_ARGS = ("--map-tasks", "20", "--partitions", "4", "--progress", "off")


def serve_canary(home: Path, *args: str, verbose: bool = False) -> tuple[Running, int]:
    """Start `octo [-vv] server canary.py --workers 0` on 127.0.0.1:0; return it once it listens, and its port."""
    flags = ["-vv"] if verbose else []
    server = Running(start_octo(home, *flags, "server", str(CANARY), "--bind", "127.0.0.1", "--port", "0",
                                "--workers", "0", *CANARY_ARGS, *args, **SLOW))
    try:
        line = server.wait_for("waiting for workers")[0]
        match = re.search(r"octo client 127\.0\.0\.1:(\d+)`", line)
        assert match, line
        return server, int(match.group(1))
    except BaseException:
        server.kill()
        raise


def finish_exactly(server: Running) -> str:
    """Wait for the server; check exit 0 and the oracle's exact output; return its stderr."""
    code, out, err = server.finish(timeout_s=60)
    assert code == 0, err
    assert out == oracle.final_output(CANARY), err
    return err


def worker_lost_line(name: str, why: str) -> str:
    return f"octo: warning: worker {name} lost: {why}"


def task_rerun_line(task: int, attempt: int, name: str) -> str:
    return f"map task {task} attempt {attempt}: its worker {name} was lost; the task runs again"


# -- a proxy that cuts one worker's connection inside a frame -------------------------------------


class CuttingProxy:
    """Forwards one worker connection to the coordinator, then cuts it in the middle of a Segment frame.

    Worker->coordinator bytes are forwarded a whole frame at a time: an 8-byte big-endian
    length, then the body (msgpack payload + 32-byte MAC; sealed, not encrypted, so the op
    is readable).  Once `after_done` TaskDone frames have gone through, the proxy waits for
    the `nth` Segment frame after them, forwards its header and the first half of its body,
    sends FIN upstream and closes the worker's side: the coordinator is left holding part of
    the attempt's output (the earlier Segments) and half a frame.  Coordinator->worker bytes
    are forwarded untouched until the coordinator closes its end.
    """

    def __init__(self, upstream_port: int, after_done: int = 2, nth: int = 2) -> None:
        self.upstream_port, self.after_done, self.nth = upstream_port, after_done, nth
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut: dict[str, int] | None = None  # task, attempt, length, sent: the frame it cut
        self.cut_done = threading.Event()
        self.error: BaseException | None = None
        self._sockets: list[socket.socket] = [self.listener]
        self._thread = threading.Thread(target=self._run, name="cutting-proxy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.listener.settimeout(WAIT_S)
            worker, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=WAIT_S)
            self._sockets += [worker, upstream]
            for sock in (worker, upstream):
                sock.settimeout(WAIT_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._downstream, args=(upstream, worker), daemon=True).start()
            self._upstream(worker, upstream)
        except Exception as e:  # any failure here is the test's to report: it reads self.error
            self.error = e
        finally:
            self.cut_done.set()

    def _upstream(self, worker: socket.socket, upstream: socket.socket) -> None:
        done = segments = 0
        first = True  # the handshake answer: a frame, but not msgpack
        while True:
            header = _recv_exactly(worker, HEADER_BYTES)
            length = struct.unpack(">Q", header)[0]
            body = _recv_exactly(worker, length)
            op = None if first else msgpack.unpackb(body[:-MAC_BYTES])
            first = False
            if op is not None and op[0] == Segment.op and done >= self.after_done:
                segments += 1
                if segments == self.nth:
                    self._cut(worker, upstream, header, body, task=op[1], attempt=op[2])
                    return
            upstream.sendall(header + body)
            if op is not None and op[0] == TaskDone.op:
                done += 1

    def _cut(self, worker: socket.socket, upstream: socket.socket, header: bytes, body: bytes, *,
             task: int, attempt: int) -> None:
        sent = len(body) // 2
        upstream.sendall(header + body[:sent])
        upstream.shutdown(socket.SHUT_WR)  # FIN after half a frame: the coordinator reads a torn frame
        worker.shutdown(socket.SHUT_RDWR)
        worker.close()
        self.cut = {"task": task, "attempt": attempt, "length": len(body), "sent": sent}

    @staticmethod
    def _downstream(upstream: socket.socket, worker: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                worker.sendall(data)
        except OSError:
            pass  # the worker side is closed after the cut; keep nothing
        finally:
            upstream.close()

    def close(self) -> None:
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
        self._thread.join(WAIT_S)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"the worker closed its connection after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def test_a_worker_connection_cut_inside_a_segment_frame_loses_only_that_attempt(home: Path) -> None:
    """The proxied worker commits two map tasks, then its link dies halfway through a Segment frame
    of its third attempt (one Segment of that attempt already stored).  The coordinator must call
    the torn frame a lost worker, drop the half-written attempt and run its task again on the
    direct client, while the two committed tasks count exactly once."""
    server, port = serve_canary(home)
    proxy = CuttingProxy(port)
    processes = [server]
    try:
        proxied = start_client(home, proxy.port)
        processes.append(proxied)
        name = f"{HOST}:{proxied.proc.pid}"
        server.wait_for(f"worker {name} joined")
        processes.append(start_client(home, port))
        assert proxy.cut_done.wait(WAIT_S), server.stderr_text()
        assert proxy.error is None and proxy.cut is not None, (proxy.error, server.stderr_text())
        cut = proxy.cut
        server.wait_for(worker_lost_line(name, f"peer closed the connection after {cut['sent']} of "
                                               f"{cut['length']} bytes"))
        server.wait_for(task_rerun_line(cut["task"], cut["attempt"], name))
        err = finish_exactly(server)
        assert "2 connected" in err
        code, _, client_err = proxied.finish()
        assert code != 0, "the cut client cannot have finished the job"
        assert "octo: error:" in client_err, client_err
        code, _, client_err = processes[2].finish()
        assert code == 0, client_err
    finally:
        for process in processes:
            process.kill()
        proxy.close()


# -- a fake worker with the real secret --------------------------------------------------------


class FakeWorker:
    """A worker that speaks the real protocol (handshake, sealed frames) and says whatever the test wants."""

    def __init__(self, home: Path, port: int) -> None:
        self.name = f"fake-worker:{os.getpid()}"
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.channel = SyncChannel(sock, MAX_FRAME_BYTES)
        self.channel.authenticate((home / "secret").read_bytes())
        self.channel.send(Hello(__version__, PYTHON_VERSION, "fake-worker", os.getpid()))
        self.welcome = self.channel.recv()
        assert isinstance(self.welcome, Welcome), self.welcome

    def take_map_task(self) -> tuple[MapTask, list[tuple[Any, Any]]]:
        """Send Ready; return the MapTask and its input records (read up to InputEnd)."""
        self.channel.send(Ready())
        task = self.channel.recv()
        assert isinstance(task, MapTask), task
        items: list[tuple[Any, Any]] = []
        decompressor = zstandard.ZstdDecompressor()
        while not isinstance(msg := self.channel.recv(), InputEnd):
            assert isinstance(msg, Input), msg
            items += pickle.loads(decompressor.decompress(msg.items) if msg.compressed else msg.items)
        return task, items

    def map_blocks(self, items: list[tuple[Any, Any]]) -> dict[int, list[bytes]]:
        """The real map output of `items` (the job's own functions and settings): partition -> blocks."""
        settings = self.welcome.settings
        blocks: dict[int, list[bytes]] = {}
        output = MapOutput(unpack_functions(self.welcome.functions), settings["partitions"],
                           buffer_bytes=settings["map_buffer_bytes"], block_bytes=settings["block_bytes"],
                           zstd_level=settings["zstd_level"],
                           emit=lambda partition, _run, bs: blocks.setdefault(partition, []).extend(bs))
        for key, value in items:
            output.map_record(key, value)
        output.spill()
        assert blocks, "the canary's map output is never empty"
        return blocks

    def send_quietly(self, msg: Any) -> bool:
        """Send; return False if the connection is already gone (the coordinator may have closed it)."""
        try:
            self.channel.send(msg)
            return True
        except ConnectionLost:
            return False

    def close(self) -> None:
        self.channel.close()


GARBAGE = random.Random(11).randbytes(4096)
STATS = {"records_in": 20, "pairs_out": 60}


def forged_segments(task: int, attempt: int, blocks: dict[int, list[bytes]]) -> list[Segment]:
    """Segments of `task`/`attempt` carrying duplicated real output, then one of random bytes."""
    return [*(Segment(task, attempt, p, 0, bs) for p, bs in sorted(blocks.items())),
            Segment(task, attempt, 0, 1, [GARBAGE])]


def test_results_for_a_wrong_epoch_another_attempt_or_an_unassigned_task_are_refused(home: Path) -> None:
    """(a) A fake worker holds map task 0 attempt 1, then sends, in order:

    - TaskDone for its own task and attempt with epoch welcome.epoch - 1: committing it would
      make task 0 DONE with no output, and its 20 records would be missing;
    - Segments for task 0 attempt 2 (not yet handed out) with a copy of task 0's real output
      and a random block: storing them under attempt 2, which the real client runs next,
      would count task 0 twice (or crash the reduce on the random block);
    - Segments and TaskDone (right epoch) for task 19 attempt 1, which nobody holds yet:
      committing it would leave task 19's records out and its real attempt refused;

    then disconnects.  Exact output proves all three were dropped and task 0 ran again."""
    server, port = serve_canary(home)
    fake = FakeWorker(home, port)
    processes = [server]
    try:
        task, items = fake.take_map_task()
        assert (task.task, task.attempt, task.epoch) == (0, 1, fake.welcome.epoch)
        blocks = fake.map_blocks(items)
        processes.append(start_client(home, port))
        fake.channel.send(TaskDone(TaskKind.MAP, task.task, task.attempt, fake.welcome.epoch - 1, STATS))
        for segment in forged_segments(task.task, task.attempt + 1, blocks):
            fake.channel.send(segment)
        for segment in forged_segments(19, 1, blocks):
            fake.channel.send(segment)
        fake.channel.send(TaskDone(TaskKind.MAP, 19, 1, fake.welcome.epoch, STATS))
        fake.close()
        # Once it is lost, every forged frame was read and handled (or the coordinator hung up on it).
        server.wait_for(worker_lost_line(fake.name, ""))
        server.wait_for(task_rerun_line(0, 1, fake.name))
        finish_exactly(server)
        code, _, client_err = processes[1].finish()
        assert code == 0, client_err
    finally:
        fake.close()
        for process in processes:
            process.kill()


def test_a_late_task_done_after_the_lease_ran_out_is_refused(home: Path) -> None:
    """(b) A fake worker takes map task 0 and then says nothing, not even heartbeats, past the
    1.5 s lease.  After the coordinator logs it lost ("silent for"), it sends its task's real
    output and a well-formed TaskDone (right epoch, right attempt).  The coordinator has closed
    the connection, so the sends fail or land nowhere; the fake worker reads EOF; the real client
    runs task 0 again, and exact output proves the late result was not counted as well."""
    server, port = serve_canary(home, "--lease", "1.5")
    fake = FakeWorker(home, port)
    processes = [server]
    try:
        task, items = fake.take_map_task()
        assert (task.task, task.attempt) == (0, 1)
        blocks = fake.map_blocks(items)
        processes.append(start_client(home, port))
        server.wait_for(worker_lost_line(fake.name, "silent for"), timeout_s=15)
        server.wait_for(task_rerun_line(0, 1, fake.name))
        late = [*(Segment(task.task, task.attempt, p, 0, bs) for p, bs in sorted(blocks.items())),
                TaskDone(TaskKind.MAP, task.task, task.attempt, task.epoch, STATS)]
        for msg in late:
            fake.send_quietly(msg)
        with pytest.raises(ConnectionLost):
            fake.channel.recv()  # the coordinator hung up: nothing more for this worker
        assert server.proc.poll() is None, "the late result must race with a running job"
        finish_exactly(server)
        code, _, client_err = processes[1].finish()
        assert code == 0, client_err
    finally:
        fake.close()
        for process in processes:
            process.kill()


def test_results_for_another_workers_attempt_are_refused(home: Path) -> None:
    """(c) Fencing by connection: a fake worker holding map task 0 sends Segments (a copy of task
    0's real output) and a TaskDone, right epoch, for the attempt the real client holds right
    now (seen on -vv stderr; the client is frozen meanwhile, so it cannot commit first).  Only
    the worker that holds an attempt may add output to it or commit it; accepting them counts
    task 0's records twice and drops the real client's records for that task (its own TaskDone
    is then refused as stale)."""
    server, port = serve_canary(home, verbose=True)
    fake = FakeWorker(home, port)
    processes = [server]
    try:
        task, items = fake.take_map_task()
        blocks = fake.map_blocks(items)
        client = start_client(home, port)
        processes.append(client)
        line = server.wait_for(f"attempt 1: assigned to {HOST}:{client.proc.pid}")[0]
        os.kill(client.proc.pid, signal.SIGSTOP)
        match = re.match(r"map task (\d+) attempt 1:", line)
        assert match, line
        other = int(match.group(1))
        assert other != task.task
        for segment in forged_segments(other, 1, blocks)[:-1]:
            fake.channel.send(segment)
        fake.channel.send(TaskDone(TaskKind.MAP, other, 1, fake.welcome.epoch, STATS))
        fake.close()
        server.wait_for(worker_lost_line(fake.name, ""))  # every forged frame was handled (or refused)
        os.kill(client.proc.pid, signal.SIGCONT)
        finish_exactly(server)
        code, _, client_err = client.finish()
        assert code == 0, client_err
    finally:
        fake.close()
        for process in processes:
            process.kill()


# -- a frozen `octo client` whose task was taken over ------------------------------------------


def test_a_frozen_client_resumed_after_losing_its_lease_adds_nothing(home: Path) -> None:
    """Two `octo client`s; one is frozen with SIGSTOP in the middle of its second map task (its
    first is committed and must count once), loses its 1.5 s lease, and is resumed with SIGCONT
    the moment the coordinator logs it lost, while the other client is still mapping.  It wakes
    up inside mapfn and sends that attempt's Segments and TaskDone on a connection the
    coordinator has closed; exact output proves none of it counted and the task ran again."""
    server, port = serve_canary(home, "--lease", "1.5", verbose=True)
    processes = [server]
    try:
        frozen, other = start_client(home, port), start_client(home, port)
        processes += [frozen, other]
        name = f"{HOST}:{frozen.proc.pid}"
        server.wait_for(" joined ", count=2)
        server.wait_for(f": assigned to {name}", count=2)
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        server.wait_for(worker_lost_line(name, "silent for"), timeout_s=15)
        os.kill(frozen.proc.pid, signal.SIGCONT)
        assert server.proc.poll() is None, "the late output must race with a running job"
        server.wait_for(f"its worker {name} was lost; the task runs again")
        err = finish_exactly(server)
        assert "lease 1.5 s" in err
        code, _, client_err = frozen.finish()
        assert code != 0, "the frozen client's connection was closed under it"
        assert "octo: error:" in client_err, client_err
        code, _, client_err = other.finish()
        assert code == 0, client_err
    finally:
        for process in processes:
            process.kill()  # SIGKILL ends a stopped process too

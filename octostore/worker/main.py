"""A worker's life: connect (retrying while the coordinator starts), authenticate, pull tasks.

The loop reads as its steps: send Ready, receive a task (or Shutdown), run it,
report TaskDone or TaskFailed, repeat.  A task's inputs arrive as a stream of
messages ended by InputEnd; the worker always reads to InputEnd, even after
user code failed, so the connection stays in step.

User code runs in this thread.  An exception in it becomes TaskFailed with the
user's own traceback (octostore frames trimmed) and a first line that names
the function and the key; the coordinator decides whether to retry.

Where map output goes depends on the shuffle mode (shuffle.py: Segment
messages, or in mode 'paths' one file in the shared folder reported with
MapFile).  Inputs say what they are: Input (pairs) or MapPaths (files to
read) for a map task, RunBlocks or RunRanges (byte ranges of shared map
files) for a reduce task.  A file it
cannot read or write fails the attempt (retried), naming the path.

A local worker (``python -m octostore.worker``) also exits as soon as its stdin closes:
the coordinator holds the other end of that pipe, so when the coordinator
dies, for any reason including ``kill -9``, its workers die too.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import zstandard

from .. import __version__
from ..allocator import return_freed_memory
from ..errors import ConnectionLost, DamagedBlock, JobError, ProtocolError, ReduceFailed, UsageError
from ..files import read_file
from ..job import WorkerFunctions, format_user_traceback, unpack_functions
from ..protocol.channel import SyncChannel
from ..protocol.handshake import HANDSHAKE_TIMEOUT_S
from ..protocol.messages import (
    PYTHON_VERSION,
    Heartbeat,
    Hello,
    Input,
    InputEnd,
    MapPaths,
    MapTask,
    Ready,
    ReduceTask,
    Refused,
    Results,
    RunBlocks,
    RunRanges,
    Shutdown,
    TaskDone,
    TaskFailed,
    Welcome,
)
from ..protocol.tls import client_context
from ..settings import WorkerSettings
from ..tasks import TaskKind
from .mapside import MapOutput
from .reduceside import ReceivedRuns, reduce_runs
from .shuffle import MapOutputSink, map_output_for

log = logging.getLogger(__name__)
_T = TypeVar("_T")

PREFETCH_AFTER_BYTES = 256 * 1024
"""After an input message this large, the next is received on a thread while this one is worked on."""


def connect(address: tuple[str, int], wait_s: float) -> socket.socket:
    """Connect to the coordinator, retrying for up to `wait_s` seconds while it starts."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    while True:
        try:
            sock = socket.create_connection(address, timeout=10)
        except OSError as e:
            if time.monotonic() + delay > deadline:
                raise UsageError(
                    f"cannot reach the coordinator at {address[0]}:{address[1]} after {wait_s:g} s: {e.strerror or e}",
                    "is `octo server` running there? check the address, the port and any firewall",
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock


GC_YOUNG_THRESHOLD = 50_000
"""Allocations between two young-generation collections in a worker (CPython's default is 700).
A map task allocates one tuple per pair its mapfn yields, millions of short-lived objects, none
in a cycle: at 700 the collector ran ~1,300 times over 8 corpus files, and the map side of those
files took 2-8% less process time at 50,000 (best of 3 to 7, in four runs).  Cyclic garbage is
still collected, just less often."""


def run_worker(address: tuple[str, int], secret: bytes, *, wait_s: float = 30.0, max_frame_bytes: int,
               tls_ca: str | None = None) -> None:
    """Work for the coordinator at `address` until it says the job is over.

    With `tls_ca` (a PEM file) the connection is TLS, and the coordinator's
    certificate must verify against it for the host name or IP in `address`."""
    context = client_context(tls_ca) if tls_ca else None  # a bad CA file is a usage error: check before dialling
    return_freed_memory()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    channel = SyncChannel(connect(address, wait_s), max_frame_bytes)
    try:
        _open_channel(channel, address, secret, context, tls_ca)
        channel.send(Hello(__version__, PYTHON_VERSION, socket.gethostname(), os.getpid()))
        welcome = channel.recv()
        if isinstance(welcome, Refused):
            raise UsageError(f"the coordinator at {address[0]}:{address[1]} refused this worker: {welcome.reason}",
                             "install the same Python and octostore versions on every machine")
        if not isinstance(welcome, Welcome):
            raise ProtocolError(f"expected welcome, got {welcome.op}")
        log.info("worker %d: joined job %s at %s:%d", os.getpid(), welcome.job_id, *address)
        settings = _read_settings(welcome)
        functions = unpack_functions(welcome.functions)
        stop = _start_heartbeats(channel, settings.heartbeat_every_s)
        try:
            Worker(channel, functions, settings).serve()
        finally:
            stop.set()
    finally:
        channel.close()


def _open_channel(channel: SyncChannel, address: tuple[str, int], secret: bytes, context: ssl.SSLContext | None,
                  tls_ca: str | None) -> None:
    """Start TLS (with `context`), then authenticate; both bounded in time, so a mismatch is an error, not a hang.

    A plain worker and a TLS coordinator each wait for the other to speak first
    (the greeting, the ClientHello) until the coordinator drops the peer after
    HANDSHAKE_TIMEOUT_S; the timeout here is longer, so that drop is what we see."""
    where = f"{address[0]}:{address[1]}"
    channel.settimeout(HANDSHAKE_TIMEOUT_S * 2)
    if context is not None:
        _start_tls(channel, context, address, tls_ca)
    try:
        channel.authenticate(secret)
    except ConnectionLost as e:
        if context is not None:
            raise
        raise ConnectionLost(f"the coordinator at {where} closed the connection before its greeting "
                             f"({e.message}); if it uses TLS (tls.enabled), connect with --tls-ca",
                             "pass --tls-ca with the CA that signed the coordinator's tls.cert") from None
    channel.settimeout(None)


def _start_tls(channel: SyncChannel, context: ssl.SSLContext, address: tuple[str, int], tls_ca: str | None) -> None:
    """Run the TLS handshake, verifying the coordinator's certificate; UsageError if it fails."""
    where = f"{address[0]}:{address[1]}"
    try:
        channel.start_tls(context, server_hostname=address[0])
    except ssl.SSLCertVerificationError as e:
        raise UsageError(f"TLS: the certificate of the coordinator at {where} does not verify against "
                         f"--tls-ca {tls_ca}: certificate verify failed ({e.verify_message})",
                         "pass the CA that signed the coordinator's tls.cert; the certificate must name the "
                         "address you dial (an IP address needs an IP subjectAltName)") from None
    except ssl.SSLError as e:
        raise UsageError(f"TLS handshake with the coordinator at {where} failed: {e.reason or e}; "
                         "does it run without TLS?",
                         "connect without --tls-ca, or turn TLS on at the coordinator (tls.enabled: true)") from None
    except OSError as e:
        raise UsageError(f"TLS handshake with the coordinator at {where} failed: {e.strerror or e}",
                         "check that the coordinator runs with TLS (tls.enabled: true) and is still up") from None


def _start_heartbeats(channel: SyncChannel, every_s: float) -> threading.Event:
    """Send Heartbeat every `every_s` from a thread, so a long mapfn does not look like a dead worker.

    A worker frozen with SIGSTOP sends nothing and loses its lease, as it should.
    If sending fails, the connection is gone; the main thread finds out on its
    next message (a local worker's stdin watchdog ends it sooner)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                channel.send(Heartbeat())
            except ConnectionLost:
                return

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()
    return stop


def watch_stdin() -> None:
    """Exit the process when stdin reaches EOF (the coordinator that started us is gone)."""

    def wait_for_eof() -> None:
        # os.read on the raw fd, not sys.stdin.buffer: a daemon thread blocked inside
        # the buffered reader holds its lock and aborts interpreter shutdown.
        while os.read(0, 65536):
            pass
        os._exit(0)

    threading.Thread(target=wait_for_eof, name="stdin-watchdog", daemon=True).start()


class Worker:
    """Runs the tasks a coordinator hands out over one channel."""

    def __init__(self, channel: SyncChannel, functions: WorkerFunctions, settings: WorkerSettings) -> None:
        self.channel = channel
        self.functions = functions
        self.settings = settings
        self._decompressor = zstandard.ZstdDecompressor()
        self._input_bytes = 0  # of the current task's Input messages, for its stats (progress shows them)

    def serve(self) -> None:
        while True:
            self.channel.send(Ready())
            msg = self.channel.recv()
            if isinstance(msg, Shutdown):
                log.info("worker %d: coordinator says %s", os.getpid(), msg.reason)
                return
            if isinstance(msg, MapTask):
                self.run_map_task(msg)
            elif isinstance(msg, ReduceTask):
                self.run_reduce_task(msg)
            else:
                raise ProtocolError(f"expected a task, got {msg.op}")

    # -- map ------------------------------------------------------------------------------

    def run_map_task(self, task: MapTask) -> None:
        self._input_bytes = 0
        sink = map_output_for(self.settings, self.channel, task)
        failure = self._guard_file(task, sink.open, sink)
        output = MapOutput(
            self.functions, self.settings.partitions, buffer_bytes=self.settings.map_buffer_bytes,
            block_bytes=self.settings.block_bytes, zstd_level=self.settings.zstd_level, emit=sink.add,
        )
        for items in self._inputs():
            if failure is None:
                failure = self._map_items(task, output, items)
            del items  # not alive while the next batch is received
        if failure is None:
            failure = self._guard(task, TaskKind.MAP, "combinefn", None, output.spill)
        if failure is None:
            failure = self._guard_file(task, sink.finish, sink)
        if failure is not None:
            sink.abort()
            self.channel.send(failure)
            return
        stats = {"records_in": output.records_in, "pairs_out": output.pairs_out, "runs": output.runs,
                 "bytes_in": self._input_bytes, "bytes_out": sink.bytes_out, "peak_rss_bytes": _peak_rss_bytes()}
        self.channel.send(TaskDone(TaskKind.MAP, task.task, task.attempt, task.epoch, stats), flush=False)  # with Ready

    def _guard_file(self, task: MapTask, step: Callable[[], None], sink: MapOutputSink) -> TaskFailed | None:
        """Open or finish the map output; a file that cannot be written fails the attempt."""
        try:
            step()
        except OSError as e:
            return self._file_failed(task, TaskKind.MAP, f"cannot write map output to {sink.where}", e)
        return None

    def _map_items(self, task: MapTask, output: MapOutput,
                   items: list[tuple[Any, Any]] | MapPaths) -> TaskFailed | None:
        if isinstance(items, MapPaths):
            return self._map_files(task, output, items)
        for key, value in items:
            failure = self._guard(task, TaskKind.MAP, "mapfn", key, output.map_record, key, value)
            if failure is not None:
                return failure
        return None

    def _map_files(self, task: MapTask, output: MapOutput, msg: MapPaths) -> TaskFailed | None:
        """Read each file as the job's octostore.files() source would, and map it."""
        for path in msg.paths:
            try:
                text = read_file(path, msg.encoding, msg.errors)
            except OSError as e:
                return self._file_failed(task, TaskKind.MAP, f"cannot read input file {path}", e)
            failure = self._guard(task, TaskKind.MAP, "mapfn", path, output.map_record, path, text)
            if failure is not None:
                return failure
        return None

    def _inputs(self) -> Iterator[Any]:
        """Yield the payload of each Input (or RunBlocks, RunRanges, MapPaths) message until InputEnd.

        After a large message, the next one is received (and an Input unpickled) on
        a helper thread while the caller maps this one: socket reads, the MAC check
        and zstd release the GIL.  Without it a worker waited 15-30 ms for each
        4 MiB batch of the word count, ~5% of its map phase.  The cost is one more
        batch in memory; small messages (tiny tasks) skip the thread hop."""
        receive = self._next_input
        while True:
            payload, size = receive()
            if payload is _INPUT_END:
                return
            receive = _in_background(self._next_input) if size >= PREFETCH_AFTER_BYTES else self._next_input
            yield payload
            del payload  # dropped before waiting for the next one

    def _next_input(self) -> tuple[Any, int]:
        """The next input message's payload (or _INPUT_END) and its size on the wire."""
        msg = self.channel.recv()
        if isinstance(msg, InputEnd):
            return _INPUT_END, 0
        if isinstance(msg, Input):
            size = len(msg.items)
            self._input_bytes += size
            data, compressed = msg.items, msg.compressed
            del msg  # the pickle is not kept alive while its items are mapped
            return pickle.loads(self._decompressor.decompress(data) if compressed else data), size
        if isinstance(msg, RunBlocks):
            return msg, sum(map(len, msg.blocks))
        if isinstance(msg, (RunRanges, MapPaths)):
            return msg, 0
        raise ProtocolError(f"expected task input, got {msg.op}")

    # -- reduce ---------------------------------------------------------------------------

    def run_reduce_task(self, task: ReduceTask) -> None:
        received = ReceivedRuns(task.runs)
        try:
            failure = self._receive_runs(task, received)
            sent = [0]

            def emit(blocks: list[bytes]) -> None:
                sent[0] += sum(len(b) for b in blocks)
                self.channel.send(Results(task.task, task.attempt, blocks))

            keys = [0]

            def reduce() -> None:
                block_bytes, zstd_level = self.settings.block_bytes, self.settings.zstd_level
                runs = received.runs(fan_in=self.settings.merge_fan_in, block_bytes=block_bytes,
                                     zstd_level=zstd_level)
                keys[0] = reduce_runs(self.functions, runs, block_bytes=block_bytes, zstd_level=zstd_level,
                                      values_memory_bytes=self.settings.values_memory_bytes, emit=emit)

            if failure is None:
                failure = self._guard(task, TaskKind.REDUCE, "reducefn", None, reduce)
        finally:
            received.close()
        if failure is not None:
            self.channel.send(failure)
            return
        stats = {"bytes_in": received.bytes, "keys": keys[0], "bytes_out": sent[0], "peak_rss_bytes": _peak_rss_bytes()}
        done = TaskDone(TaskKind.REDUCE, task.task, task.attempt, task.epoch, stats)
        self.channel.send(done, flush=False)  # with Ready

    def _receive_runs(self, task: ReduceTask, received: ReceivedRuns) -> TaskFailed | None:
        """Take the runs' blocks (payload) or their places in the shared map files (paths), to InputEnd."""
        failure: TaskFailed | None = None
        for msg in self._inputs():
            if isinstance(msg, RunBlocks):
                received.add(msg.run, msg.blocks)
            elif failure is None:
                try:
                    received.add_ranges(msg.run, msg.path, msg.ranges)
                except OSError as e:
                    failure = self._file_failed(task, TaskKind.REDUCE, f"cannot read map output file {msg.path}", e)
        return failure

    # -- failures -------------------------------------------------------------------------

    def _guard(self, task: MapTask | ReduceTask, kind: str, fn_name: str, key: Any, fn: Any,
               *args: Any) -> TaskFailed | None:
        """Run `fn`; turn an exception from user code into a TaskFailed message."""
        try:
            fn(*args)
        except JobError as e:
            message = e.message + (f"\nhint: {e.hint}" if e.hint else "")
            return TaskFailed(kind, task.task, task.attempt, task.epoch, message, "", True)  # a contract error
        except ReduceFailed as e:
            return self._failed(task, kind, "reducefn", e.key, e.cause)
        except DamagedBlock as e:  # not the user's bug, and the same bytes would fail again: no retry
            message = (f"{kind} task {task.task} (attempt {task.attempt}): its input from the map tasks is "
                       f"damaged ({e.message})\nhint: the map output on disk changed after it was written; "
                       "run the job again under a new id")
            return TaskFailed(kind, task.task, task.attempt, task.epoch, message, "", True)
        except Exception as e:  # user code: mapfn, combinefn, partitionfn
            return self._failed(task, kind, fn_name, key, e)
        return None

    def _failed(self, task: MapTask | ReduceTask, kind: str, fn_name: str, key: Any, e: BaseException) -> TaskFailed:
        where = f" on key {key!r:.80}" if key is not None else ""
        of = self.settings.max_attempts
        message = (f"{fn_name} raised {type(e).__name__}{where} ({kind} task {task.task}, "
                   f"attempt {task.attempt} of {of}): {e}")
        return TaskFailed(kind, task.task, task.attempt, task.epoch, message, format_user_traceback(e), False)


    def _file_failed(self, task: MapTask | ReduceTask, kind: str, what: str, e: OSError) -> TaskFailed:
        """A shared or input file this worker cannot use: the attempt fails and may run elsewhere."""
        of = self.settings.max_attempts
        message = (f"{what} on {socket.gethostname()}: {e.strerror or e} ({kind} task {task.task}, "
                   f"attempt {task.attempt} of {of})\nhint: every worker host must see the files at the same path "
                   "(is the shared filesystem mounted there?)")
        return TaskFailed(kind, task.task, task.attempt, task.epoch, message, "", False)


def _read_settings(welcome: Welcome) -> WorkerSettings:
    try:
        return WorkerSettings.from_wire(welcome.settings)
    except ValueError as e:  # a coordinator of another octostore: the version check should have caught it
        raise ProtocolError(str(e)) from None


_INPUT_END = object()  # _next_input's answer to InputEnd


def _in_background(fn: Callable[[], _T]) -> Callable[[], _T]:
    """Start fn() on a daemon thread; return a function that waits for its result or raises its exception.

    A daemon thread, not an executor: a worker exiting while the coordinator is silent
    must not wait for a blocked read."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as e:  # re-raised in the caller's thread
            outcome.append((False, e))

    thread = threading.Thread(target=run, name="input-reader", daemon=True)
    thread.start()

    def result() -> _T:
        thread.join()
        ok, value = outcome.pop()
        if ok:
            return cast(_T, value)
        raise value

    return result


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


__all__ = ["run_worker", "watch_stdin", "connect", "ConnectionLost"]

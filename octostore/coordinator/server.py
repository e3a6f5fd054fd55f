"""The coordinator's I/O: accept workers, hand out tasks, store their output, commit.

One asyncio event loop owns everything: the listening socket, one reader task
per worker connection, and the stores (a single writer, so LMDB appends never
race).  Sending a task's input runs in its own asyncio task, so the reader
keeps draining a worker's output while its input is still being sent (a
worker that spills mid-task would otherwise deadlock both sides on full
socket buffers).  Reading ``source[key]`` is user code that may block on
disk, so it runs in a one-thread executor, one batch at a time (inputs.py).

The server decides nothing about tasks.  What happens on its sockets, its
stores and its clock becomes an event for the scheduler (``_handle``), and
the scheduler's actions are carried out by the methods in ``_actions``
(scheduler.py lists both): which task a worker gets, whether a result counts,
whether a failure is retried, when a silent worker is lost and when a dead
one is replaced are all decided there.  Launching and reaping workers runs
on a thread of its own (``_launcher``): an SSH start takes seconds.

Every message a worker can send after the handshake is in ``_handlers``.
Nothing is unpickled from a peer before the handshake and frame MAC pass.

Commit order for a finished attempt (a crash between any two steps is safe):

1. spill/results store: the attempt's segments, appended as they arrived
   -> crash: segments no DONE task references; resume (#4) collects them
2. state store: the task DONE with its segment list, synced, in a group
   commit off the event loop (commits.py); meanwhile the worker already has
   its next task, since it keeps nothing of the last one
   -> the commit point; a second commit of the task is refused (returns False)
3. the scheduler learns the task is done (AttemptCommitted): only now can the phase advance
   -> crash before: the task is DONE on disk; resume does not redo it

What differs between shuffle modes (where map output goes, what a reduce
task receives, what a commit records) is behind ``self.shuffle``
(shuffle.py); what a map task's input is on the wire, behind ``self.inputs``
(inputs.py).  In mode 'paths' step 1 is the worker's: it writes, fsyncs and
renames one map file on the shared filesystem, and step 2 commits its path
and block ranges instead of segment ids.

Connections are admitted (TLS, the HMAC handshake, Hello, the version check)
by admission.py before they are served here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..config import Config, worker_settings
from ..errors import (
    ConnectionLost,
    DiskFull,
    JobCancelled,
    JobFailed,
    ProtocolError,
    StoreError,
)
from ..home import JobPaths
from ..job import Job, format_user_traceback, pack_functions
from ..launch.group import WorkerPool
from ..progress import Progress
from ..protocol.messages import (
    Heartbeat,
    Hello,
    InputEnd,
    MapFile,
    MapTask,
    Ready,
    ReduceTask,
    Results,
    Segment,
    Shutdown,
    TaskDone,
    TaskFailed,
    Welcome,
)
from ..stores.outputs import ResultSegments, TaskOutput
from ..stores.segments import SegmentStore
from ..stores.state import JobState, StateStore, TaskState
from ..tasks import TaskKind
from .admission import Admission
from .commits import GroupCommit
from .events import (
    Abort,
    Assign,
    AttemptCommitted,
    AttemptFailed,
    AttemptFinished,
    Commit,
    Discard,
    DiscardReason,
    Dismiss,
    EnterPhase,
    Event,
    Halt,
    Heard,
    LoseWorker,
    Phase,
    RecordFailure,
    StartWorkers,
    Tick,
    Warn,
    WorkerExited,
    WorkerJoined,
    WorkerLost,
    WorkerReady,
)
from .inputs import SourceValues, map_inputs_for
from .roster import Roster, Totals, WorkerConn, write_live_status
from .scheduler import Scheduler
from .shuffle import runs_of, shuffle_for

log = logging.getLogger(__name__)


@dataclass
class _Attempt:
    """What an in-flight attempt has written so far (not yet committed), and its stats once done."""

    map_output: Any = None  # a map attempt's: what the shuffle's begin_map() made (shuffle.py)
    results: list[int] = field(default_factory=list)  # a reduce attempt's segments in the results store
    result_blocks: int = 0  # ... and the blocks they hold, recorded with them
    stats: dict[str, int] = field(default_factory=dict)  # from TaskDone, counted once the commit lands


class CoordinatorServer:
    """Runs one job's map and reduce phases over TCP; returns when the job is done or failed."""

    def __init__(self, job: Job, job_id: str, config: Config, paths: JobPaths, state: StateStore,
                 secret: bytes, progress: Progress) -> None:
        meta = state.meta()
        self.job_id, self.config, self.paths = job_id, config, paths
        self.state, self.epoch, self.progress = state, int(meta["epoch"]), progress
        self.partitions = int(meta["partitions"])
        self.scheduler = _scheduler_from_state(state, config, int(meta["map_tasks"]), self.partitions)
        self.pool: WorkerPool | None = None  # set once the launched workers exist (submit.py)
        self.totals = Totals()
        self.roster = Roster(self.totals, time.monotonic())
        self.admission = Admission(secret, config, self.totals)
        self.shuffle = shuffle_for(config, paths, job_id, self.partitions)
        self.inputs = map_inputs_for(job.source, config)
        self.results = SegmentStore(paths.results, config.map_size_bytes)
        self._results_appended = False  # since the last group commit
        self._commits = GroupCommit(state, self._commit_failed, self._flushes_before_commit)
        self._attempts: dict[tuple[str, int, int], _Attempt] = {}  # from Assign to its commit or discard
        self._functions = pack_functions(job.functions)
        self._worker_settings = worker_settings(config, self.partitions, self.shuffle.shared_dir).to_wire()
        self._launcher = ThreadPoolExecutor(1, thread_name_prefix="octo-launch")  # pool.start/reap: off the loop
        self._cancelled = False
        self._disk_full: DiskFull | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()  # connection readers and input senders
        self._finished = asyncio.Event()
        self._handlers: dict[type, Callable[[WorkerConn, Any], Any]] = {
            Heartbeat: self._on_heartbeat,
            Ready: self._on_ready,
            Segment: self._on_segment,
            MapFile: self._on_map_file,
            Results: self._on_results,
            TaskDone: self._on_task_done,
            TaskFailed: self._on_task_failed,
        }
        self._actions: dict[type, Callable[[Any], None]] = {
            Assign: self._assign,
            Commit: self._commit,
            Discard: self._discard,
            RecordFailure: self._record_failure,
            EnterPhase: self._enter_phase,
            Dismiss: self._dismiss,
            LoseWorker: self._lose_worker,
            StartWorkers: self._start_workers,
            Warn: lambda a: log.warning("%s", a.message),
        }

    # -- life -----------------------------------------------------------------------------

    async def serve(self, on_listening: Callable[[str, int], None]) -> None:
        """Listen, call `on_listening(host, port)`, and return when the job is finished."""
        server = await asyncio.start_server(self._accept, self.config.bind, self.config.port,
                                            limit=1 << 20, reuse_address=True)
        host, port = server.sockets[0].getsockname()[:2]
        asyncio.get_running_loop().set_exception_handler(self.admission.on_loop_error)
        self.shuffle.open()
        self._say_where_data_goes()
        self._enter_phase(EnterPhase(self.scheduler.phase, self.scheduler.failure))  # where the stored state is
        on_listening(host, port)
        ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        try:
            if not self.scheduler.is_finished:
                await self._finished.wait()
        finally:
            ticker.cancel()
            await self._reap_workers()  # report workers that died near the end
            server.close()
            self._closing = True
            self.admission.close()
            for worker in self.roster:
                await self._say_goodbye(worker)
            await self._join_tasks()
            await self._commits.drain()
            await server.wait_closed()
            self.inputs.close()
            self._launcher.shutdown(wait=True)
        if self._disk_full is not None:
            raise self._disk_full
        if self._cancelled:
            raise JobCancelled(f"job {self.job_id} cancelled", f"continue it with: octo resume {self.job_id}")
        if self.scheduler.phase is Phase.FAILED:
            raise JobFailed(self.scheduler.failure or "the job failed")

    def _say_where_data_goes(self) -> None:
        """Paths mode: name the shared folder; say once if map inputs still travel through here."""
        if self.shuffle.shared_dir is None:
            return
        log.info("job %s: shuffle through %s", self.job_id, self.shuffle.shared_dir)
        if isinstance(self.inputs, SourceValues):
            log.info("job %s: source is not octostore.files(...), so map inputs still travel through the "
                     "coordinator (only map output goes through the shared folder)", self.job_id)

    def _pause(self, reason: DiskFull) -> None:
        """Stop serving after a store write failed for lack of space; the job stays resumable."""
        if self._disk_full is None:
            log.error("%s; stopping the job", reason.message)
            self._disk_full = reason
            self._handle(Halt(time.monotonic()))
            self._finished.set()

    def cancel(self) -> None:
        """Stop handing out work and end serve() (SIGTERM from `octo cancel`); the job stays resumable."""
        log.warning("job %s: cancel requested; stopping", self.job_id)
        self._cancelled = True
        self._handle(Halt(time.monotonic()))
        self._finished.set()

    def close_stores(self) -> None:
        self.shuffle.close()
        self.results.close()

    async def _join_tasks(self) -> None:
        """Let connection tasks end by themselves (their sockets are closed), then cancel stragglers."""
        pending = {t for t in self._tasks if t is not asyncio.current_task()}
        if pending:
            _, still = await asyncio.wait(pending, timeout=5)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=1)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._track(asyncio.get_running_loop().create_task(coroutine))

    async def _say_goodbye(self, worker: WorkerConn) -> None:
        try:
            goodbye = Shutdown(f"job {self.job_id} is {self.scheduler.phase.value}")
            await asyncio.wait_for(worker.channel.send(goodbye), 5)
        except (TimeoutError, ConnectionLost, OSError):
            pass
        worker.channel.close()

    # -- the scheduler's events in, its actions out -----------------------------------------

    def _handle(self, event: Event) -> None:
        """Tell the scheduler what happened and carry out what it decides, in order."""
        for action in self.scheduler.handle(event):
            self._actions[type(action)](action)

    def _assign(self, a: Assign) -> None:
        worker: WorkerConn = a.worker
        log.debug("%s task %d attempt %d: assigned to %s", a.kind, a.task, a.attempt, worker.name)
        if a.is_backup:
            log.info("%s task %d: backup attempt %d on %s (the first to finish wins)", a.kind, a.task,
                     a.attempt, worker.name)
        self._attempts[(a.kind, a.task, a.attempt)] = _Attempt(
            self.shuffle.begin_map() if a.kind is TaskKind.MAP else None)
        self._spawn(self._send_task(worker, a))

    def _commit(self, a: Commit) -> None:
        """Step 2 of the commit order: queue the attempt's output for the group commit."""
        key = (a.kind, a.task, a.attempt)
        attempt = self._attempts[key]

        def committed(done: bool) -> None:  # step 3, once step 2 is on disk
            log.debug("%s task %d attempt %d: %s", *key, "committed" if done else "refused (already done)")
            if done:
                self._count(attempt.stats)
            self._handle(AttemptCommitted(a.kind, a.task, a.attempt, done, time.monotonic()))
            self._attempts.pop(key, None)  # committed: the state store references its output now

        if a.kind is TaskKind.MAP:
            output: TaskOutput = self.shuffle.committed(attempt.map_output)
        else:
            output = ResultSegments(attempt.results, attempt.result_blocks)
        self._commits.add((a.kind, a.task, a.attempt, output), committed)

    def _discard(self, a: Discard) -> None:
        if a.why is DiscardReason.WORKER_LOST:
            log.info("%s task %d attempt %d: its worker %s was lost; the task runs again", a.kind, a.task,
                     a.attempt, a.worker.name)
        else:
            log.debug("%s task %d attempt %d: discarded: %s", a.kind, a.task, a.attempt, a.why.value)
        dropped = self._attempts.pop((a.kind, a.task, a.attempt), None)
        if dropped is not None:
            self._drop_output(a.kind, a.task, a.attempt, dropped)

    def _record_failure(self, a: RecordFailure) -> None:
        self.state.record_failure(a.kind, a.task, a.error, failed=a.is_final)
        if not a.is_final:
            log.warning("%s; retrying (attempt %d of %d)", a.message, a.failures + 1, a.max_attempts)

    def _enter_phase(self, a: EnterPhase) -> None:
        if a.phase in (Phase.MAP, Phase.REDUCE):
            self.progress.start_phase(a.phase.value, self.scheduler.totals[TaskKind(a.phase.value)])
            self.progress.advance(self.scheduler.done_count(a.phase.value), 0, 0)
            if a.phase is Phase.REDUCE:
                self.state.set_meta(state=JobState.REDUCING.value)
        else:
            self.progress.close()
            self._finished.set()

    def _dismiss(self, a: Dismiss) -> None:
        self._spawn(self._say_goodbye(a.worker))

    def _lose_worker(self, a: LoseWorker) -> None:
        worker: WorkerConn = a.worker
        log.warning("worker %s lost: silent for %.1f s (lease %.1f s)", worker.name, a.silent_s, self.config.lease_s)
        worker.channel.close()  # its reader sees the connection end and reports WorkerLost

    def _start_workers(self, a: StartWorkers) -> None:
        if self.pool is not None:
            log.info("%s; starting a replacement", a.reason)
            asyncio.get_running_loop().run_in_executor(self._launcher, self.pool.start, a.count)

    async def _reap_workers(self) -> None:
        """Report local workers that exited (the pool is asked off the loop).  Once serving ends
        (the last reap ran before ``_closing``), a reap a lost worker scheduled must not reach the
        launcher thread, which is being shut down."""
        if self.pool is None or self._closing:
            return
        exited = await asyncio.get_running_loop().run_in_executor(self._launcher, self.pool.reap)
        for pid, code in exited:
            self._handle(WorkerExited(pid, code, time.monotonic()))

    async def _tick_forever(self) -> None:
        every_s = min(1.0, self.config.lease_s / 4)
        while True:
            await asyncio.sleep(every_s)
            now = time.monotonic()
            self._handle(Tick(now))
            await self._reap_workers()
            self.roster.warn_if_empty(now)
            write_live_status(self.paths.live_status, self.live_status())

    def live_status(self) -> dict[str, Any]:
        """What status.json holds while the job runs."""
        running = {id(w): f"{a.kind} {a.task} attempt {a.attempt}" for a, w in self.scheduler.running()}
        bytes_in, bytes_out = self.roster.bytes_moved()
        stuck = [f"{kind} task {task} (running {seconds:.0f} s)"
                 for kind, task, seconds in self.scheduler.stuck_tasks(time.monotonic())]
        return {"pid": os.getpid(), "host": socket.gethostname(), "updated_at": time.time(),
                "phase": self.scheduler.phase.value,
                "workers": [{"name": w.name, "task": running.get(id(w))} for w in self.roster],
                "bytes_in": bytes_in, "bytes_out": bytes_out, "stuck": stuck}

    # -- connections ----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(asyncio.current_task())  # type: ignore[arg-type]
        admitted = await self.admission.admit(reader, writer)
        if admitted is not None:
            await self._serve_worker(*admitted)

    async def _serve_worker(self, worker: WorkerConn, hello: Hello) -> None:
        self.roster.add(worker)
        self._handle(WorkerJoined(worker, worker.pid, time.monotonic()))
        log.info("worker %s joined (octostore %s); %d connected", worker.name, hello.version, len(self.roster))
        self.progress.set_workers(self.roster.per_host())
        fault: str | None = None
        try:
            await worker.channel.send(Welcome(self.job_id, self.epoch, self._functions, self._worker_settings))
            while True:
                msg = await worker.channel.recv()
                self._handle(Heard(worker, time.monotonic()))  # every message renews the lease
                handler = self._handlers.get(type(msg))
                if handler is None:
                    raise ProtocolError(f"unexpected message {msg.op} from a worker")
                await handler(worker, msg)
        except ConnectionLost as e:
            if not self.scheduler.is_finished:
                log.warning("worker %s lost: %s", worker.name, e.message)
        except ProtocolError as e:  # what it sent is wrong (a frame over the limit, say): its attempt fails
            fault = f"worker {worker.name} was dropped ({e.message})"
            if not self.scheduler.is_finished:
                log.warning("worker %s lost: %s", worker.name, e.message)
        except DiskFull as e:  # nothing was committed by the failed write: stop, resumable
            self._pause(e)
        finally:
            self._lose(worker, fault)

    def _lose(self, worker: WorkerConn, fault: str | None) -> None:
        self.roster.remove(worker)
        self.progress.set_workers(self.roster.per_host())
        worker.channel.close()
        self._handle(WorkerLost(worker, time.monotonic(), fault))
        if self.pool is not None and not self._closing:  # if it was our process, it is exiting: look soon
            asyncio.get_running_loop().call_later(0.2, lambda: self._spawn(self._reap_workers()))

    # -- handing out work -----------------------------------------------------------------

    async def _on_heartbeat(self, worker: WorkerConn, _: Heartbeat) -> None:
        pass  # receiving it renewed the lease

    async def _on_ready(self, worker: WorkerConn, _: Ready) -> None:
        self._handle(WorkerReady(worker, time.monotonic()))

    async def _send_task(self, worker: WorkerConn, a: Assign) -> None:
        try:
            if a.kind is TaskKind.MAP:  # the task's first message waits for its input: one system call for a small task
                await worker.channel.send(MapTask(a.task, a.attempt, self.epoch), flush=False)
                await self.inputs.send(worker.channel, self.state.manifest_keys(a.task), worker.compress_inputs)
            else:
                runs = runs_of(self.state, a.task)
                await worker.channel.send(ReduceTask(a.task, a.attempt, self.epoch, len(runs)), flush=False)
                await self.shuffle.send_runs(worker.channel, a.task, runs)
            await worker.channel.send(InputEnd())
        except (ConnectionLost, OSError):
            worker.channel.close()  # the reader task sees it and requeues the task
        except StoreError as e:  # a store lost data: no attempt can fix it
            self._handle(Abort(e.message + (f"\nhint: {e.hint}" if e.hint else ""), time.monotonic()))
            worker.channel.close()
        except Exception as e:  # the job's source raised while we read it
            self._handle(Abort(f"reading source for map task {a.task} failed: {type(e).__name__}: {e}\n"
                               + format_user_traceback(e), time.monotonic()))
            worker.channel.close()

    # -- output and commits ---------------------------------------------------------------

    def _held(self, worker: WorkerConn, kind: str, task: int, attempt: int) -> _Attempt | None:
        """The in-flight attempt if `worker` is the one running it now, else None.

        Fencing: output counts only from the connection the attempt was handed to, while
        it is current.  A stale attempt (lost, beaten by a backup, from an older epoch) or
        another worker's attempt is ignored, and its sender can never discard or commit
        output that is not its own (tests/test_fencing.py)."""
        if self.scheduler.holder(kind, task, attempt) is not worker:
            return None
        return self._attempts.get((kind, task, attempt))

    async def _on_segment(self, worker: WorkerConn, msg: Segment) -> None:
        attempt = self._held(worker, TaskKind.MAP, msg.task, msg.attempt)
        if attempt is not None:  # else not this worker's current attempt: dropped unwritten
            self.shuffle.accept_segment(attempt.map_output, msg)

    async def _on_map_file(self, worker: WorkerConn, msg: MapFile) -> None:
        attempt = self._held(worker, TaskKind.MAP, msg.task, msg.attempt)
        if attempt is None:
            return  # not this worker's current attempt (its file is removed with the attempt)
        problem = self.shuffle.accept_map_file(attempt.map_output, msg, self.epoch)
        if problem is None:
            return
        message = (f"map task {msg.task} attempt {msg.attempt}: {problem}\nhint: the coordinator and every worker "
                   "must mount shared_root at the same path")
        failed = TaskFailed(TaskKind.MAP, msg.task, msg.attempt, self.epoch, message, "", False)
        await self._on_task_failed(worker, failed)

    async def _on_results(self, worker: WorkerConn, msg: Results) -> None:
        attempt = self._held(worker, TaskKind.REDUCE, msg.task, msg.attempt)
        if attempt is not None:
            attempt.results.append(self.results.append_segment(msg.blocks))
            attempt.result_blocks += len(msg.blocks)
            self._results_appended = True

    async def _on_task_done(self, worker: WorkerConn, msg: TaskDone) -> None:
        key = (msg.kind, msg.task, msg.attempt)
        attempt = self._held(worker, *key) if msg.epoch == self.epoch else None
        if attempt is None:
            log.debug("%s task %d attempt %d: ignored a result from %s (not its current attempt)", *key, worker.name)
            return
        if msg.kind == TaskKind.MAP and not self.shuffle.is_complete(attempt.map_output):
            raise ProtocolError(f"map task {msg.task} attempt {msg.attempt}: done without reporting its map file")
        attempt.stats = msg.stats
        self._handle(AttemptFinished(_kind(msg.kind), msg.task, msg.attempt, time.monotonic()))

    def _flushes_before_commit(self) -> list[Callable[[], None]]:
        """What the commit thread flushes before a group commit: the stores appended to since the
        last one (none with state_sync: false, which gives up OS-crash durability as a whole)."""
        stores = self.shuffle.take_appended() + ([self.results] if self._results_appended else [])
        self._results_appended = False
        return [store.sync for store in stores] if self.config.sync else []

    def _commit_failed(self, error: Exception) -> None:
        """A group commit could not be made: stop resumably (disk full) or fail the job."""
        if isinstance(error, DiskFull):
            self._pause(error)
        else:
            self._handle(Abort(f"the state store could not commit: {getattr(error, 'message', None) or error!r}",
                               time.monotonic()))

    def _count(self, stats: dict[str, int]) -> None:
        self.totals.records_in += stats.get("records_in", 0)
        self.totals.pairs_out += stats.get("pairs_out", 0)
        self.totals.worker_peak_rss_bytes = max(self.totals.worker_peak_rss_bytes, stats.get("peak_rss_bytes", 0))
        self.progress.advance(1, stats.get("records_in", stats.get("keys", 0)),
                              stats.get("bytes_out", 0) + stats.get("bytes_in", 0))

    async def _on_task_failed(self, worker: WorkerConn, msg: TaskFailed) -> None:
        key = (msg.kind, msg.task, msg.attempt)
        if msg.epoch != self.epoch or self._held(worker, *key) is None:
            return
        text = msg.message + ("\n" + msg.traceback.rstrip() if msg.traceback else "")
        self._handle(AttemptFailed(_kind(msg.kind), msg.task, msg.attempt, msg.message, text, msg.is_contract_error,
                                   time.monotonic()))

    def _drop_output(self, kind: str, task: int, number: int, attempt: _Attempt) -> None:
        """Delete an uncommitted attempt's output: map output the shuffle's way, results here."""
        if kind == TaskKind.MAP:
            self.shuffle.drop(task, number, self.epoch, attempt.map_output)
            return
        try:
            self.results.delete_segments(attempt.results)
        except (DiskFull, StoreError) as e:
            log.debug("segments of a discarded attempt stay until resume collects them: %s", e.message)


def _scheduler_from_state(state: StateStore, config: Config, map_tasks: int, partitions: int) -> Scheduler:
    """The scheduler for the tasks the state store has: DONE ones stay done, failures go on counting."""
    records = [((kind, t), r) for kind in TaskKind for t, r in state.tasks(kind)]
    return Scheduler(map_tasks, partitions, max_attempts=config.max_attempts, lease_s=config.lease_s,
                     backup_tasks=config.backup_tasks, local_workers=config.resolved_workers(),
                     no_workers_timeout_s=config.no_workers_timeout_s,
                     done=[task for task, r in records if r.state is TaskState.DONE],
                     failures={task: r.failures for task, r in records if r.failures})


_KINDS = {kind.value: kind for kind in TaskKind}  # a dict lookup: TaskKind(text) costs ~0.5 us a message


def _kind(text: str) -> TaskKind:
    kind = _KINDS.get(text)
    if kind is None:
        raise ProtocolError(f"unknown task kind {text!r}")
    return kind


__all__ = ["CoordinatorServer"]

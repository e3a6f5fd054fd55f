"""A job's life on the coordinator: load, plan, store the plan, serve the phases, final().

``submit_job`` is the whole sequence ``octo submit`` and ``octo server`` run:

1. run the job file once and check the contract (nothing is created on failure)
2. list the source keys, try mapfn on the first one (catches ``return k, v``)
3. write the job's facts and its manifest (which source keys make which map
   task) to a new state store: from here on the job can be inspected, and
   resumed (#4) without re-reading ``source`` in the same order
4. serve the map and reduce phases to workers (``server.CoordinatorServer``)
5. call final() once per result in key order, on this process's stdout
6. mark the job DONE and delete its spill, and in paths mode its folder of
   map files under shared_root (results stay for ``octo results``)

``resume_job`` re-enters at step 4 after any crash: it takes the job's lock,
raises the epoch (so a late result from before the crash is refused), drops
segments no DONE task refers to, and serves only the tasks that are not DONE;
a job that crashed during final() runs final() again from the start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from .. import __version__, failpoints
from ..allocator import return_freed_memory
from ..config import Config
from ..errors import ConfigError, DiskFull, JobCancelled, JobError, JobFailed, UsageError, UserCodeError
from ..home import JobPaths, job_paths, new_job_id, require_job
from ..job import Job, check_pairs, format_user_traceback, load_job
from ..launch.group import WorkerPool
from ..progress import make_progress
from ..stores.lock import JobLock
from ..stores.results import iter_result_batches
from ..stores.segments import SegmentStore
from ..stores.state import JobState, StateStore, TaskState
from .resume import collect_garbage, open_state, raise_epoch
from .roster import Totals, write_live_status
from .server import CoordinatorServer
from .shuffle import shuffle_for

log = logging.getLogger(__name__)

Launch = Callable[[tuple[str, int]], WorkerPool]
"""Starts workers for a coordinator listening at (host, port); returns them (reap, start, stop)."""


@dataclass(frozen=True, slots=True)
class JobReport:
    """What a finished (or failed) job did, for the CLI's last lines and for tests."""

    job_id: str
    state: JobState
    map_tasks: int
    partitions: int
    results: int
    elapsed_s: float
    totals: Totals
    coordinator_peak_rss_bytes: int
    memory_budget_bytes: int  # per process, from the config: the report says if a peak passed it
    error: str | None = None


def submit_job(job_path: Path, config: Config, secret: bytes, *, job_id: str | None = None,
               launch: Launch | None = None, on_listening: Callable[[str, int], None] | None = None) -> JobReport:
    """Run the job in `job_path` to the end; raise UsageError before anything starts if it is bad."""
    started = time.monotonic()
    job = load_job(job_path)
    keys = _source_keys(job)
    if keys:
        check_pairs(job_path, job.functions.mapfn, keys[0], job.source[keys[0]])
    job_id = job_id or new_job_id()
    paths = job_paths(config.home, job_id)
    if paths.root.exists():  # say so before any work; _make_job_folder decides a race
        raise UsageError(f"job {job_id!r} already exists in {paths.root}", "choose another --job-id")
    partitions = config.resolved_partitions(job.partitions)
    manifest = _plan_map_tasks(keys, config.resolved_map_tasks(len(keys)))
    _check_manifest(job, manifest)
    _make_job_folder(paths, job_id)
    lock = JobLock(paths.lock, job_id)
    state = _create_state(paths, config, job, job_id, manifest, partitions)
    log.info("job %s: %s, %d source keys, %d map tasks, %d partitions", job_id, job.name, len(keys),
             len(manifest), partitions)
    return _run_job(job, job_id, config, paths, state, lock, secret, launch, on_listening, started)


def resume_job(config: Config, job_id: str, secret: bytes, *, reload: bool = False, launch: Launch | None = None,
               on_listening: Callable[[str, int], None] | None = None) -> JobReport:
    """Continue job `job_id` after any crash: redo only what was not committed, then final().

    `config` is the job's stored config (``Config.from_stored``), `reload` runs the job
    file as it is on disk now instead of the copy stored at submit."""
    started = time.monotonic()
    paths = require_job(config.home, job_id)
    lock = JobLock(paths.lock, job_id)
    try:
        state = open_state(paths, config)
        meta = state.meta()
        job = load_job(Path(meta["job_file"]), None if reload else meta["job_text"])
        if reload:
            state.set_meta(job_text=job.text)
        epoch = raise_epoch(state)
    except BaseException:
        lock.release()
        raise
    done = {kind: sum(r.state is TaskState.DONE for _, r in state.tasks(kind)) for kind in ("map", "reduce")}
    log.info("job %s: resuming %s (epoch %d, was %s): %d of %d map and %d of %d reduce tasks already done",
             job_id, job.name, epoch, meta["state"], done["map"], meta["map_tasks"], done["reduce"],
             meta["partitions"])
    if meta["state"] != JobState.DONE.value:
        collect_garbage(state, paths, config)
    return _run_job(job, job_id, config, paths, state, lock, secret, launch, on_listening, started)


def _run_job(job: Job, job_id: str, config: Config, paths: JobPaths, state: StateStore, lock: JobLock,
             secret: bytes, launch: Launch | None, on_listening: Callable[[str, int], None] | None,
             started: float) -> JobReport:
    """Serve whatever tasks are not DONE, call final(), mark the job DONE (or FAILED or CANCELLED)."""
    return_freed_memory()
    meta = state.meta()
    partitions, map_tasks = meta["partitions"], meta["map_tasks"]
    try:
        if meta["state"] == JobState.DONE.value:
            totals = Totals()  # nothing to run: final() prints the stored results again
        else:
            totals = _serve(job, job_id, config, paths, state, secret, launch, on_listening)
        _add_bytes_moved(state, totals)
        results = run_final(job, state, paths, config)
        state.set_meta(state=JobState.DONE.value, finished_at=time.time())
    except (JobFailed, UserCodeError) as e:
        state.set_meta(state=JobState.FAILED.value, error=str(e), finished_at=time.time())
        raise
    except JobCancelled:
        state.set_meta(state=JobState.CANCELLED.value, finished_at=time.time())
        raise
    except DiskFull as e:  # the state store may be on that disk too: write nothing more
        e.hint = f"free some space there, then continue with: octo resume {job_id}"
        raise
    finally:
        state.close()
        paths.live_status.unlink(missing_ok=True)
        lock.release()
    shuffle_for(config, paths, job_id, partitions).remove_job()  # after DONE: no reducer reads it again
    return JobReport(job_id, JobState.DONE, map_tasks, partitions, results, time.monotonic() - started,
                     totals, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, config.memory_budget_bytes)


def _make_job_folder(paths: JobPaths, job_id: str) -> None:
    """Create the job's folder in one mkdir: of two submits racing for one --job-id, the loser is told."""
    try:
        paths.root.parent.mkdir(parents=True, exist_ok=True)
        paths.root.mkdir()
    except FileExistsError:
        raise UsageError(f"job {job_id!r} already exists in {paths.root}", "choose another --job-id") from None
    except OSError as e:
        raise ConfigError(f"$OCTO_HOME {paths.root.parent.parent}: cannot create the job's folder: "
                          f"{e.strerror or e}", "set OCTO_HOME to a folder you can write") from None


def _add_bytes_moved(state: StateStore, totals: Totals) -> None:
    """Add this run's wire bytes to the job's (a resumed job sums its runs)."""
    meta = state.meta()
    state.set_meta(bytes_in=int(meta.get("bytes_in", 0)) + totals.bytes_in,
                   bytes_out=int(meta.get("bytes_out", 0)) + totals.bytes_out)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail on a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _source_keys(job: Job) -> list[Any]:
    try:
        return list(job.source)
    except Exception as e:  # user code: the source's __iter__
        raise UserCodeError(f"{job.path}: iterating source raised {type(e).__name__}: {e}",
                            format_user_traceback(e), started=False) from None


def _plan_map_tasks(keys: list[Any], count: int) -> list[list[Any]]:
    """Split the source keys into `count` contiguous map tasks, the first 1.5x and the last 0.5x
    the mean size, shrinking evenly in between.

    Tasks go out in order, so the last ones decide when the map phase ends: when
    they are short, a worker that finishes early waits less for the others."""
    if count <= 1:
        return [keys] if count else []
    weights = [1.5 - i / (count - 1) for i in range(count)]
    total = sum(weights)
    tasks, start = [], 0
    for i, through in enumerate(accumulate(weights)):
        end = round(len(keys) * through / total)
        end = min(max(end, start + 1), len(keys) - (count - 1 - i))  # no task empty while keys remain
        tasks.append(keys[start:end])
        start = end
    return tasks


def _check_manifest(job: Job, manifest: list[list[Any]]) -> None:
    for task, keys in enumerate(manifest):
        try:
            pickle.dumps(keys, protocol=5)
        except Exception as e:
            raise JobError(f"{job.path}: a source key of map task {task} cannot be stored: {e}",
                           "use str, int or tuple keys in source") from None


def _create_state(paths: JobPaths, config: Config, job: Job, job_id: str,
                  manifest: list[list[Any]], partitions: int) -> StateStore:
    """Write everything resume needs: the plan, the job's code and where it ran, the config."""
    state = StateStore(paths.state, config.map_size_bytes, sync=config.sync)
    meta = {"job_id": job_id, "job_file": str(job.path.resolve()), "job_text": job.text, "cwd": os.getcwd(),
            "partitions": partitions, "map_tasks": len(manifest), "epoch": 1, "octostore": __version__,
            "argv": sys.argv, "config": config.stored()}
    state.create_job(meta, manifest, partitions)
    return state


def _serve(job: Job, job_id: str, config: Config, paths: JobPaths, state: StateStore, secret: bytes,
           launch: Launch | None,
           on_listening: Callable[[str, int], None] | None) -> Totals:
    progress = make_progress(config.progress, config.progress_every_s)
    server = CoordinatorServer(job, job_id, config, paths, state, secret, progress)
    launched: list[WorkerPool] = []

    def listening(host: str, port: int) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.cancel)  # `octo cancel`
        if on_listening is not None:
            on_listening(host, port)
        if launch is not None:
            launched.append(launch(("127.0.0.1" if host in ("0.0.0.0", "::") else host, port)))
            server.pool = launched[0]

    try:
        asyncio.run(server.serve(listening))
    finally:
        progress.close()
        for workers in launched:
            workers.stop()
        server.close_stores()
        # final() runs next, in this process: say so to `octo status` (removed when the job ends)
        write_live_status(paths.live_status, {**server.live_status(), "phase": "final", "workers": []})
    return server.totals


def run_final(job: Job, state: StateStore, paths: JobPaths, config: Config) -> int:
    """Call final(key, value) for every result in key order; return the number of results.

    A crash here leaves the job FINALIZING; final() then runs again from the start."""
    state.set_meta(state=JobState.FINALIZING.value)
    results = SegmentStore(paths.results, config.map_size_bytes)
    count = 0
    final = job.final
    crash_point = failpoints.armed("mid-final")  # a test's; looked up once, not per result
    try:
        for keys, values in iter_result_batches(state, results):
            if final is None and not crash_point:
                count += len(keys)
                continue
            for key, value in zip(keys, values):
                count += 1
                if crash_point:
                    failpoints.hit("mid-final")
                if final is None:
                    continue
                try:
                    final(key, value)
                except BrokenPipeError:  # `octo submit job.py | head`: the reader has all it wants
                    _silence_stdout()
                    log.warning("stdout closed after %d results; final() stopped there. All results are stored: "
                                "octo results %s", count - 1, state.meta()["job_id"])
                    final = None  # the rest are only counted: the summary reports every stored result
                except Exception as e:  # user code
                    raise UserCodeError(f"final raised {type(e).__name__} on key {key!r:.80}: {e}",
                                        format_user_traceback(e), started=True) from None
    finally:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
        results.close()
    if job.final is None:
        log.info("the job has no final(); print its %d results with: octo results %s", count, state.meta()["job_id"])
    return count

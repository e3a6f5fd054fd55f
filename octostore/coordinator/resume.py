"""What `octo resume` does before serving again: reopen, fence, collect garbage.

Nothing about a running attempt is durable (assignments live in memory), so
after a crash every task that is not DONE is simply pending again, and the
attempts that were running are redone: at most one task per worker slot.

1. ``open_state``: the job's state store, or a one-line error naming the path
   if it is missing or damaged (nothing is changed then).
2. ``raise_epoch``: epoch + 1, synced, before any worker connects.  Every task
   message carries the epoch, so a result from an attempt of the old epoch
   (a worker that outlived the crash) is refused and its segments dropped.
   FAILED tasks get their attempts back, so a job that failed on a bug can be
   resumed once the job file is fixed (``--reload``).
3. ``collect_garbage``: delete the map output and the results that no DONE
   task refers to: the output of attempts that were running, or stored but
   not committed, when the coordinator died.  What map output is depends on
   the shuffle mode (shuffle.py): segments of the spill stores (payload), or
   files and temp files in the job's folder under shared_root (paths).
   Idempotent: a crash here is repaired by the next resume.
"""

from __future__ import annotations

import logging

import lmdb

from .. import failpoints
from ..config import Config
from ..errors import StoreError
from ..home import JobPaths
from ..stores.outputs import ResultSegments
from ..stores.state import StateStore, TaskState
from ..tasks import TaskKind
from .shuffle import delete_unreferenced, shuffle_for

log = logging.getLogger(__name__)


def open_state_readonly(paths: JobPaths) -> StateStore:
    """A job's state store for reading, or StoreError naming the damaged path."""
    try:
        return StateStore(paths.state, 1 << 20, readonly=True)
    except lmdb.Error as e:
        raise StoreError(f"{paths.state}: the job's state store is damaged: {e}",
                         "its results cannot be trusted; run the job again under a new id") from None


def stored_meta(paths: JobPaths) -> dict[str, object]:
    """A job's stored facts (read-only), or StoreError naming the damaged path."""
    state = open_state_readonly(paths)
    try:
        return state.meta()
    finally:
        state.close()


def open_state(paths: JobPaths, config: Config) -> StateStore:
    """Open a job's state store for writing, or raise StoreError naming what is wrong."""
    try:
        state = StateStore(paths.state, config.map_size_bytes, sync=config.sync)
        meta = state.meta()
    except lmdb.Error as e:
        raise StoreError(f"{paths.state}: the job's state store is damaged: {e}",
                         "its results cannot be trusted; run the job again under a new id") from None
    missing = [k for k in ("job_file", "job_text", "partitions", "map_tasks", "epoch", "state") if k not in meta]
    if missing:
        state.close()
        raise StoreError(f"{paths.state}: the job's state store lacks {', '.join(missing)}",
                         "it was not written by this octostore; run the job again under a new id")
    return state


def raise_epoch(state: StateStore) -> int:
    """Fence off every attempt of earlier coordinators; give FAILED tasks their attempts back."""
    epoch = int(state.meta()["epoch"]) + 1
    state.set_meta(epoch=epoch)
    reopened = state.reopen_failed()
    if reopened:
        log.info("%d failed task(s) get their attempts again", reopened)
    failpoints.hit("during-resume")
    return epoch


def collect_garbage(state: StateStore, paths: JobPaths, config: Config) -> int:
    """Delete the map output (the shuffle mode's, shuffle.py) and the results no DONE task refers
    to; return how many pieces were deleted."""
    meta = state.meta()
    shuffle = shuffle_for(config, paths, str(meta["job_id"]), int(meta["partitions"]))
    deleted = shuffle.collect_garbage(state)
    kept = {s for _, r in state.tasks(TaskKind.REDUCE)
            if r.state is TaskState.DONE and isinstance(r.output, ResultSegments) for s in r.output.segments}
    results = delete_unreferenced(paths.results, kept, config.map_size_bytes)
    if results:
        log.info("dropped %d uncommitted result segment(s) from before the crash", results)
    failpoints.hit("after-gc")
    return deleted + results

"""octostore's public API: what the ``octo`` command (and any Python caller) uses.

Each function is one call into the engine with everything passed in; the
CLI only parses arguments, calls one of these and prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .config import Config
from .coordinator.submit import JobReport, submit_job
from .home import load_or_create_secret, require_job
from .launch.local import start_local_workers
from .stores.results import iter_results
from .stores.segments import SegmentStore
from .errors import StoreError
from .stores.state import JobState, StateStore
from .worker.main import run_worker


def submit(job_path: Path, config: Config, *, job_id: str | None = None,
           on_listening: Callable[[str, int], None] | None = None) -> JobReport:
    """Run a job on this machine's coordinator with `config.workers` local workers (0 = wait for clients)."""
    secret = load_or_create_secret(config.home)
    workers = config.resolved_workers()
    launch = (lambda address: start_local_workers(workers, address, secret)) if workers else None
    return submit_job(job_path, config, secret, job_id=job_id, launch=launch, on_listening=on_listening)


def work(address: tuple[str, int], secret: bytes, *, wait_s: float, max_frame_bytes: int) -> None:
    """Work for the coordinator at `address` until its job ends (``octo client``)."""
    run_worker(address, secret, wait_s=wait_s, max_frame_bytes=max_frame_bytes)


def results(home: Path, job_id: str) -> Iterator[tuple[Any, Any]]:
    """Yield a job's stored results (key, value) in key order."""
    paths = require_job(home, job_id)
    state = StateStore(paths.state, 1 << 20, readonly=True)
    job_state = state.meta().get("state")
    if job_state != JobState.DONE.value:
        state.close()
        raise StoreError(f"job {job_id!r} is {job_state}, so its results are incomplete",
                         "only a finished job's results can be printed")
    store = SegmentStore(paths.results, 1 << 20, readonly=True) if (paths.results / "data.mdb").exists() else None
    try:
        if store is not None:
            yield from iter_results(state, store)
    finally:
        if store is not None:
            store.close()
        state.close()

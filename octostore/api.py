"""octostore's public API: what the ``octo`` command (and any Python caller) uses.

Each function is one call into the engine with everything passed in; the
CLI only parses arguments, calls one of these and prints.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb

from . import failpoints
from .config import Config
from .config_file import load_config_file
from .coordinator.resume import open_state_readonly, stored_meta
from .coordinator.submit import JobReport, Launch, resume_job, submit_job
from .errors import JobFailed, StoreError, UsageError
from .home import JobPaths, load_or_create_secret, read_secret, require_job
from .jobinfo import job_status, list_jobs
from .launch.group import WorkerGroup
from .launch.hosts import Host, parse_hosts, read_hosts
from .launch.local import start_local_workers
from .protocol.tls import server_context
from .settings import check_paths_exist
from .stores.lock import is_locked, read_holder
from .stores.results import expected_blocks, iter_results
from .stores.segments import SegmentStore
from .stores.state import JobState
from .worker.main import run_worker

if TYPE_CHECKING:
    from .launch.ssh import SshOptions

log = logging.getLogger(__name__)


def submit(job_path: Path, config: Config, *, job_id: str | None = None,
           on_listening: Callable[[str, int], None] | None = None) -> JobReport:
    """Run a job on this machine's coordinator with `config.workers` local workers (0 = wait for clients)."""
    failpoints.check()
    check_paths_exist(config)
    _check_tls_files(config)
    secret = load_or_create_secret(config.home)
    return submit_job(job_path, config, secret, job_id=job_id, launch=_launcher(config, secret),
                      on_listening=on_listening)


def resume(home: Path, job_id: str, *, reload: bool = False, on_listening: Callable[[str, int], None] | None = None,
           **overrides: Any) -> JobReport:
    """Continue a job after any crash, with the config it was submitted with (`overrides` win).

    The job runs in the folder it was submitted from, so relative paths in the job file
    mean what they meant then; the caller's working folder is back when this returns.
    (Python has one working folder per process, not per thread: while the job runs, it
    is the job's.)"""
    failpoints.check()
    home = home.absolute()  # before the working folder changes
    paths = require_job(home, job_id)
    meta = stored_meta(paths)
    config = Config.from_stored(home, meta.get("config", {}), **overrides)  # type: ignore[arg-type]
    check_paths_exist(config)  # the stored paths are absolute: checked here as in the job's folder
    _check_tls_files(config)
    secret = load_or_create_secret(home)
    submitted_from = str(meta.get("cwd", ""))
    with contextlib.chdir(submitted_from) if os.path.isdir(submitted_from) else contextlib.nullcontext():
        return resume_job(config, job_id, secret, reload=reload, launch=_launcher(config, secret),
                          on_listening=on_listening)


def cancel(home: Path, job_id: str, *, wait_s: float = 30.0) -> None:
    """Ask the job's coordinator to stop (SIGTERM) and wait until it has; the job stays resumable."""
    paths = require_job(home, job_id)
    holder = read_holder(paths.lock)
    if not is_locked(paths.lock) or holder is None:
        state = stored_meta(paths).get("state")
        raise UsageError(f"job {job_id!r} is not running (it is {state})",
                         f"continue it with: octo resume {job_id}" if state != "DONE" else None)
    pid, host = holder
    if host != socket.gethostname():
        raise UsageError(f"job {job_id!r} runs on {host}, not here", f"run octo cancel {job_id} on {host}")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while is_locked(paths.lock):
        if time.monotonic() > deadline:
            raise UsageError(f"job {job_id!r} (pid {pid}) has not stopped after {wait_s:g} s",
                             f"it may be inside final(); kill it with: kill -9 {pid}, then octo resume {job_id}")
        time.sleep(0.1)


__all__ = ["submit", "resume", "cancel", "work", "results", "list_jobs", "job_status", "JobReport"]


def ssh_launch(hosts_file: Path, coordinator: tuple[str, int], secret_file: Path, *,
               accept_new_host_keys: bool = False, known_hosts: str | None = None,
               ssh_config: str | None = None, tls_ca: str | None = None) -> int:
    """Start workers on every host of `hosts_file` for a running `octo server`; return when they end.

    Returns how many workers were started.  Workers exit when their job ends, or when this
    process ends (their SSH channels close)."""
    hosts = read_hosts(hosts_file)  # before anything else: a bad line is the likeliest mistake
    secret = read_secret(secret_file)
    config = Config(home=Path("."), accept_new_host_keys=accept_new_host_keys, ssh_known_hosts=known_hosts,
                    ssh_config_file=ssh_config)
    from .launch.ssh import SshWorkers  # paramiko: ~70 ms of imports, paid only when SSH is used

    workers = SshWorkers(hosts, coordinator, secret, _ssh_options(config), tls_ca)
    try:
        started = workers.start_all()
        if started == 0:
            raise UsageError(f"{hosts_file}: no worker could start on any host (see the warnings above)")
        statuses: list[int] = []
        while len(statuses) < started:
            time.sleep(0.5)
            statuses += [code for _, code in workers.reap()]
        if all(code != 0 for code in statuses):
            raise JobFailed(f"all {started} ssh workers failed (exit statuses {sorted(set(statuses))}); "
                            "see their messages above")
        return started
    finally:
        workers.stop()


def resolve_config(home: Path, mode_defaults: dict[str, Any], config_file: Path | None,
                   flags: dict[str, Any]) -> Config:
    """The config of a run: command-line `flags` (None = not given) over the --config file over
    the mode's defaults over Config's own.  The file's `home` wins over $OCTO_HOME (`home`)."""
    from_file: dict[str, Any] = {}
    if config_file is not None:
        loaded = load_config_file(config_file)
        from_file = loaded.config_overrides()
        home = loaded.home.expanduser() if loaded.home else home
    given = {k: v for k, v in flags.items() if v is not None}
    return Config(home=home, **{**mode_defaults, **from_file, **given})


def describe_plan(config: Config, job_file: Path) -> str:
    """What `octo submit --dry-run` prints: what would run where, without running it.  Raises
    ConfigError, as a real run would, if a path the plan needs does not exist."""
    check_paths_exist(config)
    hosts = _hosts(config)
    lines = [
        f"job file: {job_file}",
        f"$OCTO_HOME: {config.home}",
        f"coordinator: listens on {config.bind}:{config.port or 'any free port'}",
        f"local workers: {config.resolved_workers()}",
        *(f"ssh host: {h.label}  slots={h.slots}  python={h.python}" for h in hosts),
        f"ssh workers: {sum(h.slots for h in hosts)} on {len(hosts)} host(s)",
        f"tls: on (cert {config.tls_cert}; workers verify with {config.resolved_tls_ca()})" if config.tls
        else "tls: off",
        f"shuffle mode: {config.shuffle_mode}"
        + (f" (shared_root: {config.shared_root})" if config.shuffle_mode == "paths" else ""),
        f"partitions: {config.partitions or 'as the job says, else 8'}; map tasks: {config.map_tasks or 'default'}; "
        f"lease: {config.lease_s:g} s; max attempts: {config.max_attempts}",
        _describe_memory(config),
        "state store: synced on every commit" if config.sync
        else "state store: not synced (state_sync: false): a power loss or OS crash can lose or corrupt the job state",
    ]
    return "\n".join(lines)


def _describe_memory(config: Config) -> str:
    plan = config.memory_plan()
    return (f"memory: {config.memory_budget_bytes >> 20} MiB per process (map buffer {plan.map_buffer_bytes >> 20} "
            f"MiB, one key's values {plan.values_memory_bytes >> 20} MiB before disk, merges of "
            f"{plan.merge_fan_in} runs)")


def _hosts(config: Config) -> list[Host]:
    return parse_hosts("\n".join(config.ssh_hosts), "the stored config") if config.ssh_hosts else []


def _ssh_options(config: Config) -> SshOptions:
    from .launch.ssh import SshOptions

    defaults = SshOptions()
    return SshOptions(
        known_hosts=Path(config.ssh_known_hosts).expanduser() if config.ssh_known_hosts else defaults.known_hosts,
        ssh_config=Path(config.ssh_config_file).expanduser() if config.ssh_config_file else defaults.ssh_config,
        accept_new_host_keys=config.accept_new_host_keys)


def _check_tls_files(config: Config) -> None:
    """Load the certificate and key once before a job is created or resumed: a bad file is a usage error."""
    if config.tls:
        server_context(str(config.tls_cert), str(config.tls_key))


def _warn_if_unreachable(hosts: list[Host], dial: tuple[str, int]) -> None:
    """SSH workers on other machines cannot reach a coordinator that listens on loopback."""
    if _is_loopback(dial[0]):
        far = [h.label for h in hosts if not _is_loopback(h.host)]
        if far:
            log.warning("ssh workers on %s will dial %s:%d, which is their own machine; set coordinator.bind "
                        "to an address they can reach", ", ".join(far), *dial)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _launcher(config: Config, secret: bytes) -> Launch | None:
    """Start the local workers and the SSH hosts' workers once the coordinator listens."""
    workers, hosts = config.resolved_workers(), _hosts(config)
    if not workers and not hosts:
        return None

    def launch(address: tuple[str, int]) -> WorkerGroup:
        group = WorkerGroup([])
        if workers:
            group.add(start_local_workers(workers, address, secret, config.resolved_tls_ca()))
        if hosts:
            from .launch.ssh import SshWorkers, advertised_address

            dial = advertised_address(config.bind, address[1])
            _warn_if_unreachable(hosts, dial)
            remote = SshWorkers(hosts, dial, secret, _ssh_options(config), config.resolved_tls_ca())
            group.add(remote)
            if remote.start_all() == 0 and not workers:
                group.stop()
                raise UsageError("no worker could start on any ssh host (see the warnings above)",
                                 "fix the hosts, or run with local workers too")
        return group

    return launch


def work(address: tuple[str, int], secret: bytes, *, wait_s: float, max_frame_bytes: int,
         tls_ca: str | None = None) -> None:
    """Work for the coordinator at `address` until its job ends (``octo client``); TLS if `tls_ca` is given."""
    run_worker(address, secret, wait_s=wait_s, max_frame_bytes=max_frame_bytes, tls_ca=tls_ca)


def results(home: Path, job_id: str) -> Iterator[tuple[Any, Any]]:
    """Yield a job's stored results (key, value) in key order."""
    paths = require_job(home, job_id)
    state = open_state_readonly(paths)
    job_state = state.meta().get("state")
    if job_state != JobState.DONE.value:
        state.close()
        raise StoreError(f"job {job_id!r} is {job_state}, so its results are incomplete",
                         "only a finished job's results can be printed")
    try:
        store = _open_results(paths, expected_blocks(state))
    except BaseException:
        state.close()
        raise
    try:
        if store is not None:
            yield from iter_results(state, store)
    finally:
        if store is not None:
            store.close()
        state.close()


def _open_results(paths: JobPaths, blocks_expected: int) -> SegmentStore | None:
    """The job's results store, read-only; None if it has none and should have none; else a
    StoreError naming it (missing, cut short, not LMDB)."""
    if not (paths.results / "data.mdb").exists():
        if blocks_expected:
            raise StoreError(f"{paths.results}: the results store is missing; the state store says it holds "
                             f"{blocks_expected} blocks", "run the job again under a new id")
        return None
    try:
        return SegmentStore(paths.results, 1 << 20, readonly=True)
    except lmdb.Error as e:
        raise StoreError(f"{paths.results}: the results store is damaged: {e}",
                         "run the job again under a new id") from None

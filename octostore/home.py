"""Where a user's jobs live (``$OCTO_HOME``) and the per-user secret.

Layout::

    $OCTO_HOME/secret               32 random bytes, mode 0600: proves a worker is ours
    $OCTO_HOME/jobs/<id>/state/     LMDB, sync on: manifest, task states, committed runs
    $OCTO_HOME/jobs/<id>/spill/pNNNN/  LMDB per partition: map output blocks (deleted when done)
    $OCTO_HOME/jobs/<id>/results/   LMDB: reduce output blocks, kept for `octo results`

The secret is created with O_EXCL and mode 0600 in one call, so there is no
moment at which another user could read it, and two first runs racing each
other end up with the same file.  It is never logged, never put in argv or the
environment of a worker (``ps`` shows both): local workers read it on stdin.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, StoreError

log = logging.getLogger(__name__)

SECRET_BYTES = 32
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class JobPaths:
    """The files of one job under $OCTO_HOME."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def spill(self) -> Path:
        return self.root / "spill"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def live_status(self) -> Path:
        return self.root / "status.json"

    def partition_spill(self, partition: int) -> Path:
        return self.spill / f"p{partition:04d}"


def job_paths(home: Path, job_id: str) -> JobPaths:
    """Return the paths of job `job_id` (nothing is created)."""
    check_job_id(job_id)
    return JobPaths(home / "jobs" / job_id)


def check_job_id(job_id: str) -> None:
    """Refuse ids that could escape $OCTO_HOME/jobs or confuse a shell."""
    if not _JOB_ID.fullmatch(job_id):
        raise ConfigError(
            f"job id {job_id!r} is not valid",
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )


def new_job_id() -> str:
    """Return a fresh, sortable job id such as 20261126-124501-3f9a."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def load_or_create_secret(home: Path) -> bytes:
    """Return the user's secret, creating $OCTO_HOME/secret (0600) on first use."""
    path = home / "secret"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret(path)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(SECRET_BYTES))
        f.flush()
        os.fsync(f.fileno())
    return read_secret(path)


def read_secret(path: Path) -> bytes:
    """Read a secret file written by load_or_create_secret (on this or another machine)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such secret file",
            "copy $OCTO_HOME/secret (default ~/.octostore/secret) from the coordinator's machine, "
            "or pass --secret-file",
        ) from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the secret") from None
    if len(data) < 16:
        raise ConfigError(f"{path}: secret is {len(data)} bytes, need at least 16")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o): chmod 600 %s", path, mode, path)
    return data


def require_job(home: Path, job_id: str) -> JobPaths:
    """Return the paths of an existing job, or a clear error naming the id."""
    paths = job_paths(home, job_id)
    if not paths.state.is_dir():
        raise StoreError(f"no job {job_id!r} under {home / 'jobs'}", "list the jobs with: octo jobs")
    return paths

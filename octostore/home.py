"""Where a user's jobs live (``$OCTO_HOME``) and the per-user secret.

Layout::

    $OCTO_HOME/secret               32 random bytes, mode 0600: proves a worker is ours
    $OCTO_HOME/jobs/<id>/state/     LMDB, sync on: manifest, task states, committed runs
    $OCTO_HOME/jobs/<id>/spill/pNNNN/  LMDB per partition: map output blocks (deleted when done)
    $OCTO_HOME/jobs/<id>/results/   LMDB: reduce output blocks, kept for `octo results`

The secret is written to a 0600 temporary file and hard-linked into place
(``load_or_create_secret``): there is no moment at which another user could
read it or a reader could see it empty, and two first runs racing each other
end up with the same file.  It is never logged, never put in argv or the
environment of a worker (``ps`` shows both): local workers read it on stdin.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import tempfile
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


SECRET_MAX_BYTES = 4096
"""A secret file is read up to this size: a symlink to /dev/zero must not be read forever."""


def load_or_create_secret(home: Path) -> bytes:
    """Return the user's secret, creating $OCTO_HOME/secret (0600) on first use.

    The new secret is written to a temporary file, synced, then hard-linked into
    place: the link is atomic and fails if the file exists, so a reader never sees
    a secret half written, and of two first runs racing, both use the winner's."""
    path = home / "secret"
    if not path.exists():
        _create_secret(home, path)
    return read_secret(path)


def _create_secret(home: Path, path: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".secret-", dir=home)  # mode 0600
    except OSError as e:
        raise ConfigError(f"$OCTO_HOME {home}: cannot create the secret there: {e.strerror or e}",
                          "set OCTO_HOME to a folder you can write") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(SECRET_BYTES))
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        pass  # another first run won the race: its secret is the one
    finally:
        os.unlink(tmp)


def read_secret(path: Path) -> bytes:
    """Read a secret file written by load_or_create_secret (on this or another machine): a
    regular file of 16..4096 bytes that only its owner may read, as ssh wants of a key."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO must not hang the open
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such secret file",
            "copy $OCTO_HOME/secret (default ~/.octostore/secret) from the coordinator's machine, "
            "or pass --secret-file",
        ) from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the secret") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot open the secret: {e.strerror or e}") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise ConfigError(f"{path}: the secret is {_file_kind(status.st_mode)}, not a regular file",
                              "point --secret-file at the file $OCTO_HOME/secret was copied to")
        data = os.read(fd, SECRET_MAX_BYTES + 1)
    except IsADirectoryError:
        raise ConfigError(f"{path}: the secret is a folder, not a regular file") from None
    finally:
        os.close(fd)
    if len(data) > SECRET_MAX_BYTES:
        raise ConfigError(f"{path}: secret is over {SECRET_MAX_BYTES} bytes: not a file octostore wrote",
                          "point --secret-file at the file $OCTO_HOME/secret was copied to")
    if len(data) < 16:
        raise ConfigError(f"{path}: secret is {len(data)} bytes, need at least 16")
    mode = status.st_mode & 0o777
    if mode & 0o077:  # refused, as ssh refuses such a key: anyone who can read it can run code on workers
        raise ConfigError(f"{path}: the secret is readable by other users (mode {mode:o})", f"chmod 600 {path}")
    return data


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def require_job(home: Path, job_id: str) -> JobPaths:
    """Return the paths of an existing job, or a clear error naming the id."""
    paths = job_paths(home, job_id)
    if not paths.state.is_dir():
        raise StoreError(f"no job {job_id!r} under {home / 'jobs'}", "list the jobs with: octo jobs")
    return paths

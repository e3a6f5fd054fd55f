"""One coordinator per job: an flock on the job's lock file, held for the coordinator's life.

flock, not a pid file: the kernel drops the lock when the holder dies, however
it dies (``kill -9`` included), so a stale lock can never block a resume and
needs no detection.  The file also records who holds it (pid, host), so a
second coordinator can say which process to stop, and ``octo cancel`` knows
whom to signal.  Not for NFS: the job folder is on the coordinator's local disk.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from ..errors import UsageError


class JobLock:
    """The exclusive lock of one job folder."""

    def __init__(self, path: Path, job_id: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(path)
            os.close(self._fd)
            where = f" (pid {holder[0]} on {holder[1]})" if holder else ""
            raise UsageError(f"job {job_id!r} is already running{where}",
                             f"wait for it, or stop it with: octo cancel {job_id}") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        """Drop the lock (also dropped by the kernel when the process dies)."""
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = -1


def read_holder(path: Path) -> tuple[int, str] | None:
    """(pid, host) of the coordinator that holds or last held the lock, if recorded."""
    try:
        pid, host = path.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def is_locked(path: Path) -> bool:
    """True if a live process holds the lock at `path` (tries to take it, and lets go)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also drops a lock we just took
    return False

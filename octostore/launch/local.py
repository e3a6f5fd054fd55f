"""Start local worker processes for a coordinator, replace the ones that die, and never orphan one.

Workers are fresh interpreters (``subprocess``, i.e. spawn, never ``fork``
after LMDB is open: an LMDB environment must not cross a fork).  Each gets the
secret as a hex line on stdin, never in argv or the environment (``ps`` shows
both).  The pipe then stays open: when the coordinator exits, for any reason
including ``kill -9``, the kernel closes it and the worker's stdin watchdog
exits the worker.  No orphans.

With TLS on, each worker gets the CA file's path as ``--tls-ca PATH`` (a path is
no secret) and verifies the coordinator's certificate against it.

A worker's stdout goes to the coordinator's stderr: what ``mapfn`` prints
stays visible, and the coordinator's stdout holds only ``final``'s output.
"""

from __future__ import annotations

import logging
import subprocess
import sys

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
"""How long a worker gets to exit after its stdin closes before it is killed."""


class LocalWorkers:
    """The worker processes one coordinator started on this machine."""

    def __init__(self, address: tuple[str, int], secret: bytes, tls_ca: str | None = None) -> None:
        self.address = address
        self._secret = secret
        self._tls_args = ["--tls-ca", tls_ca] if tls_ca else []
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, count: int) -> None:
        """Start `count` workers connecting to the coordinator."""
        for _ in range(count):
            proc = subprocess.Popen(
                [sys.executable, "-m", "octostore.worker", f"{self.address[0]}:{self.address[1]}", *self._tls_args],
                stdin=subprocess.PIPE, stdout=2, stderr=None, close_fds=True,  # stdout -> our fd 2
            )
            assert proc.stdin is not None
            proc.stdin.write(self._secret.hex().encode() + b"\n")
            proc.stdin.flush()
            self._procs[proc.pid] = proc
        log.debug("local workers: pids %s", sorted(self._procs))

    def reap(self) -> list[tuple[int, int]]:
        """(pid, returncode) of the workers that exited since the last call."""
        exited = [(pid, proc.returncode) for pid, proc in self._procs.items() if proc.poll() is not None]
        for pid, _ in exited:
            self._close_stdin(self._procs.pop(pid))
        return exited

    def stop(self) -> None:
        """Close every worker's stdin (they exit), wait a little, kill what is left."""
        for proc in self._procs.values():
            self._close_stdin(proc)
        for proc in self._procs.values():
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    @staticmethod
    def _close_stdin(proc: subprocess.Popen[bytes]) -> None:
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass


def start_local_workers(count: int, address: tuple[str, int], secret: bytes,
                        tls_ca: str | None = None) -> LocalWorkers:
    """Start `count` workers connecting to `address` (over TLS, verified with `tls_ca`, if given)."""
    workers = LocalWorkers(address, secret, tls_ca)
    workers.start(count)
    return workers

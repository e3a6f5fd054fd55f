"""Start local worker processes for a coordinator, and make sure they die with it.

Workers are fresh interpreters (``subprocess``, i.e. spawn, never ``fork``
after LMDB is open: an LMDB environment must not cross a fork).  Each gets the
secret as a hex line on stdin, never in argv or the environment (``ps`` shows
both).  The pipe then stays open: when the coordinator exits, for any reason
including ``kill -9``, the kernel closes it and the worker's stdin watchdog
exits the worker.  No orphans.

A worker's stdout goes to the coordinator's stderr: what ``mapfn`` prints
stays visible, and the coordinator's stdout holds only ``final``'s output.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
"""How long a worker gets to exit after its stdin closes before it is killed."""


def start_local_workers(count: int, address: tuple[str, int], secret: bytes) -> Callable[[], None]:
    """Start `count` workers connecting to `address`; return a function that stops them."""
    procs = []
    for _ in range(count):
        proc = subprocess.Popen(
            [sys.executable, "-m", "octostore.worker", f"{address[0]}:{address[1]}"],
            stdin=subprocess.PIPE, stdout=2, stderr=None, close_fds=True,  # stdout -> our fd 2
        )
        assert proc.stdin is not None
        proc.stdin.write(secret.hex().encode() + b"\n")
        proc.stdin.flush()
        procs.append(proc)
    log.debug("started %d local workers: pids %s", count, [p.pid for p in procs])

    def stop() -> None:
        for proc in procs:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        for proc in procs:
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    return stop

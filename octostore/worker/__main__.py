"""Entry point of a worker started by a coordinator: ``python -m octostore.worker HOST:PORT [--tls-ca PATH]``.

The secret arrives as one hex line on stdin (never in argv or the environment,
which ``ps`` shows); stdin then stays open, and its EOF means the coordinator
is gone, so the worker exits.  ``--tls-ca`` turns TLS on, verifying the
coordinator's certificate against that CA file.  Users start workers with
``octo client``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from ..config import MAX_FRAME_BYTES, parse_address
from ..errors import ConnectionLost, OctoError
from .main import run_worker, watch_stdin


def _read_line(fd: int) -> bytes:
    """Read one line from `fd` unbuffered, so nothing after it is swallowed by a buffer."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return line


_USAGE = "usage: python -m octostore.worker HOST:PORT [--tls-ca PATH]  (secret as a hex line on stdin)"


def _parse_args(argv: list[str]) -> tuple[str, str | None] | None:
    """(address, CA path or None) from argv, or None if it does not fit the usage line."""
    if len(argv) == 1:
        return argv[0], None
    if len(argv) == 3 and argv[1] == "--tls-ca":
        return argv[0], argv[2]
    return None


def main() -> int:
    args = _parse_args(sys.argv[1:])
    if args is None:
        print(_USAGE, file=sys.stderr)
        return 2
    address, tls_ca = args
    logging.basicConfig(level=logging.WARNING, format="octo worker: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    secret = bytes.fromhex(_read_line(0).decode().strip())
    watch_stdin()
    try:
        run_worker(parse_address(address), secret, max_frame_bytes=MAX_FRAME_BYTES, tls_ca=tls_ca)
    except ConnectionLost:
        return 0  # the coordinator finished or died; either way there is nothing left to do
    except OctoError as e:
        print(f"octo worker: error: {e.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

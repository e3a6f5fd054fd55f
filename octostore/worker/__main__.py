"""Entry point of a worker started by a coordinator: ``python -m octostore.worker HOST:PORT``.

The secret arrives as one hex line on stdin (never in argv or the environment,
which ``ps`` shows); stdin then stays open, and its EOF means the coordinator
is gone, so the worker exits.  Users start workers with ``octo client``.
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


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m octostore.worker HOST:PORT  (secret as a hex line on stdin)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="octo worker: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    secret = bytes.fromhex(_read_line(0).decode().strip())
    watch_stdin()
    try:
        run_worker(parse_address(sys.argv[1]), secret, max_frame_bytes=MAX_FRAME_BYTES)
    except ConnectionLost:
        return 0  # the coordinator finished or died; either way there is nothing left to do
    except OctoError as e:
        print(f"octo worker: error: {e.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

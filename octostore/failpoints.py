"""Named points where the coordinator kills itself with SIGKILL, for crash tests.

    OCTO_FAILPOINTS="after-map-commit:3,mid-final:10" octo submit job.py

kills the coordinator right after the 3rd map commit (or the 10th final()
call, whichever comes first).  The points, in the order a job meets them:

``before-map-commit``     a map attempt's segments are stored, its state commit is not
``after-map-commit``      the map task is DONE in the state store; the worker has no ack yet
``before-reduce-commit``  a reduce attempt's results are stored, its state commit is not
``after-reduce-commit``   the reduce task is DONE; no ack yet
``mid-final``             before the Nth call of final() (N-1 results were printed)
``during-resume``         `octo resume`: the epoch is raised, garbage not yet collected
``after-gc``              `octo resume`: garbage collected, no task handed out yet

This is the one module that reads the environment below the CLI (style.md):
failpoints are a test hook, not configuration, and must work in a coordinator
started by any means.  With the variable unset, ``hit`` is a dict lookup.
"""

from __future__ import annotations

import os
import signal

from .errors import UsageError

ENV = "OCTO_FAILPOINTS"
POINTS = ("before-map-commit", "after-map-commit", "before-reduce-commit", "after-reduce-commit",
          "mid-final", "during-resume", "after-gc")


def _parse(text: str) -> dict[str, int]:
    armed = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition(":")
        if name not in POINTS or not (count or "1").isdigit():
            raise UsageError(f"{ENV}: cannot read failpoint {item!r}", f"known points: {', '.join(POINTS)}")
        armed[name] = int(count or 1)
    return armed


_hits: dict[str, int] = {}
try:
    _armed, _error = _parse(os.environ.get(ENV, "")), None
except UsageError as e:  # reported by check(), at the start of a run: not an import-time crash
    _armed, _error = {}, e


def check() -> None:
    """Raise UsageError if OCTO_FAILPOINTS cannot be read (called before a coordinator starts)."""
    if _error is not None:
        raise _error


def armed(name: str) -> bool:
    """Whether point `name` is armed: a loop run per record checks once, then calls hit()."""
    return name in _armed


def hit(name: str) -> None:
    """Count a pass through point `name`; SIGKILL this process on the armed pass."""
    if name in _armed:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] >= _armed[name]:
            os.kill(os.getpid(), signal.SIGKILL)

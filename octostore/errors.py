"""The exceptions octostore raises, one line each on who raises it and when.

Every error that reaches a user carries a first line naming what they can find
(a file and line, an option, a host or a key) and, where we can tell, a hint
on a second line.  The CLI prints ``octo: error: <first line>`` and
``hint: <hint>`` and picks the exit code from the class: 2 for mistakes caught
before anything ran (``UsageError`` and its children), 1 for a job that ran
and failed (``JobFailed``).

Two classes here are not ``OctoError``s, because they never reach a user as
they are: ``UnsupportedKeyError`` is a ``TypeError`` (a key of the wrong type
is one), which the map side turns into a ``JobError`` naming the key, and
``ReduceFailed`` carries reducefn's own exception to the worker, which reports
it as the attempt's failure.
"""

from __future__ import annotations

from typing import Any


class OctoError(Exception):
    """Base of every error octostore raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(OctoError):
    """Raised before anything starts: bad job file, option, config or address."""

    exit_code = 2


class ConfigError(UsageError):
    """Raised when an option or config value is missing, unknown or out of range."""


class JobError(UsageError):
    """Raised when the job file breaks the contract (missing names, bad source, bad pairs)."""


class HostUnusable(UsageError):
    """Raised by launch.ssh for one host that cannot run workers (unreachable, bad host key, wrong versions)."""


class UserCodeError(OctoError):
    """Raised (with the user's own traceback text) when the job's own code raises.

    Exit code 2 when it happens before anything started (the job file's top
    level, iterating ``source``, the first mapfn call on the coordinator), 1 when
    the job was running (final)."""

    def __init__(self, message: str, user_traceback: str, hint: str | None = None, *, started: bool) -> None:
        super().__init__(message, hint)
        self.user_traceback = user_traceback
        self.exit_code = 1 if started else 2


class JobFailed(OctoError):
    """Raised by the coordinator when a job cannot finish; carries the cause's text."""


class JobCancelled(OctoError):
    """Raised by the coordinator when `octo cancel` (SIGTERM) stopped the job; it can be resumed."""


class ProtocolError(OctoError):
    """Raised at the protocol boundary when a peer sends a frame or message we refuse."""


class AuthenticationError(ProtocolError):
    """Raised by the handshake when a peer does not prove it holds the secret."""


class ConnectionLost(OctoError):
    """Raised at the protocol boundary when the peer went away (cleanly or mid-frame)."""


class StoreError(UsageError):
    """Raised when a job's stores are missing or damaged (unknown job id, bad files)."""


class DamagedBlock(OctoError):
    """Raised by blocks.unpack_block when a block fails its checksum or does not decode: its bytes
    changed after they were written (a disk, a file system, a hand); `run` is its run in a merge."""

    def __init__(self, message: str, run: int | None = None) -> None:
        super().__init__(message)
        self.run = run


class DiskFull(OctoError):
    """Raised by the stores when the disk under a job's folder is full; the job stops, resumable."""


class OctostoreInternalError(OctoError):
    """Our bug, not yours: please report it with the traceback."""


class UnsupportedKeyError(TypeError):
    """Raised by keys.encode_key when a key, or a part of a tuple key, has a type or size it cannot encode."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ReduceFailed(Exception):
    """Raised by worker.reduceside.reduce_runs when reducefn raises; carries the key and reducefn's exception."""

    def __init__(self, key: Any, cause: BaseException) -> None:
        super().__init__(key)
        self.key = key
        self.cause = cause

"""Hosts files: which machines run SSH workers, one per line, pssh style.

    # build farm
    node1                                   # port 22, 1 slot, python3
    alice@node2:2222 slots=4 python=/opt/py/bin/python
    [fe80::1%eth0]:22 slots=2               # IPv6 goes in brackets

A line is ``[user@]host[:port]`` and then optional ``key=value`` fields
(``slots``, ``python``); a token starting with ``#`` ends the line.  The same
syntax serves a hosts file and the inline ``ssh.hosts`` list of a config file
(config_file.py), so there is one parser and one set of errors.

Decisions:

- Strict, not forgiving: a stray token, an unknown field or the same host twice
  is an error naming the file and line, because a silently skipped host is a
  cluster that runs at half speed with nobody told why.
- The user is split off at the *last* ``@`` (as OpenSSH does), and neither user
  nor host may start with ``-`` (it would read as an option to ssh).
- Bare IPv6 (``fe80::1``) is refused rather than guessed at: ``fe80::1:22``
  could be a host or a host and a port.  Brackets make it unambiguous.
- Duplicates are the same user, host (case-insensitive) and port.  The same
  machine under two users or two ports is two entries, on purpose (containers).

Pure: text in, ``Host`` records out.  Imports only ``octostore.errors``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import read_user_file
from ..errors import ConfigError

DEFAULT_SSH_PORT = 22
"""Port used when a line names none: sshd's."""

DEFAULT_SLOTS = 1
"""Worker processes per host when neither the line nor the config file says."""

DEFAULT_PYTHON = "python3"
"""Interpreter on the host when neither the line nor the config file says (found on its PATH)."""

LINE_SHAPE = "lines look like [user@]host[:port] [slots=N] [python=PATH]"
"""The hint for a line we cannot read."""

_FIELDS = ("slots", "python")
_DIGITS = re.compile(r"[0-9]+")  # not str.isdigit(): that accepts '²' and other non-ASCII digits
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # DNS names and IPv4; no leading '-' or '.'


@dataclass(frozen=True, slots=True)
class Host:
    """One line of a hosts file: where to ssh and how many workers to start there."""

    host: str  # a name, an IPv4 address, or an IPv6 address without its brackets
    user: str | None = None  # None = ssh's default (the local user or ~/.ssh/config)
    port: int = DEFAULT_SSH_PORT
    slots: int = DEFAULT_SLOTS
    python: str = DEFAULT_PYTHON

    @property
    def label(self) -> str:
        """The host as ``[user@]host:port`` (IPv6 in brackets), for logs and errors."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{user}{host}:{self.port}"


def _error(where: str, problem: str, hint: str | None = LINE_SHAPE) -> ConfigError:
    return ConfigError(f"{where}: {problem}", hint)


# -- one line ------------------------------------------------------------------------------------


def parse_host_line(line: str, where: str, *, slots: int = DEFAULT_SLOTS,
                    python: str = DEFAULT_PYTHON) -> Host | None:
    """Read one line; None for a blank or comment line.  `slots` and `python` apply when
    the line has no such field.  Raises ConfigError("{where}: ...") for a bad line."""
    tokens = _tokens(line)
    if not tokens:
        return None
    user, host, port = _parse_address(tokens[0], where)
    fields = _parse_fields(tokens[1:], where, " ".join(tokens))
    if "slots" in fields:
        slots = _parse_slots(fields["slots"], where)
    if "python" in fields:
        python = fields["python"]
    return Host(host=host, user=user, port=port, slots=slots, python=python)


def _tokens(line: str) -> list[str]:
    """The line's words up to the first one starting with '#'."""
    words = line.split()
    for i, word in enumerate(words):
        if word.startswith("#"):
            return words[:i]
    return words


def _parse_address(token: str, where: str) -> tuple[str | None, str, int]:
    """Split ``[user@]host[:port]`` into (user, host, port)."""
    user, at, rest = token.rpartition("@")
    if at and not user:
        raise _error(where, f"empty user in '{token}'")
    if user.startswith("-"):
        raise _error(where, f"user '{user}' starts with '-' in '{token}'", "user names cannot start with '-'")
    host, port_text = _split_port(rest, token, where)
    if not host:
        raise _error(where, f"empty host in '{token}'")
    _check_host(host, bracketed=rest.startswith("["), token=token, where=where)
    port = DEFAULT_SSH_PORT if port_text is None else _parse_port(port_text, token, where)
    return (user or None), host, port


def _split_port(rest: str, token: str, where: str) -> tuple[str, str | None]:
    """Split ``host[:port]`` or ``[ipv6][:port]``; the port text is None when absent."""
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket:
            raise _error(where, f"missing ']' in '{token}'", "write an IPv6 address as [::1] or [::1]:2222")
        if after and not after.startswith(":"):
            raise _error(where, f"unexpected '{after}' after ']' in '{token}'")
        return host, (after[1:] if after else None)
    if rest.count(":") > 1:
        raise _error(where, f"too many ':' in '{token}'", f"put an IPv6 address in brackets: [::1]:2222; {LINE_SHAPE}")
    host, colon, port_text = rest.partition(":")
    return host, (port_text if colon else None)


def _check_host(host: str, *, bracketed: bool, token: str, where: str) -> None:
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _error(where, f"'{host}' in brackets is not an IPv6 address in '{token}'",
                         "brackets are for IPv6 addresses only: [::1]:2222, but node1:2222") from None
    elif not _HOST_NAME.fullmatch(host):
        raise _error(where, f"host '{host}' is not a host name or address in '{token}'",
                     f"host names use letters, digits, '.', '-' and '_'; {LINE_SHAPE}")


def _parse_port(text: str, token: str, where: str) -> int:
    if not text:
        raise _error(where, f"empty port in '{token}'")
    if not _DIGITS.fullmatch(text):
        raise _error(where, f"port '{text}' is not a number in '{token}'")
    port = int(text)
    if not 1 <= port <= 65535:
        raise _error(where, f"port {port} is out of range in '{token}'", "ports are 1..65535")
    return port


def _parse_fields(tokens: list[str], where: str, written: str) -> dict[str, str]:
    """The line's ``key=value`` fields, each known and given at most once."""
    fields: dict[str, str] = {}
    for token in tokens:
        key, equals, value = token.partition("=")
        if not equals or not _FIELD_NAME.fullmatch(key):
            raise _error(where, f"unexpected '{token}' in '{written}'", f"one host per line; {LINE_SHAPE}")
        if key not in _FIELDS:
            raise _error(where, f"unknown field '{key}' in '{written}'", _unknown_field_hint(key))
        if key in fields:
            raise _error(where, f"field '{key}' is given twice in '{written}'", f"give {key}= once")
        if not value:
            raise _error(where, f"field '{key}' has no value in '{written}'", f"write {key}=VALUE with no spaces")
        fields[key] = value
    return fields


def _unknown_field_hint(key: str) -> str:
    close = difflib.get_close_matches(key, _FIELDS, n=1)
    return f"did you mean '{close[0]}'? {LINE_SHAPE}" if close else f"the fields are slots and python; {LINE_SHAPE}"


def _parse_slots(text: str, where: str) -> int:
    if not _DIGITS.fullmatch(text) or int(text) < 1:
        raise _error(where, f"slots '{text}' is not a positive whole number", "write slots=N with N >= 1, e.g. slots=4")
    return int(text)


# -- many lines ----------------------------------------------------------------------------------


def host_entries(text: str, source: str, *, slots: int = DEFAULT_SLOTS,
                 python: str = DEFAULT_PYTHON) -> Iterator[tuple[str, Host]]:
    """Yield ("{source}:{line}", Host) for each host line of `text`, in order."""
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{source}:{number}"
        host = parse_host_line(line, where, slots=slots, python=python)
        if host is not None:
            yield where, host


def unique_hosts(entries: Iterable[tuple[str, Host]]) -> list[Host]:
    """Return the hosts in order; raise ConfigError at the second entry for the same
    user, host and port.  Each entry carries where it was written ("file:line")."""
    first_at: dict[tuple[str | None, str, int], str] = {}
    hosts = []
    for where, host in entries:
        key = (host.user, host.host.lower(), host.port)
        if key in first_at:
            raise _error(where, f"host '{host.label}' is listed twice (first at {first_at[key]})",
                         "list each host once; to start more workers there, raise its slots=N")
        first_at[key] = where
        hosts.append(host)
    return hosts


def parse_hosts(text: str, source: str, *, slots: int = DEFAULT_SLOTS, python: str = DEFAULT_PYTHON) -> list[Host]:
    """Read a hosts file's text; `source` names it in errors ("{source}:{line}: ...")."""
    return unique_hosts(host_entries(text, source, slots=slots, python=python))


def read_host_text(path: Path) -> str:
    """Return a hosts file's text; ConfigError naming the path if it cannot be read."""
    return read_user_file(path, "hosts file", "check the path; a hosts file has one host per line")


def read_hosts(path: Path, *, slots: int = DEFAULT_SLOTS, python: str = DEFAULT_PYTHON) -> list[Host]:
    """Read the hosts file at `path`; errors name it as given."""
    return parse_hosts(read_host_text(path), str(path), slots=slots, python=python)

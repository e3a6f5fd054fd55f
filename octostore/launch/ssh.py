"""Start workers on other machines over SSH, with host keys verified and the secret on stdin.

For each host of a hosts file (hosts.py): connect with paramiko, reading the
user's ``~/.ssh/config`` (host aliases, user, port, identity files) and using
their keys and agent; check the host key against ``known_hosts`` with
``RejectPolicy``; check that the host runs the same octostore and Python as
the coordinator; then open one channel per slot running::

    PYTHON -m octostore.worker COORDINATOR_HOST:PORT [--tls-ca PATH]

and write the secret as one hex line to the channel's stdin.  The secret is
never in a command line or an environment variable (``ps`` and
``/proc/*/environ`` show both).  The channel *is* the worker's lifeline: its
stdin watchdog exits the worker when the channel closes, so stopping or
killing the coordinator (or ``octo ssh-launch``) leaves no process on any host.

With TLS, PATH is the CA file the worker verifies the coordinator with; it is
not copied: it must exist at that same path on every host.

Host keys: an unknown key is refused with its fingerprint and the flag that
accepts it (``--accept-new-host-keys``, which adds unknown keys to
known_hosts and says so); a *changed* key is always refused (paramiko raises
BadHostKeyException before any policy is asked).  A host that cannot be
reached, or that fails the version check, is reported and skipped: the job
goes on with the others, and fails only if no worker at all can start.

Rejected: running the system ``ssh`` binary (prompts, and errors come back as
text); ``AutoAddPolicy`` (trust on every first use, silently).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shlex
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from .. import __version__
from ..errors import HostUnusable
from ..protocol.messages import PYTHON_VERSION
from .hosts import Host

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
"""Seconds to reach a host's sshd and authenticate before it counts as unreachable."""

_VERSION_PROBE = "import sys, octostore; print(octostore.__version__, '%d.%d' % sys.version_info[:2])"


@dataclass(frozen=True, slots=True)
class SshOptions:
    """How to reach the hosts: the user's files unless a test (or a config) says otherwise."""

    known_hosts: Path = field(default_factory=lambda: Path.home() / ".ssh" / "known_hosts")
    ssh_config: Path | None = field(default_factory=lambda: Path.home() / ".ssh" / "config")
    accept_new_host_keys: bool = False


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: SHA256:base64, no padding."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _AcceptNewKeys(paramiko.MissingHostKeyPolicy):
    """Trust an unknown host key, record it in known_hosts and say so (never a changed key)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.known_hosts, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        log.warning("%s: accepted the new host key %s %s (added to %s)", hostname, key.get_name(),
                    fingerprint(key), self.known_hosts)


def connect(host: Host, options: SshOptions) -> paramiko.SSHClient:
    """Open an SSH connection to `host`, host key verified; raise HostUnusable saying why not."""
    settings = _ssh_config(host, options)
    client = paramiko.SSHClient()
    if options.known_hosts.exists():
        client.load_host_keys(str(options.known_hosts))
    client.set_missing_host_key_policy(
        _AcceptNewKeys(options.known_hosts) if options.accept_new_host_keys else paramiko.RejectPolicy())
    try:
        client.connect(settings["hostname"], port=settings["port"], username=settings["user"],
                       key_filename=settings["identityfile"], timeout=CONNECT_TIMEOUT_S,
                       banner_timeout=CONNECT_TIMEOUT_S, auth_timeout=CONNECT_TIMEOUT_S)
    except paramiko.BadHostKeyException as e:
        raise HostUnusable(
            f"{host.label}: the host key has CHANGED: it offers {e.key.get_name()} {fingerprint(e.key)}, "
            f"known_hosts has {fingerprint(e.expected_key)}",
            f"if the host was really reinstalled, remove its line from {options.known_hosts}") from None
    except paramiko.SSHException as e:
        if "not found in known_hosts" in str(e):
            key = client.get_transport().get_remote_server_key() if client.get_transport() else None
            shown = f" ({key.get_name()} {fingerprint(key)})" if key else ""
            raise HostUnusable(f"{host.label}: unknown host key{shown}",
                               "check the fingerprint, then run again with --accept-new-host-keys") from None
        raise HostUnusable(f"{host.label}: ssh failed: {e}") from None
    except (TimeoutError, OSError) as e:
        raise HostUnusable(f"{host.label}: cannot connect: {e}") from None
    return client


def _ssh_config(host: Host, options: SshOptions) -> dict[str, object]:
    """The host's settings: the hosts file wins, then ~/.ssh/config, then defaults."""
    found: dict[str, object] = {}
    if options.ssh_config is not None and options.ssh_config.exists():
        found = dict(paramiko.SSHConfig.from_path(str(options.ssh_config)).lookup(host.host))
    port = host.port if host.port != 22 or "port" not in found else int(str(found["port"]))
    return {"hostname": found.get("hostname", host.host), "port": port,
            "user": host.user or found.get("user"), "identityfile": found.get("identityfile")}


def check_versions(client: paramiko.SSHClient, host: Host) -> None:
    """Refuse a host whose octostore or Python differs from ours (functions travel as bytecode)."""
    _, stdout, stderr = client.exec_command(f"{shlex.quote(host.python)} -c {shlex.quote(_VERSION_PROBE)}",
                                            timeout=CONNECT_TIMEOUT_S)
    out, err = stdout.read().decode().split(), stderr.read().decode().strip()
    if stdout.channel.recv_exit_status() != 0 or len(out) != 2:
        last = err.splitlines()[-1] if err else "no output"
        raise HostUnusable(f"{host.label}: cannot run octostore with {host.python}: {last}",
                           "install octostore there, or set python=PATH for this host")
    if out != [__version__, PYTHON_VERSION]:
        raise HostUnusable(f"{host.label}: runs octostore {out[0]} on Python {out[1]}; the coordinator runs "
                           f"octostore {__version__} on Python {PYTHON_VERSION}",
                           "install the same versions on every machine")


@dataclass(eq=False)
class _RemoteWorker:
    host: Host
    channel: paramiko.Channel
    key: int  # a stand-in pid for reap(): unique per launcher


class SshWorkers:
    """Workers on SSH hosts for one coordinator: start, reap, replace, stop."""

    def __init__(self, hosts: list[Host], address: tuple[str, int], secret: bytes, options: SshOptions,
                 tls_ca: str | None = None) -> None:
        self.address, self.options = address, options
        self._secret = secret
        self._tls_args = f" --tls-ca {shlex.quote(tls_ca)}" if tls_ca else ""
        self._hosts = hosts
        self._clients: dict[Host, paramiko.SSHClient] = {}
        self._workers: list[_RemoteWorker] = []
        self._next_key = -1  # negative: never equal to a real local pid

    def start_all(self) -> int:
        """Connect to every host and start its slots; return how many workers started."""
        for host in self._hosts:
            try:
                client = connect(host, self.options)
                check_versions(client, host)
            except HostUnusable as e:
                hint = f" (hint: {e.hint})" if e.hint else ""
                log.warning("%s; going on without it%s", e.message, hint)
                continue
            self._clients[host] = client
            for _ in range(host.slots):
                self._start_on(host)
        started = len(self._workers)
        if started:
            log.info("started %d worker(s) over ssh on %d host(s)", started, len(self._clients))
        return started

    def _start_on(self, host: Host) -> None:
        address = f"{self.address[0]}:{self.address[1]}"
        command = f"exec {shlex.quote(host.python)} -m octostore.worker {address}{self._tls_args}"
        channel = self._clients[host].get_transport().open_session()  # type: ignore[union-attr]
        channel.set_combine_stderr(True)
        channel.exec_command(command)
        channel.sendall((self._secret.hex() + "\n").encode())  # stdin: the only way the secret travels
        worker = _RemoteWorker(host, channel, self._next_key)
        self._next_key -= 1
        self._workers.append(worker)
        threading.Thread(target=_relay_output, args=(worker,), daemon=True, name=f"ssh-{host.label}").start()

    def reap(self) -> list[tuple[int, int]]:
        """(stand-in pid, exit status) of remote workers whose process ended."""
        ended = [w for w in self._workers if w.channel.exit_status_ready()]
        for worker in ended:
            self._workers.remove(worker)
        return [(w.key, w.channel.recv_exit_status()) for w in ended]

    def start(self, count: int) -> None:
        """Start `count` replacements, spread over the hosts that are still connected."""
        live = [h for h, c in self._clients.items() if c.get_transport() and c.get_transport().is_active()]
        for i in range(count if live else 0):
            self._start_on(live[i % len(live)])

    def stop(self) -> None:
        """Close every channel (the workers' stdin ends, so they exit) and every connection."""
        for worker in self._workers:
            worker.channel.close()
        for client in self._clients.values():
            client.close()
        self._workers.clear()
        self._clients.clear()

    @property
    def hosts_in_use(self) -> list[Host]:
        return list(self._clients)


def _relay_output(worker: _RemoteWorker) -> None:
    """Log what a remote worker prints (user prints, errors), prefixed by its host; never parse it."""
    for line in worker.channel.makefile("r"):
        log.info("[%s] %s", worker.host.label, line.rstrip())


def advertised_address(bind: str, port: int) -> tuple[str, int]:
    """The address remote workers should dial: the bind address, or this host's name for a wildcard."""
    return (socket.getfqdn() if bind in ("0.0.0.0", "::", "") else bind), port


__all__ = ["SshWorkers", "SshOptions", "connect", "check_versions", "fingerprint", "advertised_address"]

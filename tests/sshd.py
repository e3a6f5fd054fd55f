"""A real OpenSSH sshd on loopback for the SSH launch tests: `Sshd` and the `sshd` fixtures.

Design. Each `Sshd` owns a directory holding everything sshd and a client need: an ed25519 host
key, an ed25519 user key pair with its authorized_keys, and an sshd_config. It runs
`/usr/sbin/sshd -D -e -f CONFIG` in its own process group, listening on one free port on
127.0.0.1, 127.0.0.2 and 127.0.0.3 (all of 127.0.0.0/8 is loopback on Linux), so a test sees
three distinct "hosts". It runs as whoever runs the tests: as root (CI) any user may log in; as
another user sshd can only log in that same user, which is `Sshd.user`.

Readiness is a handshake, not a sleep: sshd logs "Server listening on ADDR port N." after each
listen(), and `start` polls for all three lines, then reads an "SSH-" banner on each address.
A free port is found by bind-and-close, so another process can take it first; sshd then logs a
bind failure (for one address it would keep running on the other two), and `start` restarts
it on a new port (`_START_ATTEMPTS`).

Stopping. Every connection's processes are in sessions of their own (sshd calls setsid for each
connection and each command), so killing sshd's process group reaches only the listener. And
PID 1 on these machines reaps orphans lazily (seen: ~1 s), so a process whose parent died first
shows in `ps` as a zombie for a while. So `stop` kills the descendants deepest first, waiting
each level out while its parents are still alive to reap it, and only then the listener (and
its group), which the `Popen` reaps. It can then check that nothing it saw is left.

Rejected: paramiko's own test server (`paramiko.ServerInterface`) would test paramiko against
itself, not against the sshd that real hosts run; a fixed sleep after start (slow, and flaky
under load). This module imports nothing from octostore.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

import paramiko
import psutil
import pytest

SSHD = "/usr/sbin/sshd"  # absolute: sshd re-executes itself per connection and refuses a relative path
SSH_KEYGEN = "ssh-keygen"
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
"""The addresses sshd listens on: three "hosts" on one machine."""

PRIVSEP_DIR = Path("/run/sshd")
"""sshd as root chroots its pre-auth child here and exits if it is missing ("Missing privilege
separation directory"); systemd makes it on a booted machine, but these machines do not boot."""

START_TIMEOUT_S = 10.0
"""How long `start` waits for sshd to listen (it normally takes ~50 ms)."""

STOP_TIMEOUT_S = 5.0
"""How long `stop` waits for each level of processes to be reaped after SIGKILL."""

_START_ATTEMPTS = 5  # fresh ports to try when another process takes ours between bind-and-close and sshd's bind
_POLL_S = 0.005  # between readiness checks; each check is a file read or a connect to loopback
_BIND_FAILED = re.compile(r"^(Bind to port \d+ on \S+ failed|Cannot bind any address)", re.M)


def free_port() -> int:
    """A port nobody listens on right now on any of `HOSTS` (bound on 127.0.0.1, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@cache
def sshd_version() -> tuple[int, int]:
    """The (major, minor) OpenSSH version of `SSHD`, from `sshd -V` ("OpenSSH_9.2p1 ...")."""
    out = subprocess.run([SSHD, "-V"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    assert match, f"{SSHD} -V printed no OpenSSH version:\n{out.stderr}{out.stdout}"
    return int(match.group(1)), int(match.group(2))


def pub_path(key_path: Path) -> Path:
    """Where ssh-keygen puts the public half of KEY_PATH: KEY_PATH + '.pub'."""
    return key_path.with_name(key_path.name + ".pub")


def generate_key(path: Path, comment: str) -> None:
    """Write an ed25519 key pair with no passphrase at PATH and PATH.pub (replacing any)."""
    path.unlink(missing_ok=True)
    pub_path(path).unlink(missing_ok=True)
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)


def public_key_line(pub_path: Path) -> str:
    """'ssh-ed25519 AAAA...' from an OpenSSH .pub file, without its comment."""
    key_type, blob = pub_path.read_text().split()[:2]
    return f"{key_type} {blob}"


def fingerprint(public_key: str) -> str:
    """OpenSSH's fingerprint of a 'TYPE BASE64' public key: 'SHA256:...' as `ssh-keygen -l` prints."""
    digest = hashlib.sha256(base64.b64decode(public_key.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class Sshd:
    """A real sshd on `HOSTS`, port `port`, with its keys and config in `directory`.

    Use it as a context manager or call `stop()`; `start()` runs in the constructor.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.user = pwd.getpwuid(os.geteuid()).pw_name  # not getpass.getuser(): $USER may lie; sshd goes by uid
        self.host_key_path = directory / "ssh_host_ed25519_key"
        self.client_key_path = directory / "id_ed25519"
        self.authorized_keys_path = directory / "authorized_keys"
        self.config_path = directory / "sshd_config"
        self.log_path = directory / "sshd.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        generate_key(self.host_key_path, "octostore-test-host")
        generate_key(self.client_key_path, "octostore-test-user")
        self.authorized_keys_path.write_text(public_key_line(pub_path(self.client_key_path)) + "\n")
        self.start()

    # -- what a client needs --------------------------------------------------------------------

    @property
    def host_public_key(self) -> str:
        """The host key as 'ssh-ed25519 AAAA...' (no comment)."""
        return public_key_line(pub_path(self.host_key_path))

    @property
    def host_pkey(self) -> paramiko.PKey:
        """The host key as paramiko sees it (compare with `SSHClient.get_transport().get_remote_server_key()`)."""
        return paramiko.Ed25519Key.from_private_key_file(str(self.host_key_path))

    @property
    def host_fingerprint(self) -> str:
        """'SHA256:...', as `ssh-keygen -lf` and OpenSSH's "unknown host key" prompt print it."""
        return fingerprint(self.host_public_key)

    def known_hosts_text(self, hosts: Sequence[str] = HOSTS) -> str:
        """known_hosts lines, one per host: '[127.0.0.2]:PORT ssh-ed25519 AAAA...'."""
        return "".join(f"[{host}]:{self.port} {self.host_public_key}\n" for host in hosts)

    def write_known_hosts(self, path: Path, hosts: Sequence[str] = HOSTS) -> Path:
        path.write_text(self.known_hosts_text(hosts))
        return path

    def write_ssh_config(self, path: Path, known_hosts_path: Path | None = None) -> Path:
        """Write an OpenSSH client config for `HOSTS` (readable by `paramiko.SSHConfig` and `ssh -F`).

        Its UserKnownHostsFile is KNOWN_HOSTS_PATH, by default a file "known_hosts" next to PATH,
        written here with the current host key.
        """
        if known_hosts_path is None:
            known_hosts_path = self.write_known_hosts(path.with_name("known_hosts"))
        path.write_text(
            f"Host {' '.join(HOSTS)}\n"
            f"    Port {self.port}\n"
            f"    User {self.user}\n"
            f"    IdentityFile {self.client_key_path}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {known_hosts_path}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n")
        return path

    def connect(self, host: str = HOSTS[0], known_hosts_path: Path | None = None,
                timeout_s: float = 10.0) -> paramiko.SSHClient:
        """A paramiko client logged in to HOST with the user key; RejectPolicy on unknown host keys.

        KNOWN_HOSTS_PATH defaults to a file holding the current host key for all `HOSTS`.
        Raises what `SSHClient.connect` raises (`SSHException`, `BadHostKeyException`, ...).
        """
        if known_hosts_path is None:
            known_hosts_path = self.write_known_hosts(self.directory / "known_hosts")
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(host, port=self.port, username=self.user, key_filename=str(self.client_key_path),
                           look_for_keys=False, allow_agent=False, timeout=timeout_s,
                           banner_timeout=timeout_s, auth_timeout=timeout_s)
        except BaseException:
            client.close()
            raise
        return client

    # -- the process ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The listener's pid, or None when stopped."""
        return self._proc.pid if self._proc is not None else None

    def stderr_text(self) -> str:
        """Everything sshd has logged (all starts), for assertion messages."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, port: int | None = None) -> None:
        """Start sshd and return once it serves on all `HOSTS`; on PORT if given, else on a free one.

        Raises AssertionError, with sshd's log, if it exits or is not listening within
        `START_TIMEOUT_S`, or if PORT is taken.
        """
        assert self._proc is None, "sshd is already running; stop() it first"
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.port = port or free_port()
            if self._start_on_port():
                return
            if port is not None or attempt == _START_ATTEMPTS:
                raise AssertionError(f"sshd could not bind port {self.port} on {', '.join(HOSTS)}:\n"
                                     + self.stderr_text())

    def _start_on_port(self) -> bool:
        """Run sshd on `self.port`; True once it serves, False (and stopped) if the port was taken."""
        self._write_config()
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config_path)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, start_new_session=True)
        try:
            is_bound = self._wait_until_listening(log_start)
        except BaseException:
            self.stop()
            raise
        if not is_bound:
            self.stop()
        return is_bound

    def _wait_until_listening(self, log_start: int) -> bool:
        """Wait for sshd's "Server listening" line for each of `HOSTS`, then for a banner on each."""
        assert self._proc is not None
        expected = [f"Server listening on {host} port {self.port}." for host in HOSTS]
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with self.log_path.open("rb") as log:
                log.seek(log_start)
                text = log.read().decode(errors="replace")
            if _BIND_FAILED.search(text):
                return False
            if all(line in text for line in expected):
                break
            if self._proc.poll() is not None:
                raise AssertionError(f"sshd exited with code {self._proc.returncode} before listening:\n"
                                     + self.stderr_text())
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd not listening on port {self.port} within {START_TIMEOUT_S} s:\n"
                                     + self.stderr_text())
            time.sleep(_POLL_S)
        for host in HOSTS:
            with socket.create_connection((host, self.port), timeout=START_TIMEOUT_S) as conn:
                banner = conn.recv(64)
            assert banner.startswith(b"SSH-"), f"{host}:{self.port} answered {banner!r}, not an SSH banner"
        return True

    def _write_config(self) -> None:
        lines = [f"Port {self.port}",
                 *(f"ListenAddress {host}" for host in HOSTS),
                 f"HostKey {self.host_key_path}",
                 f"AuthorizedKeysFile {self.authorized_keys_path}",
                 "PubkeyAuthentication yes",
                 "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no",
                 "UsePAM no",  # PAM needs root, and adds nothing to key login
                 "PermitRootLogin yes",  # CI runs as root
                 "StrictModes no",  # the tmp dir's modes and owners are not sshd's business here
                 f"PidFile {self.directory / 'sshd.pid'}",
                 # AcceptEnv: not set, so no client variable is accepted; the secret goes over stdin.
                 "Subsystem sftp internal-sftp",
                 "MaxStartups 100",  # default 10:30:100 randomly drops connections past 10 unauthenticated
                 "LogLevel VERBOSE"]
        if sshd_version() >= (9, 8):
            # 9.8+ blocks a source address after ~15 connections closed before auth; our readiness
            # probes and unknown-host-key tests are exactly that, and all come from 127.0.0.1.
            lines.append("PerSourcePenalties no")
        self.config_path.write_text("\n".join(lines) + "\n")

    def regenerate_host_key(self) -> None:
        """Restart sshd, on the same port, with a new host key (for "host key changed" tests)."""
        port = self.port
        self.stop()
        generate_key(self.host_key_path, "octostore-test-host")
        self.start(port)

    def stop(self) -> None:
        """Kill every process sshd started (deepest first), then sshd and its group. Idempotent.

        Raises AssertionError if any of them is still alive afterwards.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        seen = _kill_descendants(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(STOP_TIMEOUT_S)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        left = [p for p in seen if _is_alive(p)]
        assert not left, f"processes left after stopping sshd: {left}\n" + self.stderr_text()

    def __enter__(self) -> Sshd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill_descendants(pid: int) -> list[psutil.Process]:
    """SIGKILL PID's descendants, deepest first, each level reaped before the next; return them all.

    A level is killed only while its parents live, so that they reap it at once (PID 1 is slow to).
    Repeats until none is left, in case a connection forked meanwhile.
    """
    seen: list[psutil.Process] = []
    for _ in range(3):
        try:
            descendants = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            break
        if not descendants:
            break
        seen += descendants
        for level in reversed(_levels(pid, descendants)):
            for p in level:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(level, timeout=STOP_TIMEOUT_S)
    return seen


def _levels(root_pid: int, procs: list[psutil.Process]) -> list[list[psutil.Process]]:
    """PROCS grouped by depth below ROOT_PID: children first, then grandchildren, ..."""
    parent_of: dict[int, int] = {}
    for p in procs:
        try:
            parent_of[p.pid] = p.ppid()
        except psutil.NoSuchProcess:  # gone already: any level will do
            parent_of[p.pid] = root_pid
    depth_of: dict[int, int] = {}
    for p in procs:
        depth, pid = 1, parent_of[p.pid]
        while pid != root_pid and pid in parent_of:
            depth, pid = depth + 1, parent_of[pid]
        depth_of[p.pid] = depth
    return [[p for p in procs if depth_of[p.pid] == depth] for depth in range(1, max(depth_of.values()) + 1)]


def _is_alive(p: psutil.Process) -> bool:
    """True if P still runs or is an unreaped zombie (same pid and start time)."""
    try:
        return p.is_running()
    except psutil.NoSuchProcess:
        return False


def require_sshd() -> None:
    """Skip the test if there is no sshd; fail it instead under CI, whose .ci/run installs one."""
    if Path(SSHD).exists():
        return
    message = f"{SSHD} not found: the SSH tests need a real sshd (apt-get install openssh-server)"
    if os.environ.get("CI"):
        pytest.fail(message + "; .ci/run should have installed it", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A fresh sshd for one test (a test may regenerate its host key or stop it)."""
    require_sshd()
    with Sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture(scope="module")
def sshd_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One sshd shared by a module's tests; they must not stop it or change its host key."""
    require_sshd()
    with Sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server

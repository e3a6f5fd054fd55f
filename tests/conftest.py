"""Shared fixtures: an isolated $OCTO_HOME, and running the real `octo` command in a subprocess.

``Running`` is a background `octo` process whose stderr is read line by line,
so a test waits for a line ("waiting for workers", "joined") instead of sleeping.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

pytest_plugins = ["tests.sshd"]  # the real-sshd fixtures (sshd, sshd_module) for every test module

ROOT = Path(__file__).resolve().parent.parent
JOBS = Path(__file__).resolve().parent / "jobs"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "octo-home"
    path.mkdir()
    return path


def octo_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTO_")}
    env["OCTO_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def octo(home: Path, *args: str, timeout_s: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `octo ARGS` to the end in its own process group; kill whatever is left of the group."""
    proc = start_octo(home, *args, **env)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError(f"octo {' '.join(args)} timed out after {timeout_s} s\nstderr:\n{err}") from None
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def job_id_of(stderr: str) -> str:
    match = re.search(r"^job (\S+?):", stderr, re.M)
    assert match, stderr
    return match.group(1)


def start_octo(home: Path, *args: str, **extra_env: str) -> subprocess.Popen[str]:
    """Start `octo ARGS` in the background (its own process group)."""
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=octo_env(home, **extra_env),
                            start_new_session=True, stdin=subprocess.DEVNULL)


def kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


WAIT_S = 30.0
"""How long a test waits for a line or an exit before it fails (every wait here normally takes < 2 s)."""


class Running:
    """A background process in its own process group; two threads collect its stdout and stderr."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._open = 2  # pipes not yet at EOF
        self._threads = [threading.Thread(target=self._pump, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((proc.stdout, self.stdout), (proc.stderr, self.stderr))]
        for thread in self._threads:
            thread.start()

    def _pump(self, pipe: object, lines: list[str]) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            with self._changed:
                lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    def stderr_text(self) -> str:
        with self._changed:
            return "".join(self.stderr)

    def wait_for(self, text: str, count: int = 1, timeout_s: float = WAIT_S) -> list[str]:
        """Return the first `count` stderr lines containing `text`, waiting up to `timeout_s` for them."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = [line for line in self.stderr if text in line]
                if len(found) >= count:
                    return found[:count]
                if self._open == 0:
                    raise AssertionError(f"exited ({self.proc.poll()}) before {count} x {text!r}:\n"
                                         + "".join(self.stderr))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {count} x {text!r} within {timeout_s} s:\n" + "".join(self.stderr))
                self._changed.wait(remaining)

    def finish(self, timeout_s: float = WAIT_S) -> tuple[int, str, str]:
        """Wait for the process to exit; return (exit code, stdout, stderr)."""
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout_s} s:\n{self.stderr_text()}") from None
        for thread in self._threads:
            thread.join(timeout_s)  # children holding the pipes must be gone too
            assert not thread.is_alive(), f"a child still holds the output pipes:\n{self.stderr_text()}"
        return code, "".join(self.stdout), "".join(self.stderr)

    def kill(self) -> None:
        kill_group(self.proc)


def free_port() -> int:
    """A port nobody listens on right now (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, job: Path, *args: str, port: int = 0, **env: str) -> tuple[Running, int]:
    """Start `octo server JOB` on 127.0.0.1 with no local workers; return it once it listens, and its port."""
    server = Running(start_octo(home, "server", str(job), "--bind", "127.0.0.1", "--port", str(port),
                                "--workers", "0", *args, **env))
    try:
        line = server.wait_for("waiting for workers")[0]
        match = re.search(r"octo client 127\.0\.0\.1:(\d+)`", line)
        assert match, line
        assert port in (0, int(match.group(1))), line
        return server, int(match.group(1))
    except BaseException:
        server.kill()
        raise


def start_client(home: Path, port: int, *args: str) -> Running:
    return Running(start_octo(home, "client", f"127.0.0.1:{port}", *args))


def make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (an IP subjectAltName) and its key: (cert, key)."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key

"""Shared fixtures: an isolated $OCTO_HOME, and running the real `octo` command in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

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


def octo(home: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
         **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run `octo ARGS` to completion in its own process group; kill the group on timeout."""
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or octo_env(home, **extra_env),
                            start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"octo {' '.join(args)} timed out\nstderr:\n{err}") from None
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

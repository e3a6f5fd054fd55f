"""No orphans: every process `octo submit` starts is gone when it ends, even after `kill -9` of the coordinator.

Workers watch their stdin, whose other end the coordinator holds, so the
kernel tells them when the coordinator dies (octostore/launch/local.py).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

from . import oracle
from .conftest import JOBS, Running, start_octo

JOB = JOBS / "sec_slow.py"
WORKERS = 2


def is_alive(proc: psutil.Process) -> bool:
    """True while `proc` (the very process, not a reused pid) runs; a zombie has exited."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def workers_of(run: Running) -> list[psutil.Process]:
    """The coordinator's descendants once all its workers have joined."""
    run.wait_for(" joined ", count=WORKERS)
    procs = psutil.Process(run.proc.pid).children(recursive=True)
    assert len(procs) >= WORKERS, [p.cmdline() for p in procs]
    return procs


def test_workers_exit_when_the_coordinator_is_killed(home: Path) -> None:
    run = Running(start_octo(home, "submit", str(JOB), "--workers", str(WORKERS), "--progress", "off",
                             OCTO_TEST_PAUSE_S="0.5"))  # 200 keys at 0.5 s: far from done when killed
    try:
        workers = workers_of(run)
        os.kill(run.proc.pid, signal.SIGKILL)  # the coordinator only, not its process group
        deadline = time.monotonic() + 10
        while alive := [p.pid for p in workers if is_alive(p)]:
            assert time.monotonic() < deadline, f"workers {alive} outlived their coordinator by 10 s"
            time.sleep(0.05)
    finally:
        run.kill()


def test_no_process_is_left_after_a_normal_run(home: Path) -> None:
    run = Running(start_octo(home, "submit", str(JOB), "--workers", str(WORKERS), "--progress", "off",
                             OCTO_TEST_PAUSE_S="0.01"))  # ~1 s of work, so the workers are seen running
    try:
        started = workers_of(run)
        code, out, err = run.finish()
        assert code == 0, err
        assert out == oracle.final_output(JOB)
        left = [(p.pid, p.cmdline()) for p in started if is_alive(p)]
        assert left == [], f"still running after octo submit exited: {left}"
    finally:
        run.kill()

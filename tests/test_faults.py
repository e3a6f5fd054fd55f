"""Worker faults, user faults and the job commands around them: every output still exact."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from . import oracle
from .conftest import JOBS, Running, octo, start_octo, start_server

CANARY = JOBS / "canary.py"
SLOW = dict(OCTO_TEST_PAUSE_S="0.01")


def start_canary(home: Path, job_id: str, *args: str, **env: str) -> Running:
    run = Running(start_octo(home, "submit", str(CANARY), "--workers", "2", "--job-id", job_id, "--map-tasks", "40",
                             "--partitions", "4", "--progress", "off", *args, **{**SLOW, **env}))
    run.wait_for("joined", count=2)
    return run


def worker_pids(run: Running) -> list[int]:
    return [p.pid for p in psutil.Process(run.proc.pid).children() if "octostore.worker" in " ".join(p.cmdline())]


def finish_exactly(run: Running) -> str:
    code, out, err = run.finish(timeout_s=90)
    assert code == 0, err
    assert out == oracle.final_output(CANARY)
    return err


def test_a_worker_killed_with_sigkill_changes_nothing(home: Path) -> None:
    run = start_canary(home, "w-kill")
    try:
        time.sleep(0.5)  # let it get into its tasks
        victim = worker_pids(run)[0]
        os.kill(victim, signal.SIGKILL)
        err = finish_exactly(run)
        assert f"worker process {victim} died (signal SIGKILL)" in err
        assert "starting a replacement" in err
    finally:
        run.kill()


def test_a_worker_frozen_past_its_lease_loses_its_task(home: Path) -> None:
    run = start_canary(home, "w-stop", "--lease", "1.5")
    try:
        time.sleep(0.5)
        victim = worker_pids(run)[0]
        os.kill(victim, signal.SIGSTOP)
        run.wait_for("silent for", timeout_s=15)
        os.kill(victim, signal.SIGCONT)  # it wakes up to a closed connection and exits
        err = finish_exactly(run)
        assert "lease 1.5 s" in err
    finally:
        run.kill()


def test_a_worker_that_dies_inside_mapfn_counts_as_a_failed_attempt(home: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCTO_TEST_MARKERS", str(tmp_path))  # for the oracle, which runs in this process
    job = JOBS / "dies_once.py"
    result = octo(home, "submit", str(job), "--workers", "2", "--map-tasks", "6", OCTO_TEST_MARKERS=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "died (exit code 3) while running map task" in result.stderr
    assert result.stdout == oracle.final_output(job)  # the marker exists now, so the oracle's mapfn never exits


def test_a_task_whose_worker_exits_cleanly_every_time_fails_the_job_in_bounded_time(home: Path) -> None:
    """os._exit(0) in mapfn was not counted: workers were replaced until their limit, then the job waited forever."""
    started = time.monotonic()
    result = octo(home, "submit", str(JOBS / "exits_cleanly.py"), "--workers", "2", "--map-tasks", "6",
                  "--progress", "off", "--job-id", "exits", timeout_s=120)
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 60
    exits = re.compile(r"worker process \d+ exited \(exit code 0\) while running map task 1 \(attempt \d of 4\)")
    lines = result.stderr.splitlines()
    retried = [line for line in lines if exits.search(line) and "; retrying (attempt" in line]
    assert len(retried) == 3, result.stderr  # each exit counted; the first three retried
    assert lines[-1].startswith("octo: error: ") and exits.search(lines[-1]), result.stderr  # the 4th ends the job
    assert octo(home, "status", "exits").stdout.count("FAILED") >= 1


def test_cancel_then_resume(home: Path) -> None:
    run = start_canary(home, "stopme")
    try:
        cancelled = octo(home, "cancel", "stopme")
        assert cancelled.returncode == 0, cancelled.stderr
        assert "job stopme cancelled; continue it with: octo resume stopme" in cancelled.stderr
        code, _, err = run.finish()
        assert code == 1
        assert "octo: error: job stopme cancelled" in err
        again = octo(home, "cancel", "stopme")
        assert again.returncode == 2
        assert again.stderr.splitlines()[0] == "octo: error: job 'stopme' is not running (it is CANCELLED)"
        resumed = octo(home, "resume", "stopme", **SLOW)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout == oracle.final_output(CANARY)
    finally:
        run.kill()


def test_two_coordinators_never_run_one_job(home: Path) -> None:
    run = start_canary(home, "busy")
    try:
        second = octo(home, "resume", "busy")
        assert second.returncode == 2
        assert second.stderr.splitlines()[0] == (
            f"octo: error: job 'busy' is already running (pid {run.proc.pid} on {os.uname().nodename})")
        finish_exactly(run)
    finally:
        run.kill()


def test_resume_of_a_finished_job_prints_its_results_again(home: Path) -> None:
    job = JOBS / "combiner.py"
    assert octo(home, "submit", str(job), "--workers", "1", "--job-id", "done").returncode == 0
    again = octo(home, "resume", "done")
    assert again.returncode == 0, again.stderr
    assert again.stdout == oracle.final_output(job)


def test_resume_of_an_unknown_job(home: Path) -> None:
    result = octo(home, "resume", "nope")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"octo: error: no job 'nope' under {home / 'jobs'}"


def test_resume_of_a_damaged_store_changes_nothing(home: Path) -> None:
    state = home / "jobs" / "broken" / "state"
    state.mkdir(parents=True)
    (state / "data.mdb").write_bytes(b"not an lmdb file" * 512)
    before = (state / "data.mdb").read_bytes()
    result = octo(home, "resume", "broken")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith(f"octo: error: {state}: the job's state store is damaged")
    assert (state / "data.mdb").read_bytes() == before


def test_a_failing_job_resumes_after_the_fix_with_reload(home: Path, tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    fixed = (JOBS / "combiner.py").read_text()
    job.write_text(fixed.replace("return key, sum(values)", "return key, sum(values) / 0"))
    failed = octo(home, "submit", str(job), "--workers", "1", "--job-id", "buggy")
    assert failed.returncode == 1
    assert "ZeroDivisionError" in failed.stderr and "attempt 4 of 4" in failed.stderr
    job.write_text(fixed)
    stored = octo(home, "resume", "buggy")
    assert stored.returncode == 1, "without --reload the stored (buggy) copy runs again"
    resumed = octo(home, "resume", "buggy", "--reload")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == oracle.final_output(JOBS / "combiner.py")


def run_with_a_slow_worker(home: Path, job_id: str, *options: str) -> tuple[float, str, str]:
    """`octo server` with one normal and one 30x slower client; return (seconds, stdout, stderr)."""
    job = JOBS / "straggler.py"
    started = time.monotonic()
    server, port = start_server(home, job, "--job-id", job_id, "--map-tasks", "16", "--progress", "off", *options,
                                OCTO_TEST_PAUSE_S="0.01")
    clients = [Running(start_octo(home, "client", f"127.0.0.1:{port}")),
               Running(start_octo(home, "client", f"127.0.0.1:{port}", OCTO_TEST_SLOW_WORKER="1"))]
    try:
        code, out, err = server.finish(timeout_s=90)
        assert code == 0, err
        for client in clients:
            client.finish()
        return time.monotonic() - started, out, err
    finally:
        for process in [server, *clients]:
            process.kill()


def test_backup_attempts_beat_a_slow_worker_and_the_first_commit_wins(home: Path) -> None:
    _, out, err = run_with_a_slow_worker(home, "backups")
    assert out == oracle.final_output(JOBS / "straggler.py")
    assert "backup attempt" in err

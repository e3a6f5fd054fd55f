"""Survive a coordinator crash: kill -9 at every failpoint (and at random), `octo resume`, exact output."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
from pathlib import Path

import pytest

from octostore.failpoints import POINTS

from . import oracle
from .conftest import JOBS, Running, octo, start_octo

CANARY = JOBS / "canary.py"
FAST = dict(OCTO_TEST_PAUSE_S="0.002")
SLOW = dict(OCTO_TEST_PAUSE_S="0.01")  # ~2 s of map work on 2 workers: room to be killed in


def expected() -> str:
    return oracle.final_output(CANARY)


def submit_until_killed(home: Path, job_id: str, failpoint: str) -> subprocess.CompletedProcess[str]:
    result = octo(home, "submit", str(CANARY), "--workers", "2", "--job-id", job_id, "--map-tasks", "20",
                  "--partitions", "4", "--progress", "off", OCTO_FAILPOINTS=failpoint, **FAST)
    assert result.returncode == -signal.SIGKILL, f"{failpoint}: {result.returncode}\n{result.stderr}"
    return result


@pytest.mark.parametrize("failpoint", ["before-map-commit:5", "after-map-commit:5", "before-reduce-commit:2",
                                       "after-reduce-commit:2", "mid-final:100"])
def test_kill_at_a_failpoint_then_resume_gives_the_exact_output(home: Path, failpoint: str) -> None:
    submit_until_killed(home, "crash", failpoint)
    resumed = octo(home, "resume", "crash", "--progress", "off", **FAST)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == expected()
    assert "resuming canary.py (epoch 2" in resumed.stderr


@pytest.mark.parametrize("failpoint", ["during-resume", "after-gc"])
def test_kill_during_resume_then_resume_again(home: Path, failpoint: str) -> None:
    submit_until_killed(home, "twice", "after-map-commit:7")
    killed = octo(home, "resume", "twice", "--progress", "off", OCTO_FAILPOINTS=failpoint, **FAST)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = octo(home, "resume", "twice", "--progress", "off", **FAST)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == expected()
    assert "(epoch 3" in resumed.stderr


def test_every_failpoint_is_covered() -> None:
    covered = {"before-map-commit", "after-map-commit", "before-reduce-commit", "after-reduce-commit", "mid-final",
               "during-resume", "after-gc"}
    assert covered == set(POINTS)


def in_flight(stderr: str) -> set[tuple[str, str]]:
    """Tasks a killed coordinator had handed out but not committed (from its -vv log)."""
    assigned = set(re.findall(r"^(map|reduce) task (\d+) attempt \d+: assigned", stderr, re.M))
    committed = set(re.findall(r"^(map|reduce) task (\d+) attempt \d+: committed", stderr, re.M))
    return assigned - committed


def test_random_kill_loop(home: Path) -> None:
    """kill -9 the coordinator at random moments, resume, repeat; the output is exact every time.

    OCTO_TEST_KILL_ROUNDS (default 2) jobs are each killed until one run finishes; the
    figures for the closing note come from a run with more rounds and `-s`."""
    rng = random.Random(int(os.environ.get("OCTO_TEST_SEED", "20261126")))
    kills, redone = 0, []
    for round_no in range(int(os.environ.get("OCTO_TEST_KILL_ROUNDS", "2"))):
        job_id = f"chaos{round_no}"
        run = Running(start_octo(home, "-vv", "submit", str(CANARY), "--workers", "2", "--job-id", job_id,
                                 "--map-tasks", "40", "--partitions", "4", "--progress", "off", **SLOW))
        while True:
            try:
                run.proc.wait(rng.uniform(0.2, 2.5))
            except subprocess.TimeoutExpired:
                os.kill(run.proc.pid, signal.SIGKILL)
                _, _, err = run.finish()
                kills += 1
                redone.append(len(in_flight(err)))
                run = Running(start_octo(home, "-vv", "resume", job_id, "--progress", "off", **SLOW))
                continue
            code, out, err = run.finish()
            assert code == 0, err
            assert out == expected()
            break
    redone.sort()
    print(f"\nrandom kills: {kills}, all resumed to the exact output; tasks redone per resume: "
          f"max {max(redone, default=0)}, median {redone[len(redone) // 2] if redone else 0}")
    assert kills >= 1

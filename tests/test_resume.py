"""Survive a coordinator crash: kill -9 at every failpoint (and at random), `octo resume`, exact output."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
from pathlib import Path

import pytest

from octostore import api
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


def test_resume_runs_in_the_submit_folder_and_gives_the_caller_its_own_back(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A source that reads relative paths still finds its files when the job is resumed from another
    folder, and the caller of api.resume (a notebook, a script) is not left in the job's folder."""
    submitted_from, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    submitted_from.mkdir()
    elsewhere.mkdir()
    (submitted_from / "one.txt").write_text("b a b\n")
    (submitted_from / "two.txt").write_text("c b\n")
    job = submitted_from / "relative.py"
    job.write_text("class Files:\n"
                   "    def __iter__(self):\n        return iter(['one.txt', 'two.txt'])\n"
                   "    def __getitem__(self, name):\n        return open(name).read()  # relative to the cwd\n\n"
                   "source = Files()\n\n"
                   "def mapfn(key, value):\n    for word in value.split():\n        yield word, 1\n\n"
                   "def reducefn(key, values):\n    return key, len(values)\n\n"
                   "def final(key, value):\n    print(key, value)\n")
    monkeypatch.chdir(submitted_from)
    crashed = octo(home, "submit", str(job), "--workers", "1", "--map-tasks", "2", "--job-id", "rel",
                   "--progress", "off", OCTO_FAILPOINTS="after-map-commit:1")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    monkeypatch.chdir(elsewhere)
    api.resume(home, "rel", progress="off")  # the second map task reads two.txt again
    assert capsys.readouterr().out == "a 1\nb 3\nc 1\n"
    assert Path.cwd() == elsewhere

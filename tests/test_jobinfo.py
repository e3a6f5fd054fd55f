"""octostore.jobinfo on real state stores in tmp_path (list_jobs, job_status), cli.show's text of them, and one real job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import lmdb
import pytest

from cli.show import format_duration, format_jobs, format_status, format_time
from octostore.errors import ConfigError, StoreError
from octostore.jobinfo import DAMAGED, JobStatus, JobSummary, job_status, list_jobs
from octostore.stores.state import StateStore

from .conftest import JOBS, WAIT_S, Running, octo, start_octo

TRACEBACK = ('Traceback (most recent call last):\n  File "/jobs/wc.py", line 4, in mapfn\n    1 / 0\n'
             "ZeroDivisionError: division by zero\n")


def make_job(home: Path, job_id: str, *, map_tasks: int = 2, partitions: int = 2,
             created_at: float = 1000.0) -> StateStore:
    """A job folder with a state store as submit writes it; the caller closes the store before inspecting."""
    root = home / "jobs" / job_id
    root.mkdir(parents=True)
    store = StateStore(root / "state", 1 << 20)
    meta = {"job_id": job_id, "job_file": "/jobs/wc.py", "partitions": partitions, "map_tasks": map_tasks,
            "epoch": 1, "octostore": "0.1.0", "argv": ["octo", "submit", "wc.py"]}
    store.create_job(meta, [[f"k{i}"] for i in range(map_tasks)], partitions)
    store.set_meta(created_at=created_at)
    return store


def finish(store: StateStore, state: str, finished_at: float, **meta: object) -> None:
    store.set_meta(state=state, finished_at=finished_at, **meta)
    store.close()


def make_damaged(home: Path, job_id: str, mtime: float) -> Path:
    state = home / "jobs" / job_id / "state"
    state.mkdir(parents=True)
    (state / "data.mdb").write_bytes(b"not an lmdb file" * 512)
    os.utime(state / "data.mdb", (mtime, mtime))
    return state


def write_live(home: Path, job_id: str, pid: int, host: str | None = None) -> dict[str, object]:
    live = {"pid": pid, "host": host or socket.gethostname(), "updated_at": 5000.0, "phase": "map",
            "workers": [{"name": "w1", "task": "map 1 attempt 2"}, {"name": "w2", "task": None}],
            "bytes_in": 3 * (1 << 20) // 2, "bytes_out": 512}
    (home / "jobs" / job_id / "status.json").write_text(json.dumps(live))
    return live


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid names no process (until the kernel reuses it)
    return proc.pid


def failed_job(home: Path) -> None:
    """j-failed: map 0 done, map 1 FAILED after 2 attempts, map 2 done on its second attempt; 1 of 2 reduces done."""
    store = make_job(home, "j-failed", map_tasks=3, created_at=2000.0)
    store.commit_task("map", 0, 1, None)
    store.record_failure("map", 1, "first\n" + TRACEBACK, failed=False)
    store.record_failure("map", 1, "mapfn raised on key 'k1' (map task 1, attempt 2 of 2)\n" + TRACEBACK, failed=True)
    store.record_failure("map", 2, "worker process 77 died (signal SIGKILL)", failed=False)
    store.commit_task("map", 2, 2, None)
    store.commit_task("reduce", 1, 1, None)
    finish(store, "FAILED", 2090.0, error="map task 1 failed 2 times\nlast: ZeroDivisionError")


# -- list_jobs ------------------------------------------------------------------------------------


def test_list_jobs_oldest_first_with_task_counts_and_damaged_stores(home: Path) -> None:
    done = make_job(home, "j-done", created_at=1000.0)
    for kind in ("map", "reduce"):
        for task in range(2):
            done.commit_task(kind, task, 1, None)
    finish(done, "DONE", 1012.5)
    failed_job(home)
    running = make_job(home, "j-running", map_tasks=4, partitions=3, created_at=time.time() - 300)
    running.commit_task("map", 3, 1, None)
    running.close()
    make_damaged(home, "j-damaged", mtime=1500.0)
    (home / "jobs" / "no-state").mkdir()  # not a job: no state/ folder
    (home / "jobs" / "notes.txt").write_text("a stray file")

    jobs = list_jobs(home)

    assert [j.job_id for j in jobs] == ["j-done", "j-damaged", "j-failed", "j-running"]
    assert jobs[:3] == [
        JobSummary("j-done", "DONE", 1000.0, 12.5, 2, 2, 2, 2),
        JobSummary("j-damaged", DAMAGED, 1500.0, None, 0, 0, 0, 0),
        JobSummary("j-failed", "FAILED", 2000.0, 90.0, 2, 3, 1, 2),
    ]
    assert jobs[3].duration_s is not None and 300 <= jobs[3].duration_s < 330  # now - created_at
    assert replace(jobs[3], started_at=0.0, duration_s=None) == JobSummary("j-running", "MAPPING", 0.0, None, 1, 4, 0, 3)
    assert list_jobs(home)[1] == jobs[1]  # opening the damaged store made lock.mdb; its start time did not move


def test_list_jobs_of_an_empty_home(home: Path) -> None:
    assert list_jobs(home) == []
    (home / "jobs").mkdir()
    assert list_jobs(home) == []


# -- job_status ------------------------------------------------------------------------------------


def test_status_of_a_failed_job_counts_tasks_attempts_and_failures(home: Path) -> None:
    failed_job(home)
    status = job_status(home, "j-failed")
    assert status == JobStatus(
        summary=JobSummary("j-failed", "FAILED", 2000.0, 90.0, 2, 3, 1, 2),
        phase="map",
        epoch=1,
        partitions=2,
        tasks_by_state={"map": {"PENDING": 0, "DONE": 2, "FAILED": 1}, "reduce": {"PENDING": 1, "DONE": 1, "FAILED": 0}},
        attempts=3,
        failures=[("map", 1, 2, "mapfn raised on key 'k1' (map task 1, attempt 2 of 2)\n" + TRACEBACK),
                  ("map", 2, 1, "worker process 77 died (signal SIGKILL)")],
        error="map task 1 failed 2 times\nlast: ZeroDivisionError",
        live=None,
        is_running=False,
    )
    text = format_status(status)
    lines = text.splitlines()
    assert lines[:6] == [
        "job j-failed: FAILED (phase map), epoch 1, 2 partitions",
        f"started {format_time(2000.0)}, duration 1m30s",
        "map tasks: 2/3 done (1 FAILED)",
        "reduce tasks: 1/2 done (1 PENDING)",
        "failed attempts: 3",
        "coordinator: not running",
    ]
    assert text.endswith(
        "error: map task 1 failed 2 times\n"
        "  last: ZeroDivisionError\n"
        "failures:\n"
        "  map task 1: 2 failed attempts\n"
        "    mapfn raised on key 'k1' (map task 1, attempt 2 of 2)\n"
        "    Traceback (most recent call last):\n"
        '      File "/jobs/wc.py", line 4, in mapfn\n'
        "        1 / 0\n"
        "    ZeroDivisionError: division by zero\n"
        "  map task 2: 1 failed attempt\n"
        "    worker process 77 died (signal SIGKILL)"
    )


@pytest.mark.parametrize(("state", "map_done", "reduce_done", "phase"), [
    ("MAPPING", 1, 0, "map"),
    ("REDUCING", 2, 1, "reduce"),
    ("FINALIZING", 2, 2, "final"),
    ("REDUCING", 2, 2, "final"),  # a coordinator that died between the last reduce and FINALIZING
    ("DONE", 2, 2, "done"),
])
def test_phase_is_the_first_with_tasks_left(home: Path, state: str, map_done: int, reduce_done: int, phase: str) -> None:
    store = make_job(home, "j")
    for task in range(map_done):
        store.commit_task("map", task, 1, None)
    for task in range(reduce_done):
        store.commit_task("reduce", task, 1, None)
    store.set_meta(state=state)
    store.close()
    assert job_status(home, "j").phase == phase


def test_running_coordinator_shows_workers_and_bytes(home: Path) -> None:
    make_job(home, "j", created_at=time.time() - 65).close()
    live = write_live(home, "j", os.getpid())
    status = job_status(home, "j")
    assert status.live == live
    assert status.is_running is True
    assert status.summary.state == "MAPPING" and status.summary.duration_s is not None
    lines = format_status(status).splitlines()
    assert lines[1].startswith(f"started {format_time(status.summary.started_at)}, duration 1m0")
    assert lines[2:] == [
        "map tasks: 0/2 done (2 PENDING)",
        "reduce tasks: 0/2 done (2 PENDING)",
        "failed attempts: 0",
        f"coordinator: pid {os.getpid()} on {socket.gethostname()}, updated {format_time(5000.0)}",
        "workers: 2",
        "  w1: map 1 attempt 2",
        "  w2: idle",
        "bytes moved: 1.5 MiB in, 512 B out",
    ]


def test_a_task_reported_stuck_is_shown_while_it_runs(home: Path) -> None:
    make_job(home, "j").close()
    live = write_live(home, "j", os.getpid())
    live["stuck"] = ["map task 1 (running 612 s)"]
    (home / "jobs" / "j" / "status.json").write_text(json.dumps(live))
    assert format_status(job_status(home, "j")).splitlines()[-1] == (
        "may be stuck (10x its phase's median, see the coordinator's log): map task 1 (running 612 s)")
    live["stuck"] = [7]  # malformed: no live view rather than a wrong one
    (home / "jobs" / "j" / "status.json").write_text(json.dumps(live))
    assert job_status(home, "j").live is None


@pytest.mark.parametrize("where", ["dead pid", "other host", "pid 0"])
def test_a_stale_status_file_is_not_a_running_coordinator(home: Path, where: str) -> None:
    make_job(home, "j").close()
    pid = {"dead pid": dead_pid(), "other host": os.getpid(), "pid 0": 0}[where]
    host = "elsewhere.invalid" if where == "other host" else None
    live = write_live(home, "j", pid, host)
    status = job_status(home, "j")
    assert (status.live, status.is_running) == (live, False)
    assert format_status(status).splitlines()[5:] == [
        f"coordinator: not running (last status: pid {pid} on {live['host']}, updated {format_time(5000.0)})"]


@pytest.mark.parametrize("content", [
    "{", b"\xff\xfe", "[]", '{"pid": 1}',
    '{"pid": "1", "host": "h", "updated_at": 1, "workers": [], "bytes_in": 0, "bytes_out": 0}',
    '{"pid": true, "host": "h", "updated_at": 1, "workers": [], "bytes_in": 0, "bytes_out": 0}',
    '{"pid": 1, "host": "h", "updated_at": 1, "workers": [{"task": null}], "bytes_in": 0, "bytes_out": 0}',
    "a directory",
])
def test_an_unreadable_status_file_is_ignored(home: Path, content: str | bytes) -> None:
    make_job(home, "j").close()
    path = home / "jobs" / "j" / "status.json"
    if content == "a directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    status = job_status(home, "j")
    assert (status.live, status.is_running) == (None, False)


def test_unknown_and_invalid_job_ids(home: Path) -> None:
    with pytest.raises(StoreError) as e:
        job_status(home, "nope")
    assert e.value.message == f"no job 'nope' under {home / 'jobs'}"
    with pytest.raises(ConfigError) as c:
        job_status(home, "../etc")
    assert c.value.message == "job id '../etc' is not valid"


# -- damaged stores ----------------------------------------------------------------------------------


def damage_not_lmdb(home: Path) -> str:
    make_damaged(home, "j", mtime=1500.0)
    return "MDB_INVALID: File is not an LMDB file"


def damage_no_data_file(home: Path) -> str:
    (home / "jobs" / "j" / "state").mkdir(parents=True)
    return ""  # StateStore's own message


def damage_no_facts(home: Path) -> str:
    StateStore(home / "jobs" / "j" / "state", 1 << 20).close()  # a submit that died before create_job committed
    return "job fact 'created_at' is missing or not of type int | float"


def damage_task_count(home: Path) -> str:
    store = make_job(home, "j", map_tasks=2)
    store.set_meta(map_tasks=5)
    store.close()
    return "2 map task records, but map_tasks is 5"


def damage_record(home: Path) -> str:
    store = make_job(home, "j")
    store.close()
    env = lmdb.open(str(home / "jobs" / "j" / "state"), max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(b"m0000000001", b"\xc1", db=env.open_db(b"tasks", txn=txn))
    env.close()
    return "unreadable record: "


@pytest.mark.parametrize("damage", [damage_not_lmdb, damage_no_data_file, damage_no_facts, damage_task_count,
                                    damage_record])
def test_a_damaged_store_is_listed_and_its_status_names_the_path(home: Path, damage: object) -> None:
    reason = damage(home)  # type: ignore[operator]
    state = home / "jobs" / "j" / "state"
    assert [(j.job_id, j.state, j.duration_s) for j in list_jobs(home)] == [("j", DAMAGED, None)]
    with pytest.raises(StoreError) as e:
        job_status(home, "j")
    if damage is damage_no_data_file:
        assert e.value.message == f"{state}: no state store here"
    else:
        assert e.value.message.startswith(f"{state}: state store is damaged ({reason}")
        assert "\n" not in e.value.message
        assert e.value.hint == f"it cannot be inspected or resumed; if you no longer need the job: rm -rf {state.parent}"


# -- text -------------------------------------------------------------------------------------------------


def test_format_jobs_is_an_aligned_table() -> None:
    jobs = [JobSummary("j-done", "DONE", 1000.0, 12.34, 8, 8, 4, 4),
            JobSummary("j-damaged", DAMAGED, 1500.0, None, 0, 0, 0, 0),
            JobSummary("20261126-124501-3f9a", "REDUCING", 2000.0, 3725.0, 16, 16, 1, 12)]
    t1, t2, t3 = (format_time(t) for t in (1000.0, 1500.0, 2000.0))
    assert format_jobs(jobs) == "\n".join([
        "ID                    STATE     STARTED              DURATION  MAP    REDUCE",
        f"j-done                DONE      {t1}  12.3s     8/8    4/4",
        f"j-damaged             DAMAGED   {t2}  -         -      -",
        f"20261126-124501-3f9a  REDUCING  {t3}  1h02m     16/16  1/12",
    ])
    assert format_jobs([]) == ""


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0.0, "0.0s"), (12.34, "12.3s"), (59.94, "59.9s"), (59.96, "1m00s"), (245.0, "4m05s"),
    (3599.4, "59m59s"), (3599.6, "1h00m"), (3720.0, "1h02m"), (90061.0, "25h01m"),
])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_time_is_local_time() -> None:
    assert format_time(1000.0) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1000.0))


# -- a real job ---------------------------------------------------------------------------------------------


def test_a_submitted_job_is_done_with_every_task(home: Path) -> None:
    result = octo(home, "submit", str(JOBS / "combiner.py"), "--workers", "1", "--job-id", "j1")
    assert result.returncode == 0, result.stderr
    [summary] = list_jobs(home)
    assert (summary.job_id, summary.state) == ("j1", "DONE")
    assert summary.map_total > 0 and summary.map_done == summary.map_total
    assert summary.reduce_total > 0 and summary.reduce_done == summary.reduce_total
    status = job_status(home, "j1")
    assert status.summary == summary
    assert (status.phase, status.attempts, status.failures, status.error) == ("done", 0, [], None)
    assert status.tasks_by_state == {"map": {"PENDING": 0, "DONE": summary.map_total, "FAILED": 0},
                                     "reduce": {"PENDING": 0, "DONE": summary.reduce_total, "FAILED": 0}}
    assert (status.live, status.is_running) == (None, False)  # the coordinator removed status.json on exit
    assert format_status(status).splitlines()[5] == "coordinator: not running"
    listed = octo(home, "jobs")  # the commands print cli.show's text of the same data
    assert (listed.returncode, listed.stdout) == (0, format_jobs([summary]) + "\n")
    shown = octo(home, "status", "j1")
    assert (shown.returncode, shown.stdout) == (0, format_status(status) + "\n")


def test_a_failed_job_shows_the_users_traceback(home: Path) -> None:
    result = octo(home, "submit", str(JOBS / "bad_map_raises.py"), "--workers", "1", "--job-id", "jf")
    assert result.returncode == 1, result.stderr
    status = job_status(home, "jf")
    assert (status.summary.state, status.phase) == ("FAILED", "map")
    [(kind, _, failures, last_error)] = status.failures
    assert (kind, failures, status.attempts) == ("map", 4, 4)
    assert last_error.startswith("mapfn raised ValueError on key 'doc-13'")
    assert status.error is not None and status.error.startswith("mapfn raised ValueError on key 'doc-13'")
    text = format_status(status)
    assert f'    File "{JOBS / "bad_map_raises.py"}", line 7, in mapfn\n' in text
    assert "\n  ValueError: cannot parse doc-13" in text


def test_a_live_coordinator_then_a_killed_one(home: Path) -> None:
    job = Running(start_octo(home, "submit", str(JOBS / "sec_slow.py"), "--workers", "1", "--job-id", "jl",
                             "--progress", "off", OCTO_TEST_PAUSE_S="0.05"))
    try:
        job.wait_for("job jl:")
        status = wait_for_live(home, "jl")
        assert status.is_running is True
        assert status.live is not None and (status.live["pid"], status.live["host"]) == (job.proc.pid, socket.gethostname())
        assert status.summary.state == "MAPPING"
        assert "coordinator: pid" in format_status(status)
    finally:
        job.kill()  # SIGKILL: the coordinator cannot remove its status.json
    status = job_status(home, "jl")
    assert status.live is not None and status.is_running is False
    assert [j.state for j in list_jobs(home)] == ["MAPPING"]  # the store still says where it stopped


def wait_for_live(home: Path, job_id: str, timeout_s: float = WAIT_S) -> JobStatus:
    """Poll until the coordinator has written its first status.json (it writes one per tick, no line says so)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = job_status(home, job_id)
        if status.live is not None and status.live["workers"]:
            return status
        assert time.monotonic() < deadline, f"no status.json with a worker within {timeout_s} s"
        time.sleep(0.05)

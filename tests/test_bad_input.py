"""Bad input is refused before anything starts; user code that fails at run time fails the job clearly.

Bad input (a broken job file, a bad option or address) must give exit code 2,
a first stderr line ``octo: error: <one line naming the file/line/option>``,
an optional ``hint: ...`` line, and leave no job folder under $OCTO_HOME/jobs.
User code that raises on a worker is retried, then fails the job with exit
code 1, the user's own traceback and a line naming the function and the key.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from . import oracle
from .conftest import JOBS, free_port, kill_group, octo, start_octo


def job_folders(home: Path) -> list[str]:
    jobs = home / "jobs"
    return sorted(p.name for p in jobs.iterdir()) if jobs.exists() else []


def error_line(stderr: str) -> str:
    """The `octo: error: ...` line (the first stderr line for bad input)."""
    for line in stderr.splitlines():
        if line.startswith("octo: error: "):
            return line
    raise AssertionError(f"no 'octo: error:' line on stderr:\n{stderr}")


def hint_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("hint: "):
            return line
    raise AssertionError(f"no 'hint:' line on stderr:\n{stderr}")


def assert_refused(result: subprocess.CompletedProcess[str], home: Path, *named: str) -> str:
    """Check the bad-input contract; return the error line (which must contain every `named` text)."""
    assert job_folders(home) == [], f"bad input created a job folder: {job_folders(home)}"
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("octo: error: "), result.stderr
    for text in named:
        assert text in lines[0], f"{text!r} not in the error line: {lines[0]!r}"
    assert result.stdout == "", "bad input must print nothing on stdout"
    assert result.returncode == 2, f"exit code {result.returncode}, want 2\n{result.stderr}"
    return lines[0]


def submit(home: Path, job: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return octo(home, "submit", str(job), "--workers", "2", "--progress", "off", *args, **env)


# -- a broken job file ---------------------------------------------------------------------


def test_missing_job_file(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_job.py"
    result = submit(home, missing)
    assert_refused(result, home, str(missing), "no such job file")
    assert hint_line(result.stderr) == "hint: octo submit takes the path of a .py file"


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_job_file_that_is_not_a_regular_file_is_named_for_what_it_is(home: Path, tmp_path: Path,
                                                                        kind: str) -> None:
    job = tmp_path / "job.py"
    job.mkdir() if kind == "folder" else os.mkfifo(job)
    result = submit(home, job)
    assert_refused(result, home, f"{job}: {'is a folder, not a job file' if kind == 'folder' else 'is not a regular file'}")
    assert hint_line(result.stderr) == "hint: octo submit takes the path of a .py file"


def test_two_submits_racing_for_one_job_id_one_wins_and_the_other_is_told(home: Path) -> None:
    """The existence check and the job folder's creation were two steps: the loser got a FileExistsError."""
    for round_ in range(4):
        job_id = f"race{round_}"
        procs = [start_octo(home, "submit", str(JOBS / "canary.py"), "--workers", "1", "--progress", "off",
                            "--job-id", job_id) for _ in range(3)]
        try:
            results = [p.communicate(timeout=120) for p in procs]
        finally:
            for proc in procs:
                kill_group(proc)
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 2, 2], [err for _, err in results]
        for proc, (_, err) in zip(procs, results):
            if proc.returncode == 2:
                assert err.splitlines()[0] == f"octo: error: job {job_id!r} already exists in {home / 'jobs' / job_id}"
                assert "Traceback" not in err


def test_syntax_error_names_file_and_line(home: Path) -> None:
    result = submit(home, JOBS / "bad_syntax.py")
    assert_refused(result, home, "bad_syntax.py:3", "'(' was never closed")
    assert "def mapfn(key, value:" in hint_line(result.stderr)


def _raises_at_load(home: Path) -> subprocess.CompletedProcess[str]:
    return submit(home, JOBS / "bad_raises_at_load.py")


def test_job_file_that_raises_is_bad_input(home: Path) -> None:
    assert_refused(_raises_at_load(home), home, "bad_raises_at_load.py", "ZeroDivisionError")


def test_job_file_that_raises_shows_only_the_users_traceback(home: Path) -> None:
    result = _raises_at_load(home)
    assert job_folders(home) == []
    assert result.returncode != 0
    first = result.stderr.splitlines()[0]
    assert first.startswith("octo: error: ") and "bad_raises_at_load.py" in first, result.stderr
    assert "the job file raised ZeroDivisionError: division by zero" in first
    assert re.search(r'File ".*bad_raises_at_load\.py", line 4, in _build_source', result.stderr), result.stderr
    assert re.search(r'File ".*bad_raises_at_load\.py", line 7, in <module>', result.stderr), result.stderr
    assert '10 / counts["a"]' in result.stderr  # the raising line's text
    frames = re.findall(r'File "([^"]+)"', result.stderr)
    ours = [f for f in frames if "/octostore/" in f or f.endswith(("cli/main.py", "click/core.py"))]
    assert ours == [], f"octostore's own frames leaked into the user's traceback: {ours}"


@pytest.mark.parametrize("job, missing", [("bad_no_mapfn", "mapfn"), ("bad_no_reducefn", "reducefn")])
def test_missing_function_is_named(home: Path, job: str, missing: str) -> None:
    result = submit(home, JOBS / f"{job}.py")
    assert_refused(result, home, f"{job}.py", f"'{missing}' is not defined")
    assert f"def {missing}(" in hint_line(result.stderr)


def test_source_that_is_a_list(home: Path) -> None:
    result = submit(home, JOBS / "bad_source_list.py")
    assert_refused(result, home, "bad_source_list.py", "source is a list")
    assert "dict(enumerate(" in hint_line(result.stderr)


def test_source_object_without_getitem(home: Path) -> None:
    result = submit(home, JOBS / "bad_source_object.py")
    assert_refused(result, home, "bad_source_object.py", "Documents", "__getitem__")


def _return_pair(home: Path) -> subprocess.CompletedProcess[str]:
    return submit(home, JOBS / "bad_return_pair.py")


def test_mapfn_that_returns_a_pair_is_caught_with_a_hint(home: Path) -> None:
    result = _return_pair(home)
    assert_refused(result, home, "bad_return_pair.py", "mapfn('doc-1', ...)")
    assert "`yield k, v`" in hint_line(result.stderr)


def test_mapfn_that_returns_a_pair_says_what_it_returned(home: Path) -> None:
    line = error_line(_return_pair(home).stderr)
    assert "mapfn('doc-1', ...) returned ('doc-1', 8)" in line, line


def test_mapfn_that_returns_none(home: Path) -> None:
    result = submit(home, JOBS / "bad_mapfn_none.py")
    assert_refused(result, home, "bad_mapfn_none.py", "mapfn('doc-1', ...)", "returned", "None")
    assert "yield" in hint_line(result.stderr)


def test_mapfn_that_yields_none(home: Path) -> None:
    result = submit(home, JOBS / "bad_yields_none.py")
    assert_refused(result, home, "bad_yields_none.py", "mapfn('doc-1', ...) yielded None, which is not a (key, value) pair")


# -- bad options ---------------------------------------------------------------------------


def test_unknown_option_is_named(home: Path) -> None:
    result = submit(home, JOBS / "wordcount_dict.py", "--bogus")
    assert result.returncode == 2, result.stderr
    assert "No such option '--bogus'" in result.stderr
    assert job_folders(home) == []


def test_job_id_with_a_slash_is_refused(home: Path) -> None:
    result = submit(home, JOBS / "wordcount_dict.py", "--job-id", "bad/id")
    assert_refused(result, home, "job id 'bad/id' is not valid")
    assert "letters, digits" in hint_line(result.stderr)


def test_reused_job_id_is_refused_and_the_old_job_is_kept(home: Path) -> None:
    job = JOBS / "combiner.py"
    first = submit(home, job, "--job-id", "twice")
    assert first.returncode == 0, first.stderr
    assert first.stdout == oracle.final_output(job)
    again = submit(home, job, "--job-id", "twice")
    assert again.returncode == 2, again.stderr
    lines = again.stderr.splitlines()
    assert lines[0].startswith("octo: error: ") and "job 'twice' already exists" in lines[0], again.stderr
    assert hint_line(again.stderr) == "hint: choose another --job-id"
    assert again.stdout == ""
    assert job_folders(home) == ["twice"]
    stored = octo(home, "results", "twice")
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout == "".join(f"{k}\t{v}\n" for k, v in oracle.run(job)), "the old job was damaged"


def test_client_to_an_address_nobody_listens_on(home: Path) -> None:
    (home / "secret").write_bytes(os.urandom(32))
    (home / "secret").chmod(0o600)
    port = free_port()
    started = time.monotonic()
    result = octo(home, "client", f"127.0.0.1:{port}", "--wait", "2", timeout_s=30)
    assert time.monotonic() - started < 10
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert lines[0].startswith("octo: error: ") and f"127.0.0.1:{port}" in lines[0], result.stderr
    assert "cannot reach the coordinator" in lines[0]


def test_client_address_with_a_bad_port(home: Path) -> None:
    result = octo(home, "client", "localhost:notaport", timeout_s=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("octo: error: ") and "'notaport'" in lines[0], result.stderr
    assert "HOST:PORT" in hint_line(result.stderr)


# -- user code that fails at run time ------------------------------------------------------


def _fail_at_run_time(home: Path, name: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = submit(home, JOBS / f"{name}.py")
    return result, time.monotonic() - started


@pytest.mark.parametrize("name, context", [
    ("bad_map_raises", "mapfn raised ValueError on key 'doc-13'"),
    ("bad_reduce_raises", "reducefn raised KeyError on key 3"),
])
def test_user_code_that_always_raises_fails_the_job_after_4_attempts(home: Path, name: str, context: str) -> None:
    result, elapsed_s = _fail_at_run_time(home, name)
    assert result.returncode == 1, result.stderr
    assert elapsed_s < 60
    assert result.stdout == "", "final() must not run for a failed job"
    line = error_line(result.stderr)
    assert context in line and "attempt 4" in line, line
    for attempt in (2, 3, 4):
        assert f"retrying (attempt {attempt} of 4)" in result.stderr, result.stderr


@pytest.mark.parametrize("name, raising_line", [
    ("bad_map_raises", 'raise ValueError(f"cannot parse {key}")'),
    ("bad_reduce_raises", 'return key, {}["missing"]'),
])
def test_user_code_failure_shows_the_users_traceback(home: Path, name: str, raising_line: str) -> None:
    result, _ = _fail_at_run_time(home, name)
    assert result.returncode == 1, result.stderr
    assert re.search(rf'File ".*{name}\.py", line \d+, in (mapfn|reducefn)', result.stderr), result.stderr
    assert raising_line in result.stderr, result.stderr


@pytest.mark.parametrize("name, key_repr, type_name", [
    ("bad_list_key", r"\['w\d', 'x'\]", "list"),  # which source key fails first depends on scheduling
    ("bad_set_key", r"'w\d'", "set"),
])
def test_unsupported_key_type_fails_the_job_naming_the_type(home: Path, name: str, key_repr: str,
                                                           type_name: str) -> None:
    result, elapsed_s = _fail_at_run_time(home, name)
    assert result.returncode != 0, result.stderr
    assert elapsed_s < 60
    line = error_line(result.stderr)
    assert f"{name}.py: mapfn(" in line and re.search(key_repr, line), line
    assert re.search(rf"\b{type_name}\b", line), line
    assert "retrying" not in result.stderr, "a contract error is not worth retrying"


def test_mapfn_that_fails_once_is_retried_and_the_output_is_exact(home: Path, tmp_path: Path) -> None:
    job = JOBS / "bad_flaky.py"
    flaky_dir = tmp_path / "flaky"
    flaky_dir.mkdir()
    result = submit(home, job, OCTO_TEST_FLAKY_DIR=str(flaky_dir))
    assert (flaky_dir / "failed-once").exists(), "the first attempt should have failed"
    assert result.returncode == 0, result.stderr
    assert "mapfn raised RuntimeError on key 'doc-29'" in result.stderr
    assert "retrying (attempt 2 of 4)" in result.stderr
    assert result.stdout == oracle.final_output(job)

"""Edges a user meets: a closed stdout, an unfinished job's results, version skew, odd results."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from octostore import __version__
from octostore.config import MAX_FRAME_BYTES
from octostore.home import read_secret
from octostore.job import TRACEBACK_KEEP_FRAMES, format_user_traceback
from octostore.protocol.channel import SyncChannel
from octostore.protocol.messages import Hello, Refused

from . import oracle
from .conftest import JOBS, Running, octo, octo_env, start_octo, start_server


def test_piping_final_into_head_ends_the_job_cleanly(home: Path) -> None:
    job = JOBS / "big_results.py"  # 4,000 lines: more than a pipe holds, so head closes it early
    pipeline = subprocess.run(
        f"{sys.executable} -m cli.main submit {job} --workers 1 --job-id piped | head -n 3",
        shell=True, capture_output=True, text=True, env=octo_env(home), timeout=120,
    )
    assert pipeline.stdout.splitlines() == oracle.final_output(job).splitlines()[:3]
    assert "stdout closed after" in pipeline.stderr and "octo results piped" in pipeline.stderr
    assert f"{len(oracle.run(job))} results" in pipeline.stderr  # every stored result, not the printed ones
    again = octo(home, "results", "piped")
    assert again.returncode == 0
    assert again.stdout == "".join(f"{k}\t{v}\n" for k, v in oracle.run(job))


def test_a_job_without_final_prints_nothing_and_counts_its_results(home: Path) -> None:
    job = JOBS / "no_final.py"
    done = octo(home, "-v", "submit", str(job), "--workers", "1", "--job-id", "quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    expected = oracle.run(job)
    assert f"the job has no final(); print its {len(expected)} results with: octo results quiet" in done.stderr
    listed = octo(home, "results", "quiet")
    assert listed.stdout == "".join(f"{k}\t{v}\n" for k, v in expected)


def test_results_of_a_failed_job_are_refused(home: Path) -> None:
    failed = octo(home, "submit", str(JOBS / "bad_map_raises.py"), "--workers", "1", "--job-id", "broken")
    assert failed.returncode == 1, failed.stderr
    result = octo(home, "results", "broken")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "octo: error: job 'broken' is FAILED, so its results are incomplete"
    assert result.stdout == ""


def test_results_of_an_unknown_job(home: Path) -> None:
    result = octo(home, "results", "nope")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"octo: error: no job 'nope' under {home / 'jobs'}"


def test_unpicklable_reduce_result_fails_at_once_without_retries(home: Path) -> None:
    result = octo(home, "submit", str(JOBS / "unpicklable_result.py"), "--workers", "1")
    assert result.returncode == 1, result.stderr
    assert "reducefn(0, ...) returned tuple, which cannot be sent to the coordinator" in result.stderr
    assert "retrying" not in result.stderr


def test_nan_keys_are_one_key_and_the_final_rule_still_unpacks(home: Path) -> None:
    result = octo(home, "submit", str(JOBS / "nan_key.py"), "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0 6\n1 9\nnan 15\n"  # numbers sort by value, NaN after every number


def test_submit_with_no_local_workers_says_where_to_connect(home: Path) -> None:
    run = Running(start_octo(home, "submit", str(JOBS / "combiner.py"), "--workers", "0"))
    try:
        line = run.wait_for("waiting for workers")[0]
        port = int(line.rsplit(":", 1)[1].split("`")[0])
        client = octo(home, "client", f"127.0.0.1:{port}")
        assert client.returncode == 0, client.stderr
        code, out, err = run.finish()
        assert code == 0, err
        assert out == oracle.final_output(JOBS / "combiner.py")
    finally:
        run.kill()


def test_a_worker_on_another_python_is_refused_with_the_reason(home: Path) -> None:
    server, port = start_server(home, JOBS / "combiner.py")
    try:
        channel = SyncChannel(socket.create_connection(("127.0.0.1", port), timeout=30), MAX_FRAME_BYTES)
        channel.authenticate(read_secret(home / "secret"))
        channel.send(Hello(__version__, "2.7", "elsewhere", 4242))
        reply = channel.recv()
        assert isinstance(reply, Refused)
        assert reply.reason.startswith("it runs Python 2.7, the coordinator Python 3.")
        channel.close()
        server.wait_for("refused worker elsewhere:4242: it runs Python 2.7")
        assert octo(home, "client", f"127.0.0.1:{port}").returncode == 0  # a matching worker still works
        assert server.finish()[0] == 0
    finally:
        server.kill()


def test_progress_lines_show_the_workers_by_host(home: Path, tmp_path: Path) -> None:
    job = JOBS / "rendezvous.py"  # both workers join before any task ends, however fast the job
    (tmp_path / "rendezvous").mkdir()
    result = octo(home, "submit", str(job), "--workers", "2", "--progress", "lines",
                  OCTO_TEST_RENDEZVOUS=str(tmp_path / "rendezvous"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(job)
    host = os.uname().nodename
    phase_ends = [line for line in result.stderr.splitlines() if line.startswith("octo: map: ")]
    assert phase_ends and phase_ends[-1].endswith(f"; 2 workers: {host} x2"), result.stderr


def test_a_runaway_recursion_s_traceback_keeps_its_ends_and_says_what_it_omits() -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(30_000)

    def descend(n: int) -> int:
        if n == 0:
            raise ValueError("bottom")
        return descend(n - 1)

    try:
        descend(20_000)
    except ValueError as e:
        started = time.monotonic()
        text = format_user_traceback(e)
        elapsed_s = time.monotonic() - started
    finally:
        sys.setrecursionlimit(limit)
    frames = 20_001 + 1  # descend's, and this test's own
    assert f"  ... {frames - 2 * TRACEBACK_KEEP_FRAMES} frames omitted ...\n" in text
    assert text.startswith("Traceback (most recent call last):\n") and text.endswith("ValueError: bottom\n")
    assert text.count("in descend") == 7 and "in test_a_runaway_recursion" in text  # 3 a block, repeats folded, the raise
    assert len(text) < 5_000 and elapsed_s < 1.0

"""Backup attempts against one slow worker: wall time with and without them, same run.

    python benchmarks/backup_tasks.py [--repeat 3]

`octo server` runs tests/jobs/straggler.py (16 map tasks of 10 records, 40 ms a
record) for two `octo client`s on this machine, one of them 10x slower
(OCTO_TEST_SLOW_WORKER=1).  Without backups the job waits for the slow
client's last task; with them, the fast client runs a second attempt of it
and the first commit wins.  Both outputs are checked against each other.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "tests" / "jobs" / "straggler.py"


def run_once(home: str, job_id: str, backups: bool) -> tuple[float, str]:
    env = {**os.environ, "OCTO_HOME": home, "PYTHONPATH": str(ROOT), "OCTO_TEST_PAUSE_S": "0.04"}
    octo = [sys.executable, "-m", "cli.main"]
    started = time.perf_counter()
    server = subprocess.Popen([*octo, "server", str(JOB), "--bind", "127.0.0.1", "--port", "0", "--job-id", job_id,
                               "--map-tasks", "16", "--progress", "off",
                               "--backup-tasks" if backups else "--no-backup-tasks"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert server.stderr is not None
    port = None
    for line in server.stderr:
        found = re.search(r"octo client 127\.0\.0\.1:(\d+)", line)
        if found:
            port = found.group(1)
            break
    clients = [subprocess.Popen([*octo, "client", f"127.0.0.1:{port}"], env=env, stderr=subprocess.DEVNULL),
               subprocess.Popen([*octo, "client", f"127.0.0.1:{port}"], env={**env, "OCTO_TEST_SLOW_WORKER": "1"},
                                stderr=subprocess.DEVNULL)]
    out, _ = server.communicate()
    elapsed = time.perf_counter() - started
    for client in clients:
        client.wait()
    if server.returncode != 0:
        sys.exit(f"octo server failed ({server.returncode})")
    return elapsed, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    times: dict[bool, list[float]] = {True: [], False: []}
    outputs = set()
    with tempfile.TemporaryDirectory(prefix="octo-bench-") as home:
        for i in range(a.repeat):
            for backups in (False, True):
                elapsed, out = run_once(home, f"{'on' if backups else 'off'}{i}", backups)
                times[backups].append(elapsed)
                outputs.add(out)
    if len(outputs) != 1:
        sys.exit("MISMATCH: the outputs with and without backups differ")
    off, on = min(times[False]), min(times[True])
    print(f"one worker 10x slower, 16 map tasks; best of {a.repeat}; outputs identical")
    print(f"without backup attempts: {off:.2f} s")
    print(f"with backup attempts:    {on:.2f} s")
    print(f"slowdown without backups: {off / on:.2f}x the time with them")


if __name__ == "__main__":
    main()

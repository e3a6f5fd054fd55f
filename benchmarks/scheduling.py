"""Scheduling overhead: N empty map tasks end to end, durable state on; tasks per second.

    python benchmarks/scheduling.py [--tasks 20000] [--workers 2]

Every map task is one source key whose mapfn yields nothing, so the time is the
coordinator's: hand-out, input message, TaskDone, the synced state commit.  The
figure printed is map tasks per second of the whole `octo submit` run (start-up
included), against the issue's target of 2,000 tasks/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, run_octo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="octo-bench-") as tmp:
        env = {**os.environ, "OCTO_HOME": f"{tmp}/home", "OCTO_BENCH_TASKS": str(a.tasks), "PYTHONPATH": str(ROOT)}
        wall, _ = run_octo(ROOT / "benchmarks" / "jobs" / "tiny_tasks.py", "--workers", str(a.workers),
                           "--map-tasks", str(a.tasks), "--partitions", "2", "--progress", "off",
                           env=env, stdout_path=Path(tmp) / "out.txt")
    print(f"{a.tasks} empty map tasks on {a.workers} workers, durable state on: {wall:.2f} s, "
          f"{a.tasks / wall:.0f} tasks/s (target: 2000 tasks/s)")


if __name__ == "__main__":
    main()

"""Cost of durability: the same job with the state store synced (the default) and not synced.

    python benchmarks/durability.py [--mb 200] [--repeat 3] [--workers 2] [--tasks N] [-- OCTO_ARGS...]

Runs the guide's word count unchanged (benchmarks/wordcount_job.py) through the
real `octo submit` on make_corpus.py's 200 MiB corpus, once with the default
settings (every group commit of the job's state store synced to disk) and
once with `--config` pointing at a temporary YAML file holding
`state_sync: false`.  The two alternate, --repeat rounds, the order swapped
every round (synced first in even rounds, unsynced first in odd ones) so
that drift in the machine's speed hits both alike; the best of each is
reported, with the synced run's extra time in percent (target: <= 5%).
Every output is compared exactly with a collections.Counter computed here
before any figure is printed.

--tasks N adds the same comparison on the scheduling benchmark's job
(benchmarks/jobs/tiny_tasks.py: N empty map tasks, 2 partitions), where the
coordinator's commits are nearly all the work, so the sync cost shows in full.
That job prints nothing; its check is octo's own report of N map tasks done.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, corpus, parse_word_counts, run_octo  # noqa: E402


def reference(files: list[str]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for path in files:
        with open(path) as f:
            for line in f:
                counts.update(word.lower() for word in line.split())
    return dict(counts)


def alternate(a: argparse.Namespace, run) -> dict[bool, list[float]]:
    """run(synced, round) -> seconds, called --repeat rounds in alternating order."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(a.repeat):
        for synced in ((True, False) if i % 2 == 0 else (False, True)):
            seconds = run(synced, i)
            times[synced].append(seconds)
            print(f"round {i + 1}: {'synced  ' if synced else 'unsynced'} {seconds:.2f} s", file=sys.stderr)
    return times


def summary(label: str, times: dict[bool, list[float]]) -> None:
    synced, unsynced = min(times[True]), min(times[False])
    print(f"{label}: synced (default) {synced:.2f} s, unsynced (state_sync: false) {unsynced:.2f} s "
          f"(best of {len(times[True])}); durability costs {(synced - unsynced) / unsynced * 100:+.1f}% "
          f"(target <= 5%)")
    print(f"    all runs: synced {', '.join(f'{t:.2f}' for t in times[True])}; "
          f"unsynced {', '.join(f'{t:.2f}' for t in times[False])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each runs both settings once")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=0, help="also compare N empty map tasks (0: skip)")
    ap.add_argument("octo_args", nargs="*", help="extra `octo submit` options, after --")
    a = ap.parse_args()
    data = corpus(a.mb)
    files = sorted(str(p) for p in data.glob("*.txt"))
    input_bytes = sum(os.path.getsize(f) for f in files)
    expected = reference(files)

    with tempfile.TemporaryDirectory(prefix="octo-bench-") as tmp:
        unsynced_yaml = Path(tmp) / "unsynced.yaml"
        unsynced_yaml.write_text("state_sync: false\n")
        env = {**os.environ, "OCTO_HOME": f"{tmp}/home", "OCTO_BENCH_CORPUS": str(data), "PYTHONPATH": str(ROOT)}

        def config(synced: bool) -> list[str]:
            return [] if synced else ["--config", str(unsynced_yaml)]

        def wordcount(synced: bool, i: int) -> float:
            out = Path(tmp) / "out.txt"
            wall, stderr = run_octo(ROOT / "benchmarks" / "wordcount_job.py", "--workers", str(a.workers),
                                    "--progress", "off", *config(synced), *a.octo_args, env=env, stdout_path=out)
            if (got := parse_word_counts(out)) != expected:
                sys.exit(f"MISMATCH ({'synced' if synced else 'unsynced'}, round {i + 1}): octostore gave "
                         f"{len(got)} words, the reference {len(expected)}")
            return wall

        def tiny_tasks(synced: bool, i: int) -> float:
            out = Path(tmp) / "out.txt"
            wall, stderr = run_octo(ROOT / "benchmarks" / "jobs" / "tiny_tasks.py", "--workers", str(a.workers),
                                    "--map-tasks", str(a.tasks), "--partitions", "2", "--progress", "off",
                                    *config(synced), *a.octo_args, env={**env, "OCTO_BENCH_TASKS": str(a.tasks)},
                                    stdout_path=out)
            if out.read_text() or not re.search(rf"done in .*: {a.tasks} map tasks, 2 partitions", stderr):
                sys.exit(f"tiny_tasks ({'synced' if synced else 'unsynced'}, round {i + 1}): unexpected "
                         f"output or report:\n{stderr}")
            return wall

        words = alternate(a, wordcount)
        tasks = alternate(a, tiny_tasks) if a.tasks else None

    print(f"input: {input_bytes / 2**20:.0f} MiB in {len(files)} files, {len(expected)} distinct words, "
          f"{sum(expected.values())} words; every output identical to the reference")
    summary(f"word count, {a.workers} workers", words)
    if tasks:
        summary(f"{a.tasks} empty map tasks", tasks)


if __name__ == "__main__":
    main()

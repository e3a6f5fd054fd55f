"""Word count: octostore vs a hand-rolled multiprocessing.Pool(2) Counter, Dask and PySpark, same data.

    pip install -e '.[bench]'    # dask[bag], distributed and pyspark (which also needs java)
    python benchmarks/wordcount.py [--mb 200] [--workers 2] [--repeat 1] [--baselines dask,distributed,spark]

The corpus comes from ../shared/bench/make_corpus.py (deterministic; cached in
$OCTO_BENCH_CACHE, default /tmp/octo-bench).  octostore runs the guide's job
unchanged (benchmarks/wordcount_job.py: mapfn yields (word, 1), reducefn
returns len(values), no combiner) through the real `octo submit` command, with
final() printing to a file; the baseline is what a user would write by hand.
The third-party baselines (benchmarks/baselines.py) run the same job, timed
without their cluster or session start-up; one whose package or java is
missing is reported as skipped.  Every output is compared exactly with the
hand-rolled baseline's before any figure is printed.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import BASELINES, Skip  # noqa: E402
from common import ROOT, corpus, parse_word_counts, peak_rss, run_octo  # noqa: E402


def count_file(path: str) -> collections.Counter[str]:
    with open(path) as f:
        return collections.Counter(word.lower() for word in f.read().split())


def baseline(files: list[str], workers: int) -> collections.Counter[str]:
    total: collections.Counter[str] = collections.Counter()
    with multiprocessing.Pool(workers) as pool:
        for counts in pool.imap_unordered(count_file, files):
            total.update(counts)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side; the best is reported")
    ap.add_argument("--baselines", default="dask,distributed,spark",
                    help=f"comma list of third-party baselines from {', '.join(BASELINES)}, or none")
    ap.add_argument("octo_args", nargs="*", help="extra `octo submit` options, after --")
    a = ap.parse_args()
    names = [] if a.baselines == "none" else a.baselines.split(",")
    if unknown := set(names) - set(BASELINES):
        ap.error(f"unknown baselines: {', '.join(sorted(unknown))}")
    data = corpus(a.mb)
    files = sorted(str(p) for p in data.glob("*.txt"))
    input_bytes = sum(os.path.getsize(f) for f in files)

    base_times, octo_times = [], []
    other_times: dict[str, list[float]] = {name: [] for name in names}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="octo-bench-") as tmp:
        env = {**os.environ, "OCTO_HOME": f"{tmp}/home", "OCTO_BENCH_CORPUS": str(data),
               "PYTHONPATH": str(ROOT)}
        for i in range(a.repeat):
            start = time.perf_counter()
            expected = baseline(files, a.workers)
            base_times.append(time.perf_counter() - start)
            out = Path(tmp) / f"out{i}.txt"
            wall, stderr = run_octo(ROOT / "benchmarks" / "wordcount_job.py", "--workers", str(a.workers),
                                    "--progress", "off", *a.octo_args, env=env, stdout_path=out)
            octo_times.append(wall)
            got = parse_word_counts(out)
            if got != dict(expected):
                sys.exit(f"MISMATCH: octostore gave {len(got)} words, the baseline {len(expected)}")
            for name in names:
                if name in skipped:
                    continue
                label, run = BASELINES[name]
                try:
                    got, seconds = run(files, a.workers)
                except Skip as e:
                    skipped[name] = str(e)
                    continue
                if got != dict(expected):
                    sys.exit(f"MISMATCH: {label(a.workers)} gave {len(got)} words, "
                             f"the baseline {len(expected)}")
                other_times[name].append(seconds)
    coord, worker = peak_rss(stderr)
    base, octo = min(base_times), min(octo_times)
    print(f"input: {input_bytes / 2**20:.0f} MiB in {len(files)} files, {len(expected)} distinct words, "
          f"{sum(expected.values())} words; outputs identical")
    print(f"baseline multiprocessing.Pool({a.workers}) Counter: {base:.2f} s")
    print(f"octostore ({a.workers} workers):                  {octo:.2f} s")
    print(f"ratio octostore / baseline: {octo / base:.2f}x   (throughput {base / octo:.2f}x of baseline)")
    for name in names:
        label = BASELINES[name][0](a.workers)
        if name in skipped:
            print(f"{label}: skipped: {skipped[name]}")
            continue
        t = min(other_times[name])
        versus = f"{t / octo:.2f}x faster" if t >= octo else f"{octo / t:.2f}x slower"
        print(f"{label}: {t:.2f} s   octostore is {versus}")
    print(f"peak RSS: coordinator {coord:.0f} MiB, worker {worker:.0f} MiB")


if __name__ == "__main__":
    main()

"""One hot key: a single key receives N values; memory must not grow with N.

    python benchmarks/hot_key.py [--values 50_000_000] [--chunks 200] [--workers 2] [--identical] [--sample]
                                 [-- OCTO_ARGS...]

Runs benchmarks/jobs/hot_key.py through the real `octo submit`: a dict source
of --chunks chunks, mapfn yielding ("hot", i) for each int i of its chunk's
range, so the key "hot" gets the --values ints 0..N-1, all distinct (nothing
can be run-length encoded), plus one value per chunk for each of four small
keys cold0..cold3 (the chunk's number).  reducefn returns (key, (len(values),
sum(values))): sum() streams every value (len() alone only adds up counts, so
it is there as a second check, not as the work).  --identical makes every hot
value the int 1 instead (the word-count shape, where a combiner-less engine
still gets N separate values).  Before printing any figure the output is
checked exactly against counts and sums computed here by arithmetic,
independently of the job's chunking: N values summing to N*(N-1)/2 (or N) for
"hot", and for coldj the chunks c with c % 4 == j and the sum of those c.
Prints the wall time, the values per second and the peak RSS octo reports
for the coordinator and the workers; --sample adds the smaps_rollup split of
benchmarks/memory.py (anonymous vs file-backed).  Run 5_000_000 first to get
a feel: the full 50M takes minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, peak_rss  # noqa: E402
from memory import run_octo_sampled  # noqa: E402


def expected(values: int, chunks: int, identical: bool) -> dict[str, tuple[int, int]]:
    """key -> (number of values, their sum)."""
    out = {"hot": (values, values if identical else values * (values - 1) // 2)}
    for c in range(chunks):
        n, s = out.get(f"cold{c % 4}", (0, 0))
        out[f"cold{c % 4}"] = (n + 1, s + c)
    return out


def parse_output(path: Path) -> dict[str, tuple[int, int]]:
    got = {}
    with open(path) as f:
        for line in f:
            key, n, s = line.split()
            got[key] = (int(n), int(s))
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=lambda s: int(s.replace("_", "")), default=50_000_000,
                    help="values of the hot key")
    ap.add_argument("--chunks", type=int, default=200, help="source keys (mapfn calls)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--identical", action="store_true", help="every hot value is the int 1")
    ap.add_argument("--sample", action="store_true", help="sample smaps_rollup every 0.5 s (needs psutil)")
    ap.add_argument("octo_args", nargs="*", help="extra `octo submit` options, after --")
    a = ap.parse_args()
    want = expected(a.values, a.chunks, a.identical)
    with tempfile.TemporaryDirectory(prefix="octo-bench-") as tmp:
        env = {**os.environ, "OCTO_HOME": f"{tmp}/home", "OCTO_BENCH_VALUES": str(a.values),
               "OCTO_BENCH_CHUNKS": str(a.chunks), "OCTO_BENCH_IDENTICAL": "1" if a.identical else "0",
               "PYTHONPATH": str(ROOT)}
        out = Path(tmp) / "out.txt"
        wall, stderr, sampler = run_octo_sampled(ROOT / "benchmarks" / "jobs" / "hot_key.py", "--workers",
                                                 str(a.workers), "--progress", "off", *a.octo_args,
                                                 env=env, stdout_path=out, sample=a.sample)
        got = parse_output(out)
    if got != want:
        sys.exit(f"MISMATCH: octostore gave {got}, expected {want}")
    coord, worker = peak_rss(stderr)
    shape = "all the int 1" if a.identical else "distinct ints"
    print(f"one hot key with {a.values} values ({shape}) from {a.chunks} chunks, plus {len(want) - 1} cold keys; "
          f"output identical to the arithmetic")
    print(f"octostore ({a.workers} workers): {wall:.1f} s, {a.values / wall / 1e6:.2f} M values/s; "
          f"peak RSS coordinator {coord:.0f} MiB, worker {worker:.0f} MiB")
    if sampler:
        print("    " + sampler.coordinator.line("coordinator"))
        print("    " + sampler.workers.line("workers    "))


if __name__ == "__main__":
    main()

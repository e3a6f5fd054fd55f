"""Larger than RAM, mostly distinct keys: how memory and time scale with the input.

    python benchmarks/memory.py [--small-mb 100] [--large-mb 1024] [--workers 2] [--sample] [-- OCTO_ARGS...]

Runs the guide's word count unchanged (benchmarks/wordcount_job.py: mapfn
yields (word, 1), reducefn returns len(values)) through the real `octo
submit` on two corpora from ../shared/bench/make_corpus.py --unique, where
almost every word is a random token seen once: the groups together outgrow
memory, so grouping must spill to disk.  (Making the 1 GiB corpus takes
10-20 minutes on 2 cores, once; it is cached in $OCTO_BENCH_CACHE, default
/tmp/octo-bench.  The 1 GiB run itself takes 10-12 minutes, plus 2-4 for its
reference.)  For each size it prints wall time, seconds per GiB of
input and the peak RSS octo reports for the coordinator and the workers, then
the large/small ratios: both RSS ratios should stay <= 1.3x (memory does not
grow with the data) and the s/GiB ratio <= ~1.0-1.1 (time grows at most
linearly).  Options after `--` go to `octo submit` (e.g. `-- --config x.yaml`).

Each corpus is 64 files by default (make_corpus.py's default), so one file,
which is one source value the coordinator reads and ships whole, is 1.6 MiB at
100 MiB but 16 MiB at 1 GiB.  --large-files 640 keeps the file size the same
at both sizes, separating "grows with the data" from "grows with one value".

The reference is computed on disk, not with collections.Counter: in the
--unique corpus nearly every word is distinct (9,961,472 of 9,961,472 at
100 MiB, 101,187,553 of 101,187,584 at 1 GiB), and a streaming Counter over
the 100 MiB corpus already peaks at 860 MiB RSS, so ~9 GiB at 1 GiB: more
than the job under test is meant to need, defeating the point of a
larger-than-RAM benchmark.  So the files go through
`tr A-Z a-z | tr -s '[:space:]' '\\n' | sort | uniq -c` with LC_ALL=C (an
external merge sort in bounded memory, -S 1G, temporary files on disk).  That
equals the job's `word.lower()` over `line.split()` for ASCII text split by
spaces and newlines, which is what make_corpus.py writes; on other text the
two could differ, which could only make the check fail, never pass wrongly.
LC_ALL=C sorts by bytes, which for UTF-8 is code-point order, the order in
which final() must see str keys, so octo's stdout is compared with the
reference line by line, streaming, exactly: same words, same counts, same
order.  The reference runs after octo, never alongside it.

--sample also reads /proc/PID/smaps_rollup of the coordinator (the octo
process) and of each worker (its `python -m octostore.worker` children)
every 0.5 s and reports, per role, the peak Rss and how it splits into
Anonymous (heap) and Rss - Anonymous (file-backed or shared pages, e.g.
LMDB's memory-mapped stores), with the time into the run of each peak (the
wall time says which phase that was).  Sampling is coarse: a peak shorter
than 0.5 s can be missed, so ru_maxrss (octo's own figure) may exceed the
sampled peak.  The other way round, octo's worker
figure (each worker's ru_maxrss) cannot fall below the coordinator's RSS at
the moment it spawned the workers: Linux carries the parent's high-water mark
through fork/vfork + exec into the child's ru_maxrss; the sampled worker
figures have no such floor.  Needs psutil.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, corpus, octo_env, peak_rss  # noqa: E402

GIB = 2 ** 30
SMAPS_FIELDS = ("Rss", "Anonymous")


# --- sampling /proc/PID/smaps_rollup ------------------------------------------------------

def read_rollup(pid: int) -> dict[str, int] | None:
    """Rss and Anonymous of one process, in KiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in SMAPS_FIELDS:
            out[name] = int(rest.split()[0])
    return out if len(out) == len(SMAPS_FIELDS) else None


class Peak:
    """Peaks of one role (coordinator or workers): Rss, Anonymous, file (Rss - Anonymous), and the
    split at the moment of the peak Rss."""

    def __init__(self) -> None:
        self.rss = self.anon = self.file = 0
        self.at_peak = (0, 0)  # (anon, file) when Rss peaked
        self.when = {"rss": 0.0, "anon": 0.0, "file": 0.0}  # seconds into the run of each peak
        self.samples = 0

    def add(self, r: dict[str, int], t: float) -> None:
        rss, anon = r["Rss"], r["Anonymous"]
        self.samples += 1
        if rss > self.rss:
            self.rss, self.at_peak, self.when["rss"] = rss, (anon, rss - anon), t
        if anon > self.anon:
            self.anon, self.when["anon"] = anon, t
        if rss - anon > self.file:
            self.file, self.when["file"] = rss - anon, t

    def line(self, label: str) -> str:
        mib = lambda kib: kib / 1024  # noqa: E731
        return (f"{label}: peak Rss {mib(self.rss):.0f} MiB at {self.when['rss']:.0f} s (anon "
                f"{mib(self.at_peak[0]):.0f} + file/shmem {mib(self.at_peak[1]):.0f} then); peak anon "
                f"{mib(self.anon):.0f} MiB at {self.when['anon']:.0f} s, peak file/shmem {mib(self.file):.0f} MiB "
                f"at {self.when['file']:.0f} s  [{self.samples} samples]")


class Sampler(threading.Thread):
    """Every `interval` s: smaps_rollup of process `pid` (the coordinator) and of its worker children."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        import psutil  # only --sample needs it
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.coordinator, self.workers = Peak(), Peak()
        self.worker_pids: set[int] = set()
        self.stop = threading.Event()

    def _workers(self) -> list[int]:
        import psutil
        pids = []
        try:
            children = self.proc.children(recursive=True)
        except psutil.Error:
            return pids
        for child in children:
            if child.pid in self.worker_pids:
                pids.append(child.pid)
                continue
            try:
                if "octostore.worker" in child.cmdline():
                    self.worker_pids.add(child.pid)
                    pids.append(child.pid)
            except psutil.Error:
                pass
        return pids

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop.is_set():
            t = time.perf_counter() - start
            if (r := read_rollup(self.proc.pid)) is not None:
                self.coordinator.add(r, t)
            for pid in self._workers():
                if (r := read_rollup(pid)) is not None:
                    self.workers.add(r, t)
            self.stop.wait(self.interval)


def run_octo_sampled(job: Path, *args: str, env: dict[str, str], stdout_path: Path,
                     sample: bool) -> tuple[float, str, Sampler | None]:
    """Like common.run_octo, but (with `sample`) watching smaps_rollup while octo runs."""
    env = octo_env(env)
    start = time.perf_counter()
    with open(stdout_path, "w") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "submit", str(job), *args], stdout=out,
                                stderr=err, text=True, env=env, cwd=ROOT)
        sampler = Sampler(proc.pid) if sample else None
        if sampler:
            sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - start
        if sampler:
            sampler.stop.set()
            sampler.join()
        err.seek(0)
        stderr = err.read()
    if rc != 0:
        sys.exit(f"octo failed ({rc}):\n{stderr}")
    return wall, stderr, sampler


# --- the reference ------------------------------------------------------------------------

def reference(files: list[str], tmp: Path, out: Path) -> None:
    """Write `count word` lines, sorted by word in byte order, computed with tr | sort | uniq -c."""
    env = {**os.environ, "LC_ALL": "C"}
    sort_tmp = tmp / "sort-tmp"
    sort_tmp.mkdir(exist_ok=True)
    # grep -v drops the empty line tr leaves when a file starts with whitespace
    script = ("set -o pipefail; cat -- \"$@\" | tr 'A-Z' 'a-z' | tr -s '[:space:]' '\\n' | grep -v '^$' "
              "| sort -S 1G --parallel=2 -T \"$SORT_TMP\" | uniq -c")
    with open(out, "w") as f:
        subprocess.run(["bash", "-c", script, "reference", *files], check=True,
                       env={**env, "SORT_TMP": str(sort_tmp)}, stdout=f)


def compare(got_path: Path, ref_path: Path) -> tuple[int, int]:
    """Stream both files: octo's `word count` lines must equal the reference's `count word` lines,
    in the same order.  Returns (distinct words, total words); exits on the first difference."""
    distinct = total = 0
    with open(got_path) as got, open(ref_path) as ref:
        for n, (g, r) in enumerate(itertools.zip_longest(got, ref), 1):
            if g is None or r is None:
                sys.exit(f"MISMATCH: after {distinct} equal lines, only "
                         f"{'the reference' if g is None else 'octostore'} goes on: {(g or r).rstrip()!r}")
            word, _, count = g.rstrip("\n").rpartition(" ")
            rcount, _, rword = r.strip().partition(" ")
            if word != rword or count != rcount:
                sys.exit(f"MISMATCH at output line {n}: octostore {g.rstrip()!r}, reference {rword} {rcount}")
            distinct += 1
            total += int(count)
    return distinct, total


# --- the benchmark ------------------------------------------------------------------------

def run_size(mb: float, files_wanted: int, a: argparse.Namespace, tmp: Path) -> dict:
    data = corpus(mb, "--unique", *(["--files", str(files_wanted)] if files_wanted != 64 else []))
    files = sorted(str(p) for p in data.glob("*.txt"))
    input_bytes = sum(os.path.getsize(f) for f in files)
    env = {**os.environ, "OCTO_HOME": str(tmp / f"home-{mb:g}"), "OCTO_BENCH_CORPUS": str(data),
           "PYTHONPATH": str(ROOT)}
    out = tmp / f"out-{mb:g}.txt"
    print(f"running octo on {mb:g} MiB ...", file=sys.stderr)
    wall, stderr, sampler = run_octo_sampled(ROOT / "benchmarks" / "wordcount_job.py", "--workers",
                                             str(a.workers), "--progress", "off", *a.octo_args,
                                             env=env, stdout_path=out, sample=a.sample)
    print(f"computing the reference for {mb:g} MiB (sort | uniq -c) ...", file=sys.stderr)
    ref = tmp / f"ref-{mb:g}.txt"
    reference(files, tmp, ref)
    distinct, total = compare(out, ref)
    out.unlink()
    ref.unlink()
    shutil.rmtree(env["OCTO_HOME"])  # the job's stores: over a GiB at 1 GiB of input
    coord, worker = peak_rss(stderr)
    return {"mb": mb, "bytes": input_bytes, "files": len(files), "distinct": distinct, "total": total,
            "wall": wall, "s_per_gib": wall / (input_bytes / GIB), "coord": coord, "worker": worker,
            "sampler": sampler}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small-mb", type=float, default=100)
    ap.add_argument("--large-mb", type=float, default=1024)
    ap.add_argument("--small-files", type=int, default=64, help="files of the small corpus (each a source value)")
    ap.add_argument("--large-files", type=int, default=64,
                    help="files of the large corpus; 64 * large/small keeps one file (one value) the same size")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample", action="store_true",
                    help="sample smaps_rollup every 0.5 s: peak Rss split into anonymous and file-backed")
    ap.add_argument("octo_args", nargs="*", help="extra `octo submit` options, after --")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="octo-bench-") as tmp:
        results = [run_size(a.small_mb, a.small_files, a, Path(tmp)), run_size(a.large_mb, a.large_files, a, Path(tmp))]
    for r in results:
        print(f"{r['mb']:g} MiB --unique ({r['bytes'] / 2**20:.0f} MiB in {r['files']} files, "
              f"{r['distinct']} distinct words, {r['total']} words; output identical to the reference): "
              f"{r['wall']:.1f} s, {r['s_per_gib']:.1f} s/GiB, "
              f"peak RSS coordinator {r['coord']:.0f} MiB, worker {r['worker']:.0f} MiB")
        if r["sampler"]:
            print("    " + r["sampler"].coordinator.line("coordinator"))
            print("    " + r["sampler"].workers.line("workers    "))
    small, large = results
    ratio = lambda key: large[key] / small[key]  # noqa: E731
    print(f"large/small: coordinator RSS {ratio('coord'):.2f}x, worker RSS {ratio('worker'):.2f}x "
          f"(target <= 1.3x); s/GiB {ratio('s_per_gib'):.2f}x (target <= ~1.0-1.1x, i.e. at most linear)")


if __name__ == "__main__":
    main()

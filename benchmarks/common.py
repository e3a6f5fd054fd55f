"""Shared by the benchmarks: make the corpus with ../shared/bench/make_corpus.py, time commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAKE_CORPUS = ROOT.parent / "shared" / "bench" / "make_corpus.py"
CACHE = Path(os.environ.get("OCTO_BENCH_CACHE", Path(tempfile.gettempdir()) / "octo-bench"))


def corpus(mb: float, *extra: str) -> Path:
    """Return a directory holding make_corpus.py's deterministic corpus of `mb` MiB (made once, cached)."""
    name = f"corpus-{mb:g}mb" + "".join(extra).replace("-", "_")
    path = CACHE / name
    if not (path / ".complete").exists():
        if not MAKE_CORPUS.exists():
            sys.exit(f"benchmark: {MAKE_CORPUS} not found (the shared benchmark data generator)")
        print(f"making {path} ...", file=sys.stderr)
        subprocess.run([sys.executable, str(MAKE_CORPUS), str(path), "--mb", str(mb), *extra], check=True)
        (path / ".complete").touch()
    return path


def octo_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for an octo run: without PYTHONUNBUFFERED, which some shells set and which makes each
    print() of final() several system calls (a million lines: 3.0 s unbuffered, 0.8 s buffered)."""
    return {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}


def run_octo(job: Path, *args: str, env: dict[str, str], stdout_path: Path) -> tuple[float, str]:
    """Run `octo submit JOB ARGS`, stdout to a file; return (wall seconds, stderr)."""
    env = octo_env(env)
    start = time.perf_counter()
    with open(stdout_path, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "cli.main", "submit", str(job), *args], stdout=out,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"octo failed ({proc.returncode}):\n{proc.stderr}")
    return wall, proc.stderr


def peak_rss(stderr: str) -> tuple[float, float]:
    """(coordinator MiB, worker MiB) from the report line octo prints at the end."""
    m = re.search(r"peak RSS: coordinator (\d+) MiB, workers (\d+) MiB", stderr)
    return (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))


def parse_word_counts(path: Path) -> dict[str, int]:
    """The word count job's output (final() prints `word count` lines) as {word: count}."""
    counts = {}
    with open(path) as f:
        for line in f:
            word, _, n = line.rstrip("\n").rpartition(" ")
            counts[word] = int(n)
    return counts

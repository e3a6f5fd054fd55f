"""The coordinator's traffic per shuffle mode: word count in payload and in paths mode.

    python benchmarks/traffic.py [--mb 200] [--workers 2]

Runs the octo.py guide's word count over ``source = octostore.files(...)`` on
make_corpus.py's corpus (common.corpus) once per mode, checks that both print
the same output, and prints the bytes the coordinator received and sent (the
job's stored ``bytes_in``/``bytes_out``, what ``octo status`` shows) and their
ratio to the input size.  In paths mode the inputs and the map output move
through a shared folder (here a local temp folder), so what is left is
metadata and the reduce results, which still travel to the coordinator.

Local workers dial the coordinator over loopback, where octostore leaves map
inputs uncompressed (``compress_inputs: auto``); payload mode runs here with
``compress_inputs: always``, to count what a network between hosts carries.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from common import ROOT, corpus, run_octo

sys.path.insert(0, str(ROOT))
from octostore.home import job_paths  # noqa: E402
from octostore.stores.state import StateStore  # noqa: E402

JOB = ROOT / "benchmarks" / "jobs" / "files_wordcount.py"


def wire_bytes(home: Path, job_id: str) -> tuple[int, int]:
    """(bytes in, bytes out) of the coordinator, from the job's state store."""
    state = StateStore(job_paths(home, job_id).state, 1 << 20, readonly=True)
    try:
        meta = state.meta()
    finally:
        state.close()
    return int(meta["bytes_in"]), int(meta["bytes_out"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data = corpus(args.mb)
    input_bytes = sum(p.stat().st_size for p in data.glob("*.txt"))
    with tempfile.TemporaryDirectory(prefix="octo-traffic-") as tmp:
        work = Path(tmp)
        (work / "shared").mkdir()
        network = work / "network.yaml"  # inputs compressed as for workers on other hosts
        network.write_text("compress_inputs: always\n")
        env = {**os.environ, "OCTO_HOME": str(work / "home"), "OCTO_BENCH_CORPUS": str(data),
               "PYTHONPATH": str(ROOT)}
        outputs = []
        print(f"input: {input_bytes / 2**20:.1f} MiB in {len(list(data.glob('*.txt')))} files; "
              f"{args.workers} workers")
        for mode in ("payload", "paths"):
            out = work / f"{mode}.out"
            wall, _ = run_octo(JOB, "--workers", str(args.workers), "--job-id", mode, "--progress", "off",
                               "--shuffle-mode", mode, "--shared-root", str(work / "shared"), "--config", str(network),
                               env=env, stdout_path=out)
            received, sent = wire_bytes(work / "home", mode)
            outputs.append(out.read_bytes())
            print(f"{mode:8s} {wall:6.1f} s  coordinator in {received / 2**20:8.2f} MiB, out {sent / 2**20:8.2f} MiB, "
                  f"total {(received + sent) / input_bytes:7.2%} of the input")
    if outputs[0] != outputs[1]:
        sys.exit("traffic: the two modes printed different outputs")
    print("outputs: identical")


if __name__ == "__main__":
    main()

"""octo.py jobs run unchanged on a local cluster; every output equals the oracle's, exactly."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from . import oracle
from .conftest import JOBS, job_id_of, octo

CASES = ["wordcount_dict", "inverted_index", "combiner", "mixed_keys", "long_keys", "final_rule",
         "empty_source", "emits_nothing"]


@pytest.mark.parametrize("name", CASES)
def test_job_output_matches_oracle(home: Path, name: str) -> None:
    job = JOBS / f"{name}.py"
    result = octo(home, "submit", str(job), "--workers", "2", "--partitions", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(job)
    assert result.stderr.startswith("job "), result.stderr


def test_lazy_datasource_over_files(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = random.Random(11)
    words = [f"w{i}" for i in range(300)] + ["Octo", "OCTO", "octo"]
    for i in range(40):
        lines = (" ".join(rng.choice(words) for _ in range(rng.randint(0, 20))) for _ in range(200))
        (corpus / f"book{i:02d}.txt").write_text("\n".join(lines))
    monkeypatch.setenv("OCTO_TEST_CORPUS", str(corpus))
    job = JOBS / "wordcount_lazy.py"
    result = octo(home, "submit", str(job), "--workers", "2", "--map-tasks", "7",
                  OCTO_TEST_CORPUS=str(corpus))
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(job)


def test_large_inputs_received_while_mapping_arrive_whole_and_in_order(home: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of ~530 KB under a 96 MiB budget: every Input batch (three files) is past
    PREFETCH_AFTER_BYTES, so each next batch is received on the worker's helper thread
    while the current one is mapped."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = random.Random(5)
    words = [f"w{i}" for i in range(5000)]
    for i in range(12):
        (corpus / f"book{i:02d}.txt").write_text("\n".join(" ".join(rng.choices(words, k=15))
                                                          for _ in range(6000)))
    config = tmp_path / "cluster.yaml"
    config.write_text("memory_budget: 96MiB\n")  # input batches of 1.5 MiB
    job = JOBS / "wordcount_lazy.py"
    monkeypatch.setenv("OCTO_TEST_CORPUS", str(corpus))
    result = octo(home, "submit", str(job), "--workers", "2", "--map-tasks", "2", "--config", str(config),
                  "--progress", "off", OCTO_TEST_CORPUS=str(corpus))
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(job)


def test_a_tiny_map_buffer_spills_hundreds_of_runs_merged_in_passes(home: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4 KiB map buffer spills every chunk: each partition gets far more runs than the
    reducer's merge fan-in, so reducers first merge them in groups on disk."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = random.Random(3)
    words = [f"w{i}" for i in range(2000)]
    for i in range(6):
        (corpus / f"book{i}.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(10))
                                                       for _ in range(1000)))
    monkeypatch.setenv("OCTO_TEST_CORPUS", str(corpus))
    config = tmp_path / "cluster.yaml"
    config.write_text("map_buffer_bytes: 4096\n")
    job = JOBS / "wordcount_lazy.py"
    result = octo(home, "submit", str(job), "--workers", "2", "--partitions", "2", "--config", str(config),
                  "--progress", "off", OCTO_TEST_CORPUS=str(corpus))
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(job)


@pytest.mark.parametrize("mode", ["always", "never"])
def test_inputs_travel_compressed_or_not_with_the_same_output(home: Path, tmp_path: Path, mode: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Local workers dial 127.0.0.1, so 'auto' sends them raw inputs; 'always' is what a network sees."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = random.Random(5)
    for i in range(8):
        (corpus / f"book{i}.txt").write_text("\n".join(" ".join(rng.choice(["octo", "pus", "ink"]) for _ in range(12))
                                                       for _ in range(2000)))
    monkeypatch.setenv("OCTO_TEST_CORPUS", str(corpus))  # for the oracle, which runs the job here
    config = tmp_path / "cluster.yaml"
    config.write_text(f"compress_inputs: {mode}\n")
    job = JOBS / "wordcount_lazy.py"
    result = octo(home, "submit", str(job), "--workers", "2", "--config", str(config), "--progress", "off",
                  OCTO_TEST_CORPUS=str(corpus))
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(job)
    sent_mib = float(re.search(r"wire: [\d.]+ MiB in, ([\d.]+) MiB out", result.stderr).group(1))
    input_mib = sum(f.stat().st_size for f in corpus.iterdir()) / 2**20
    if mode == "always":  # three words repeated: zstd takes the inputs far below their size
        assert sent_mib < 0.2 * input_mib, (sent_mib, input_mib)
    else:
        assert sent_mib > input_mib, (sent_mib, input_mib)


def test_results_prints_stored_results_in_key_order(home: Path) -> None:
    job = JOBS / "combiner.py"
    submitted = octo(home, "submit", str(job), "--workers", "1", "--job-id", "sums")
    assert submitted.returncode == 0, submitted.stderr
    assert job_id_of(submitted.stderr) == "sums"
    again = octo(home, "results", "sums")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "".join(f"{k}\t{v}\n" for k, v in oracle.run(job))
    assert not (home / "jobs" / "sums" / "spill").exists(), "a finished job's spill must be deleted"


def test_one_hot_key_streams_its_values_under_a_memory_bound(home: Path) -> None:
    job = JOBS / "hot_key.py"
    result = octo(home, "submit", str(job), "--workers", "2", "--progress", "off")
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(job)
    workers_mib = float(re.search(r"workers (\d+) MiB", result.stderr).group(1))
    # 2 M values held as Python ints would need ~75 MiB more; the reducer holds only their
    # serialized records (~4 MiB) and one record's list at a time.
    assert workers_mib < 160, result.stderr

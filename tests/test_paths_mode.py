"""Shuffle mode 'paths': inputs and map output through a shared folder, metadata through the coordinator.

Every run checks the output against the oracle exactly, and the shared folder
against the state store: after a job nothing of it is left under shared_root,
after a crash only files that DONE tasks reference survive resume's GC.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from octostore.config import Config
from octostore.errors import ConfigError
from octostore.files import FileSource, files, read_file
from octostore.home import job_paths
from octostore.settings import check_paths_exist
from octostore.stores.mapfiles import MapFileWriter, check_map_file, map_file, remove_attempt, remove_unreferenced
from octostore.stores.state import StateStore, TaskState

from . import oracle
from .conftest import JOBS, octo

WORDCOUNT = JOBS / "paths_wordcount.py"
DIES_ONCE = JOBS / "dies_once.py"
MISSING_FILE = JOBS / "paths_missing_file.py"
CORPUS_FILES, CORPUS_FILE_BYTES = 24, 200_000  # ~4.6 MiB: 1% of it is ~48 KiB


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mixed-case text over a 400-word vocabulary (so the results, which still travel, stay small)."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(11)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
                  for _ in range(400)]
    for i in range(CORPUS_FILES):
        lines, size = [], 0
        while size < CORPUS_FILE_BYTES:
            line = " ".join(rng.choice(vocabulary).capitalize() if rng.random() < 0.2 else rng.choice(vocabulary)
                            for _ in range(12))
            lines.append(line)
            size += len(line) + 1
        (folder / f"doc-{i:03d}.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    path = tmp_path / "shared"
    path.mkdir()
    return path


def config_file(tmp_path: Path, mode: str, shared: Path) -> Path:
    path = tmp_path / f"{mode}.yaml"
    path.write_text(f"shuffle: {{mode: {mode}, shared_root: {shared}}}\n")
    return path


def submit(home: Path, job: Path, config: Path, job_id: str, *args: str, **env: str):
    return octo(home, "submit", str(job), "--config", str(config), "--job-id", job_id, "--workers", "2",
                "--map-tasks", "8", "--partitions", "4", "--progress", "off", *args, **env)


def wire_bytes(home: Path, job_id: str) -> int:
    state = StateStore(job_paths(home, job_id).state, 1 << 20, readonly=True)
    try:
        meta = state.meta()
    finally:
        state.close()
    return int(meta["bytes_in"]) + int(meta["bytes_out"])


def input_bytes(corpus: Path) -> int:
    return sum(p.stat().st_size for p in corpus.glob("*.txt"))


def referenced_files(home: Path, job_id: str) -> set[str]:
    """The map files DONE map tasks of the job reference in its state store."""
    state = StateStore(job_paths(home, job_id).state, 1 << 20, readonly=True)
    try:
        return {r.output.path for _, r in state.tasks("map") if r.state is TaskState.DONE and r.output}
    finally:
        state.close()


def test_files_source_is_dict_like_and_reads_like_the_worker(corpus: Path) -> None:
    source = files(str(corpus / "*.txt"))
    keys = list(source)
    assert keys == sorted(str(p.resolve()) for p in corpus.glob("*.txt")) and len(source) == CORPUS_FILES
    assert source[keys[0]] == (corpus / "doc-000.txt").read_text() == read_file(keys[0], "utf-8", "replace")
    assert isinstance(source, FileSource) and "octostore.files(" in repr(source)


def test_a_map_file_is_renamed_into_place_and_checked_against_its_index(tmp_path: Path) -> None:
    path = map_file(tmp_path, 3, 2, 1)
    writer = MapFileWriter(path)
    writer.add(1, [b"abc", b"de"])
    writer.add(0, [])  # an empty partition gets no index entry
    assert not path.exists() and path.with_name(path.name + ".tmp").exists()  # step 1: only the temp file
    assert writer.finish() == 5 and path.read_bytes() == b"abcde"
    assert writer.index == [[1, [[0, 3], [3, 2]]]] and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert check_map_file(path, str(path), 5, writer.index, 4) is None
    assert check_map_file(path, "/etc/passwd", 5, writer.index, 4) == f"the worker wrote '/etc/passwd', not {str(path)!r}"
    assert check_map_file(path, str(path), 6, writer.index, 4) == f"its map file {path} has 5 bytes here, the worker wrote 6"
    assert check_map_file(path, str(path), 5, [[4, [[0, 5]]]], 4) == (
        f"its map file {path} has a bad index entry for partition 4")
    assert check_map_file(path, str(path), 5, [[0, [[3, 3]]]], 4) == (
        f"its map file {path} has a bad index entry for partition 0")
    other = map_file(tmp_path, 3, 3, 1)
    assert check_map_file(other, str(other), 5, [], 4) == (
        f"its map file {other} cannot be seen here: No such file or directory")
    MapFileWriter(other).abort()
    stray = map_file(tmp_path, 4, 1, 1)
    stray.with_name(stray.name + ".tmp").write_bytes(b"x")
    assert remove_unreferenced(tmp_path, {str(path)}) == 1 and list(tmp_path.iterdir()) == [path]
    remove_attempt(tmp_path, 3, 2, 1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode, root, message, hint", [
    ("paths", None, "shuffle mode 'paths' needs a shared_root",
     "set shuffle.shared_root to a folder every host mounts at the same path, or use mode: payload"),
    ("paths", "/no/such/octo-shared", "shared_root /no/such/octo-shared: no such folder",
     "create it (on the shared filesystem every host mounts), or fix the path"),
    ("shared", None, "shuffle mode 'shared' is not one of payload, paths",
     "use mode: payload (through the coordinator) or mode: paths (a shared filesystem)"),
])
def test_config_checks_the_shuffle_settings(tmp_path: Path, mode: str, root: str | None, message: str,
                                            hint: str) -> None:
    with pytest.raises(ConfigError) as caught:  # Config refuses the mode or a missing root; check_paths_exist a
        check_paths_exist(Config(home=tmp_path, shuffle_mode=mode, shared_root=root))  # folder that is not there
    assert (caught.value.message, caught.value.hint) == (message, hint)
    config = Config(home=tmp_path, shuffle_mode="paths", shared_root=str(tmp_path))
    assert Config.from_stored(tmp_path, config.stored()) == config  # resume runs in paths mode too


def test_paths_mode_gives_the_exact_output_and_moves_only_metadata(home: Path, tmp_path: Path, corpus: Path,
                                                                   shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCTO_TEST_CORPUS", str(corpus))  # for the oracle, which runs in this process
    result = submit(home, WORDCOUNT, config_file(tmp_path, "paths", shared), "wcpaths", OCTO_TEST_CORPUS=str(corpus))
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(WORDCOUNT)
    assert f"shuffle through {shared / 'wcpaths'}" in result.stderr
    ratio = wire_bytes(home, "wcpaths") / input_bytes(corpus)
    assert ratio < 0.01, f"the coordinator moved {ratio:.2%} of the input"
    assert list(shared.iterdir()) == []  # the job's folder is removed once it is DONE
    status = octo(home, "status", "wcpaths")
    assert status.returncode == 0 and "bytes moved:" in status.stdout + status.stderr


def test_payload_mode_runs_the_same_job_exactly_and_moves_the_input(home: Path, tmp_path: Path, corpus: Path,
                                                                    shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCTO_TEST_CORPUS", str(corpus))
    result = submit(home, WORDCOUNT, config_file(tmp_path, "payload", shared), "wcpayload",
                    OCTO_TEST_CORPUS=str(corpus))
    assert result.returncode == 0, result.stderr
    assert result.stdout == oracle.final_output(WORDCOUNT)
    assert wire_bytes(home, "wcpayload") > 0.1 * input_bytes(corpus)  # zstd'd input and map output, both ways


def test_kill_after_a_map_commit_then_resume_in_paths_mode(home: Path, tmp_path: Path, corpus: Path, shared: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCTO_TEST_CORPUS", str(corpus))
    config = config_file(tmp_path, "paths", shared)
    killed = submit(home, WORDCOUNT, config, "crash", OCTO_TEST_CORPUS=str(corpus),
                    OCTO_FAILPOINTS="after-map-commit:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    folder = shared / "crash"
    stray = folder / "map-000099-a1-e1.run.tmp"  # as a worker killed mid-write would leave it
    stray.write_bytes(b"partial")
    # The kill comes after the group commit holding the 2nd map commit; a 3rd may share that group.
    assert 2 <= len(referenced_files(home, "crash")) < 8
    collected = octo(home, "resume", "crash", "--progress", "off", OCTO_TEST_CORPUS=str(corpus),
                     OCTO_FAILPOINTS="after-gc")
    assert collected.returncode == -signal.SIGKILL, collected.stderr
    assert {str(p) for p in folder.iterdir()} == referenced_files(home, "crash")  # GC: only committed files
    resumed = octo(home, "resume", "crash", "--progress", "off", OCTO_TEST_CORPUS=str(corpus))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == oracle.final_output(WORDCOUNT)
    assert list(shared.iterdir()) == []


def test_the_file_of_a_lost_attempt_is_removed(home: Path, tmp_path: Path, shared: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """dies_once.py's worker exits inside mapfn with its map file half written; a dict source, so
    paths mode still sends the inputs (and says so).  Paths mode from flags, not a config file."""
    monkeypatch.setenv("OCTO_TEST_MARKERS", str(tmp_path))
    killed = octo(home, "submit", str(DIES_ONCE), "--shuffle-mode", "paths", "--shared-root", str(shared),
                  "--job-id", "lost", "--workers", "2", "--map-tasks", "6", "--progress", "off",
                  OCTO_TEST_MARKERS=str(tmp_path),
                  OCTO_FAILPOINTS="after-map-commit:6")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "map task 1 attempt 1: its worker" in killed.stderr and "was lost; the task runs again" in killed.stderr
    assert "source is not octostore.files(...), so map inputs still travel through the coordinator" in killed.stderr
    kept = {str(p) for p in (shared / "lost").iterdir()}
    assert kept == referenced_files(home, "lost") and len(kept) == 6  # the dead attempt's file is gone
    resumed = octo(home, "resume", "lost", "--progress", "off", OCTO_TEST_MARKERS=str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == oracle.final_output(DIES_ONCE)
    assert list(shared.iterdir()) == []


def test_an_input_file_a_worker_cannot_read_fails_its_map_task_naming_the_file(home: Path, tmp_path: Path,
                                                                               corpus: Path, shared: Path) -> None:
    config = tmp_path / "once.yaml"
    config.write_text(f"max_attempts: 1\nshuffle: {{mode: paths, shared_root: {shared}}}\n")
    result = submit(home, MISSING_FILE, config, "missing", OCTO_TEST_CORPUS=str(corpus))
    assert result.returncode == 1, result.stderr
    assert "cannot read input file /no/such/octo-input.txt on " in result.stderr
    assert ": No such file or directory (map task 7, attempt 1 of 1)" in result.stderr
    assert "hint: every worker host must see the files at the same path" in result.stderr

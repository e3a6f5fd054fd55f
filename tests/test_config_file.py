"""Cluster config files (octostore/config_file.py): a full file's values, and the exact text of every error.

Most tests run in a temporary folder holding ``octo.yaml``, so an error reads
``octo.yaml:LINE: ...`` exactly as a user who ran ``--config octo.yaml`` sees it.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from octostore.config import Config
from octostore.config_file import ConfigFile, load_config_file
from octostore.errors import ConfigError
from octostore.launch.hosts import LINE_SHAPE, Host, parse_hosts

DATA = Path(__file__).resolve().parent / "data"
HERE = "relative paths start from the config file's folder (.)"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load(text: str, name: str = "octo.yaml") -> ConfigFile:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return load_config_file(path)


def refused(text: str) -> tuple[str, str | None]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.message, info.value.hint


# -- valid files -----------------------------------------------------------------------------------


def test_full_file() -> None:
    cf = load_config_file(DATA / "cluster.yaml")
    assert cf.values == {
        "workers": 2, "partitions": 8, "map_tasks": 16, "coordinator.bind": "0.0.0.0", "coordinator.port": 11235,
        "ssh.hosts_file": DATA / "hosts.txt", "ssh.slots": 2, "ssh.python": "/opt/py/bin/python",
        "ssh.accept_new_host_keys": False, "shuffle.mode": "payload", "map_buffer_bytes": 64 * 2**20,
        "zstd_level": 3, "max_attempts": 5, "lease_s": 12.5, "home": DATA / "octo-home", "tls.enabled": False,
        "progress": "off",  # not False: only true/false are booleans
    }  # shuffle.shared_root and the tls paths are null in the file: not set
    assert cf.home == DATA / "octo-home"
    assert cf.hosts == [
        Host("node3", slots=2, python="/opt/py/bin/python"),  # the file's hosts first, with ssh.slots/python
        Host("node4", user="bob", port=2200, slots=8, python="/usr/bin/python3.11"),
        Host("::1", port=2222, slots=3, python="/opt/py/bin/python"),
        Host("node1", user="alice", slots=2, python="/opt/py/bin/python"),  # then ssh.hosts
        Host("node2", port=2222, slots=4, python="/opt/py/bin/python"),
    ]
    assert cf.lines["ssh.hosts"] == 8 and cf.lines["tls.cert"] == 20 and cf.lines["progress"] == 21


def test_overrides_build_a_config() -> None:
    cf = load_config_file(DATA / "cluster.yaml")
    assert cf.config_overrides() == {
        "workers": 2, "partitions": 8, "map_tasks": 16, "bind": "0.0.0.0", "port": 11235,
        "map_buffer_bytes": 64 * 2**20, "zstd_level": 3, "max_attempts": 5, "lease_s": 12.5, "progress": "off",
        "accept_new_host_keys": False, "shuffle_mode": "payload", "tls": False,
        "ssh_hosts": tuple(f"{h.label} slots={h.slots} python={h.python}" for h in cf.hosts),
    }
    assert parse_hosts("\n".join(cf.config_overrides()["ssh_hosts"]), "stored") == cf.hosts  # type: ignore[arg-type]
    config = Config(home=Path("h"), **cf.config_overrides())  # type: ignore[arg-type]
    assert (config.bind, config.port, config.lease_s, config.progress) == ("0.0.0.0", 11235, 12.5, "off")


def test_round_trip_through_yaml_dump() -> None:
    """Values written out by a YAML dumper come back unchanged."""
    Path("hosts.txt").write_text("node1\n")
    Path("shared").mkdir()
    settings = {
        "workers": 0, "partitions": 3, "map_tasks": 1, "coordinator": {"bind": "::", "port": 0},
        "ssh": {"hosts_file": "hosts.txt", "hosts": ["bob@node9 slots=2"], "slots": 3, "python": "py",
                "accept_new_host_keys": True},
        "shuffle": {"mode": "paths", "shared_root": "shared"}, "map_buffer_bytes": 1024, "zstd_level": -22,
        "max_attempts": 1, "lease_s": 1, "home": "/var/octo", "progress": "lines",
    }
    cf = load(yaml.safe_dump(settings))
    assert cf.config_overrides() == {"workers": 0, "partitions": 3, "map_tasks": 1, "bind": "::", "port": 0,
                                     "map_buffer_bytes": 1024, "zstd_level": -22, "max_attempts": 1,
                                     "lease_s": 1.0, "progress": "lines", "accept_new_host_keys": True,
                                     "shuffle_mode": "paths", "shared_root": str(Path("shared").resolve()),
                                     "ssh_hosts": ("node1:22 slots=3 python=py", "bob@node9:22 slots=2 python=py")}
    assert cf.hosts == [Host("node1", slots=3, python="py"), Host("node9", user="bob", slots=2, python="py")]
    assert (cf.values["shuffle.shared_root"], cf.home, cf.values["ssh.accept_new_host_keys"]) == (
        Path("shared"), Path("/var/octo"), True)


def test_absent_keys_are_none_and_empty_file_is_fine() -> None:
    assert load("# nothing set yet\n") == ConfigFile(path=Path("octo.yaml"))
    cf = load("partitions: 4\n")
    assert cf.config_overrides() == {"partitions": 4}
    assert (cf.values, cf.hosts, cf.lines) == ({"partitions": 4}, [], {"partitions": 1})


def test_null_means_unset_where_allowed() -> None:
    cf = load("workers: null\nssh:\ntls:\n  cert:\n")
    assert cf.config_overrides() == {} and cf.values == {}


def test_relative_paths_start_from_the_config_files_folder() -> None:
    Path("conf/tls").mkdir(parents=True)
    for name in ("hosts.txt", "tls/node.pem", "tls/node.key"):
        Path("conf", name).write_text("node1\n")
    cf = load("ssh: {hosts_file: hosts.txt}\ntls: {enabled: true, cert: tls/node.pem, key: tls/node.key}\n"
              "home: ../octo-home\nshuffle: {shared_root: /mnt/shared}\n", name="conf/octo.yaml")
    assert cf.values["ssh.hosts_file"] == Path("conf/hosts.txt")
    assert (cf.values["tls.cert"], cf.values["tls.key"]) == (Path("conf/tls/node.pem"), Path("conf/tls/node.key"))
    overrides = cf.config_overrides()  # absolute in the Config: stored with the job, resume may run elsewhere
    assert (overrides["tls"], overrides["tls_cert"]) == (True, os.path.abspath("conf/tls/node.pem"))
    assert cf.home == Path("conf/../octo-home")
    assert cf.values["shuffle.shared_root"] == Path("/mnt/shared")
    assert cf.hosts == [Host("node1")]


def test_home_expands_tilde() -> None:
    assert load("home: ~/octo\n").home == Path.home() / "octo"


@pytest.mark.parametrize("written, size", [
    ("67108864", 67108864), ("'4096'", 4096), ("512KiB", 512 * 1024), ("64MiB", 64 * 2**20),
    ("64 MiB", 64 * 2**20), ("1GiB", 2**30), ("2TiB", 2 * 2**40), ("100B", 100),
])
def test_size_strings(written: str, size: int) -> None:
    assert load(f"map_buffer_bytes: {written}\n").values["map_buffer_bytes"] == size


def test_merge_keys_may_be_overridden() -> None:
    cf = load("coordinator:\n  <<: {bind: 127.0.0.1, port: 7000}\n  port: 7001\n")
    assert (cf.values["coordinator.bind"], cf.values["coordinator.port"]) == ("127.0.0.1", 7001)
    assert (cf.lines["coordinator.bind"], cf.lines["coordinator.port"]) == (2, 3)


# -- errors: each one's exact text -----------------------------------------------------------------


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_file(Path("nope.yaml"))
    assert (info.value.message, info.value.hint) == ("nope.yaml: config file not found",
                                                     "check the path of the config file")


@pytest.mark.parametrize("text, message, hint", [
    ("workers: 2\nssh:\n\tslots: 2\n", "octo.yaml:3: invalid YAML: found character '\\t' that cannot start any token",
     "indent with spaces: YAML does not allow tabs"),
    ("workers: 2\nbind: a: b\n", "octo.yaml:2: invalid YAML: mapping values are not allowed here",
     "write 'key: value' with a space after ':'; quote text containing ': '; check the line above has its ':'"),
    ("workers: 2\ncoordinator: {port: 1\n", "octo.yaml:3: invalid YAML: expected ',' or '}', but got '<stream end>'",
     "check the indentation and quoting on this line and the one above"),
    ("workers: 2\n---\nworkers: 3\n", "octo.yaml:2: invalid YAML: but found another document",
     "check the indentation and quoting on this line and the one above"),
    ("workers: 2\nprogress: a\x07b\n", "octo.yaml:2: invalid YAML: character U+0007 is not allowed",
     "remove the control character (save the file as plain UTF-8 text)"),
    ("workers: 2\n? [a, b]\n: 1\n", "octo.yaml:2: invalid YAML: a key cannot be a list or mapping",
     "check the indentation and quoting on this line and the one above"),
    ("# the farm\n!!python/object:os.system {}\n",
     "octo.yaml:2: invalid YAML: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object:os.system'",
     "check the indentation and quoting on this line and the one above"),
])
def test_yaml_syntax_errors_name_the_line(text: str, message: str, hint: str) -> None:
    assert refused(text) == (message, hint)


def test_duplicate_key() -> None:
    assert refused("workers: 2\npartitions: 8\nworkers: 3\n") == (
        "octo.yaml:3: invalid YAML: key 'workers' appears twice (first on line 1)", "keep one of the two lines")


@pytest.mark.parametrize("text, message", [
    ("# hosts\n- node1\n- node2\n", "octo.yaml:2: the top level must be a mapping of settings, not a list"),
    ("workers\n", "octo.yaml:1: the top level must be a mapping of settings, not a string ('workers')"),
])
def test_top_level_must_be_a_mapping(text: str, message: str) -> None:
    assert refused(text) == (message, "write one 'key: value' per line, e.g. workers: 2")


@pytest.mark.parametrize("text, message, hint", [
    ("workers: 2\npartitons: 8\n", "octo.yaml:2: unknown key 'partitons'", "did you mean 'partitions'?"),
    ("shuffle:\n  mdoe: paths\n", "octo.yaml:2: unknown key 'shuffle.mdoe'", "did you mean 'shuffle.mode'?"),
    ("lease: 30\n", "octo.yaml:1: unknown key 'lease'", "did you mean 'lease_s'?"),
    ("port: 11235\n", "octo.yaml:1: unknown key 'port'",
     "'port' belongs under 'coordinator:', i.e. coordinator: {port: ...}"),
    ("tls: {enabled: false, password: x}\n", "octo.yaml:1: unknown key 'tls.password'",
     "valid keys under tls: enabled, cert, key, ca"),
    ("1: 2\n", "octo.yaml:1: unknown key '1'",
     "valid keys: workers, partitions, map_tasks, coordinator, ssh, shuffle, memory_budget, map_buffer_bytes, "
     "zstd_level, compress_inputs, max_attempts, lease_s, no_workers_timeout_s, state_sync, home, tls, "
     "progress"),
])
def test_unknown_key(text: str, message: str, hint: str) -> None:
    assert refused(text) == (message, hint)


@pytest.mark.parametrize("text, message, hint", [
    ("partitions: eight\n", "partitions: expected an integer, got a string ('eight')", "write a whole number >= 1"),
    ("partitions: '8'\n", "partitions: expected an integer, got a string ('8')", "remove the quotes: partitions: 8"),
    ("partitions: 8.0\n", "partitions: expected an integer, got a number (8.0)", "write a whole number >= 1"),
    ("workers: true\n", "workers: expected an integer, got a boolean (true)", "write a whole number >= 0"),
    ("zstd_level:\n", "zstd_level: expected an integer, got null",
     "give zstd_level a value, or delete the line to use the default"),
    ("lease_s: 30s\n", "lease_s: expected a number of seconds, got a string ('30s')",
     "write plain seconds, without a unit: lease_s: 30"),
    ("lease_s: false\n", "lease_s: expected a number of seconds, got a boolean (false)",
     "write a number of seconds, e.g. lease_s: 30"),
    ("coordinator: {bind: 127.0.0.1, port: '80'}\n", "coordinator.port: expected an integer, got a string ('80')",
     "remove the quotes: port: 80"),
    ("coordinator: 127.0.0.1:11235\n", "coordinator: expected a mapping, got a string ('127.0.0.1:11235')",
     "indent its settings under 'coordinator:', e.g. '  bind: ...'"),
    ("ssh: {python: 3.11}\n", "ssh.python: expected text, got a number (3.11)", "quote it: python: '3.11'"),
    ("ssh: {accept_new_host_keys: yes}\n", "ssh.accept_new_host_keys: expected true or false, got a string ('yes')",
     "write true or false ('yes' is text here, as in YAML 1.2)"),
    ("ssh: {accept_new_host_keys: 'true'}\n",
     "ssh.accept_new_host_keys: expected true or false, got a string ('true')",
     "remove the quotes: accept_new_host_keys: true"),
    ("ssh: {hosts: node1}\n", "ssh.hosts: expected a list of host lines, got a string ('node1')",
     'write e.g. hosts: ["alice@node1", "node2:2222 slots=4"]'),
    ("map_buffer_bytes: 1.5\n", "map_buffer_bytes: expected a size in bytes, got a number (1.5)",
     "write bytes (67108864) or a size like 512KiB, 64MiB or 1GiB"),
    ("progress: [bar]\n", "progress: expected one of auto, bar, lines, off, got a list",
     "write one of auto, bar, lines, off"),
])
def test_wrong_type(text: str, message: str, hint: str) -> None:
    assert refused(f"# octo\n{text}") == (f"octo.yaml:2: {message}", hint)


@pytest.mark.parametrize("text, message, hint", [
    ("partitions: 0", "partitions: 0 is out of range (must be >= 1)", "write a whole number >= 1"),
    ("workers: -1", "workers: -1 is out of range (must be >= 0)", "write a whole number >= 0"),
    ("zstd_level: 23", "zstd_level: 23 is out of range (must be in -22..22)", "write a whole number in -22..22"),
    ("max_attempts: 0", "max_attempts: 0 is out of range (must be >= 1)", "write a whole number >= 1"),
    ("coordinator: {port: 70000}", "coordinator.port: 70000 is out of range (must be in 0..65535)",
     "write a whole number in 0..65535"),
    ("lease_s: 0", "lease_s: 0 is out of range (must be a number > 0)", "e.g. lease_s: 30"),
    ("lease_s: .inf", "lease_s: inf is out of range (must be a number > 0)", "e.g. lease_s: 30"),
    ("progress: bars", "progress: 'bars' is not one of auto, bar, lines, off", "did you mean 'bar'?"),
    ("progress: fancy", "progress: 'fancy' is not one of auto, bar, lines, off", "write one of auto, bar, lines, off"),
    ("shuffle: {mode: shared}", "shuffle.mode: 'shared' is not one of payload, paths", "write one of payload, paths"),
    ("map_buffer_bytes: 64MB", "map_buffer_bytes: '64MB' is not a size",
     "did you mean '64MiB'? sizes are binary: KiB, MiB, GiB"),
    ("map_buffer_bytes: lots", "map_buffer_bytes: 'lots' is not a size",
     "write bytes (67108864) or a size like 512KiB, 64MiB or 1GiB"),
    ("map_buffer_bytes: 0KiB", "map_buffer_bytes: 0KiB is out of range (must be at least 1 byte)",
     "write bytes (67108864) or a size like 512KiB, 64MiB or 1GiB"),
    ("ssh: {python: ''}", "ssh.python: is empty", "give python a value, or delete the line to use the default"),
])
def test_bad_value(text: str, message: str, hint: str) -> None:
    assert refused(f"# octo\n{text}\n") == (f"octo.yaml:2: {message}", hint)


def test_missing_hosts_file() -> None:
    assert refused("ssh:\n  hosts_file: farm.txt\n") == (
        "octo.yaml:2: ssh.hosts_file: file 'farm.txt' does not exist", HERE)


def test_hosts_file_that_is_a_folder() -> None:
    Path("farm").mkdir()
    assert refused("ssh: {hosts_file: farm}\n") == ("octo.yaml:1: ssh.hosts_file: 'farm' is not a file", HERE)


def test_shared_root_required_for_paths_mode() -> None:
    assert refused("workers: 2\nshuffle: {mode: paths}\n") == (
        "octo.yaml:2: shuffle.mode: mode 'paths' needs shuffle.shared_root",
        "set shuffle.shared_root to a folder every host mounts at the same path, or use mode: payload")


def test_shared_root_must_exist_in_paths_mode() -> None:
    assert refused("shuffle:\n  mode: paths\n  shared_root: /no/such/octo-shared\n") == (
        "octo.yaml:3: shuffle.shared_root: folder '/no/such/octo-shared' does not exist", HERE)
    assert load("shuffle: {mode: payload, shared_root: /no/such/octo-shared}\n").values["shuffle.mode"] == "payload"


def test_tls_needs_cert_and_key() -> None:
    assert refused("tls:\n  enabled: true\n  key: node.key\n") == (
        "octo.yaml:2: tls.enabled: TLS is on but tls.cert is not set",
        "name the PEM files, e.g. tls: {enabled: true, cert: node.pem, key: node.key}")


def test_tls_files_must_exist_when_enabled() -> None:
    Path("node.pem").write_text("")
    assert refused("tls:\n  enabled: true\n  cert: node.pem\n  key: node.key\n") == (
        "octo.yaml:4: tls.key: file 'node.key' does not exist", HERE)
    assert load("tls: {enabled: false, cert: node.pem, key: node.key}\n").values["tls.key"] == Path("node.key")


def test_hosts_file_errors_name_the_hosts_file_and_its_line() -> None:
    Path("hosts.txt").write_text("node1\n# two\nalice@node3:ssh\n")
    assert refused("ssh: {hosts_file: hosts.txt}\n") == (
        "hosts.txt:3: port 'ssh' is not a number in 'alice@node3:ssh'", LINE_SHAPE)


def test_inline_host_errors_name_the_config_file_and_the_items_line() -> None:
    assert refused("ssh:\n  hosts:\n    - node1\n    - node2 slot=4\n") == (
        "octo.yaml:4: unknown field 'slot' in 'node2 slot=4'", f"did you mean 'slots'? {LINE_SHAPE}")
    assert refused("ssh:\n  hosts:\n    - node1\n    - 42\n") == (
        "octo.yaml:4: ssh.hosts: expected a host line (text), got an integer (42)",
        "write each host as text: [user@]host[:port] [slots=N] [python=PATH]")
    assert refused("ssh:\n  hosts:\n    - node1\n    - ''\n") == (
        "octo.yaml:4: ssh.hosts: empty host line", "remove the empty item from ssh.hosts")


def test_host_in_both_hosts_file_and_inline_list() -> None:
    Path("hosts.txt").write_text("node1\nalice@node2\n")
    assert refused("ssh:\n  hosts_file: hosts.txt\n  hosts: [node3, alice@node2:22]\n") == (
        "octo.yaml:3: host 'alice@node2:22' is listed twice (first at hosts.txt:2)",
        "list each host once; to start more workers there, raise its slots=N")


def test_bad_slots_default_is_checked_before_hosts() -> None:
    Path("hosts.txt").write_text("node1\n")
    assert refused("ssh:\n  hosts_file: hosts.txt\n  slots: 0\n") == (
        "octo.yaml:3: ssh.slots: 0 is out of range (must be >= 1)", "write a whole number >= 1")


def test_memory_budget_sizes_the_buffers_and_an_explicit_map_buffer_wins(tmp_path: Path) -> None:
    budget = load("memory_budget: 256MiB\n").config_overrides()
    assert budget == {"memory_budget_bytes": 256 * 2**20}
    plan = Config(home=tmp_path, **budget).memory_plan()  # type: ignore[arg-type]
    assert (plan.map_buffer_bytes, plan.values_memory_bytes, plan.merge_fan_in, plan.input_batch_bytes) == (
        32 * 2**20, 16 * 2**20, 32, 4 * 2**20)
    both = Config(home=tmp_path, memory_budget_bytes=256 * 2**20, map_buffer_bytes=4096).memory_plan()
    assert both.map_buffer_bytes == 4096 and both.values_memory_bytes == 16 * 2**20
    small = Config(home=tmp_path, memory_budget_bytes=96 * 2**20).memory_plan()
    assert (small.merge_fan_in, small.input_batch_bytes) == (12, 1536 * 1024)


def test_a_memory_budget_below_the_floor_names_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"octo.yaml:2: memory_budget: 64MiB is below the minimum of 96MiB"):
        load("workers: 1\nmemory_budget: 64MiB\n")

"""The settings table (octostore/settings.py): what is derived from it, Config's checks, the paths
checked only before a job starts, and WorkerSettings on the wire."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import click
import click.testing
import msgpack
import pytest

from cli.main import octo
from octostore.config import Config, worker_settings
from octostore.config_file import _SCHEMA
from octostore.errors import ConfigError
from octostore.settings import SETTINGS, WorkerSettings, check_paths_exist

_STORED_BEFORE_THE_TABLE = (
    "workers", "bind", "port", "memory_budget_bytes", "map_buffer_bytes", "block_bytes", "zstd_level",
    "map_size_bytes", "max_frame_bytes", "max_attempts", "sync", "compress_inputs", "lease_s", "heartbeat_every_s",
    "backup_tasks", "ssh_hosts", "accept_new_host_keys", "ssh_known_hosts", "ssh_config_file", "shuffle_mode",
    "shared_root", "tls", "tls_cert", "tls_key", "tls_ca")
"""config.py's hand-kept _STORED list: a resumed job must keep running with exactly these."""


# -- the table and what is derived from it ---------------------------------------------------------


def test_every_field_of_config_is_a_row_and_the_defaults_pass_their_own_checks(tmp_path: Path) -> None:
    assert [row.name for row in SETTINGS] == [f.name for f in dataclasses.fields(Config)]
    default = Config(home=tmp_path)
    assert all(getattr(default, row.name) == row.default for row in SETTINGS if row.name != "home")
    assert len({row.key for row in SETTINGS if row.key}) == len([row for row in SETTINGS if row.key])


def test_stored_settings_are_the_ones_stored_before(tmp_path: Path) -> None:
    added_since = ["no_workers_timeout_s"]  # #13: how long a job whose workers are all gone waits
    assert sorted(Config(home=tmp_path).stored()) == sorted([*_STORED_BEFORE_THE_TABLE, *added_since])


def test_from_stored_reads_what_msgpack_gives_back(tmp_path: Path) -> None:
    config = Config(home=tmp_path, ssh_hosts=("node1:22 slots=2 python=py",), lease_s=2.5, workers=3)
    stored = msgpack.unpackb(msgpack.packb(config.stored()))  # as the state store keeps it: tuples become lists
    assert isinstance(stored["ssh_hosts"], list)
    assert Config.from_stored(tmp_path, stored) == config
    assert Config.from_stored(tmp_path, stored, workers=None, progress="off").workers == 3  # None: no override


def test_every_key_is_in_the_config_file_schema() -> None:
    for row in SETTINGS:
        if row.key is not None:
            section, _, leaf = row.key.rpartition(".")
            assert leaf in (_SCHEMA[section] if section else _SCHEMA), row.key


@pytest.mark.parametrize("command, argument", [("submit", "job.py"), ("server", "job.py"), ("resume", "job-1")])
def test_every_flag_is_an_option_of_its_commands_under_the_setting_name(command: str, argument: str) -> None:
    options = {param.name: param for param in octo.commands[command].params if isinstance(param, click.Option)}
    given = octo.commands[command].make_context(command, [argument]).params
    for row in SETTINGS:
        for flag in row.flags:
            if command in flag.commands:
                option = options.pop(row.name)
                assert flag.decl.partition("/")[0] in option.opts and option.help == flag.help
                assert given[row.name] is None  # not given: the config file's value, else the default, applies
    assert sorted(options) == {"resume": ["reload"]}.get(command, ["config_file", "dry_run", "job_id"])


def test_a_flag_keeps_its_own_bound() -> None:
    result = click.testing.CliRunner().invoke(octo, ["submit", "job.py", "--lease", "0.05"])
    assert result.exit_code == 2 and "0.05 is not in the range x>=0.1" in result.output


# -- Config's checks, and canonical values ------------------------------------------------------------


@pytest.mark.parametrize("changes, message, hint", [
    ({"workers": -1}, "workers -1 is out of range (must be >= 0)", "write a whole number >= 0"),
    ({"port": 70000}, "coordinator port 70000 is out of range (must be in 0..65535)",
     "write a whole number in 0..65535"),
    ({"lease_s": 0}, "lease_s 0 is out of range (must be a number > 0)", "e.g. lease_s: 30"),
    ({"memory_budget_bytes": 64 * 2**20}, "memory_budget_bytes 67108864 is below the minimum of 96MiB",
     "an idle worker alone is ~45 MiB; give each process at least 96MiB"),
    ({"sync": 1}, "sync expected true or false, got an integer (1)", "write true or false"),
    ({"zstd_level": None}, "zstd_level expected an integer, got null",
     "give zstd_level a value, or delete the line to use the default"),
    ({"compress_inputs": "sometimes"}, "compress_inputs 'sometimes' is not one of auto, always, never",
     "use compress_inputs: auto (except to workers over loopback) or compress_inputs: always (every map input) "
     "or compress_inputs: never (no map input)"),
    ({"tls": True, "tls_key": "node.key"}, "TLS is on but the certificate or key is not set",
     "set both in the config file: tls: {enabled: true, cert: node.pem, key: node.key}"),
])
def test_config_refuses_a_bad_value_naming_the_setting(tmp_path: Path, changes: dict[str, object], message: str,
                                                       hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config(home=tmp_path).replace(**changes)
    assert (caught.value.message, caught.value.hint) == (message, hint)


def test_config_keeps_canonical_values(tmp_path: Path) -> None:
    config = Config(home=tmp_path, map_buffer_bytes="64MiB", lease_s=2, ssh_hosts=["node1"])
    assert (config.map_buffer_bytes, config.lease_s, config.ssh_hosts) == (64 * 2**20, 2.0, ("node1",))
    assert isinstance(config.lease_s, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 3  # type: ignore[misc]


# -- paths: never when building a Config, always before a job starts -----------------------------------


def test_building_a_config_touches_no_filesystem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def looked(*args: object) -> bool:
        raise AssertionError("building a Config looked at the filesystem")

    for name in ("isdir", "isfile", "exists"):
        monkeypatch.setattr(os.path, name, looked)
    config = Config(home=tmp_path, shuffle_mode="paths", shared_root="/no/such/octo-shared", tls=True,
                    tls_cert="/no/such/node.pem", tls_key="/no/such/node.key")
    assert Config.from_stored(tmp_path, config.stored()) == config


def test_check_paths_exist_names_the_missing_path_with_its_hint(tmp_path: Path) -> None:
    shared = Config(home=tmp_path, shuffle_mode="paths", shared_root="/no/such/octo-shared")
    with pytest.raises(ConfigError) as caught:
        check_paths_exist(shared)
    assert (caught.value.message, caught.value.hint) == (
        "shared_root /no/such/octo-shared: no such folder",
        "create it (on the shared filesystem every host mounts), or fix the path")
    tls = Config(home=tmp_path, tls=True, tls_cert=str(tmp_path / "node.pem"), tls_key=str(tmp_path / "node.key"))
    with pytest.raises(ConfigError) as caught:
        check_paths_exist(tls)
    assert (caught.value.message, caught.value.hint) == (
        f"TLS certificate {tmp_path / 'node.pem'}: no such file",
        "check tls.cert and tls.key; a resumed job reads them from the same paths")
    (tmp_path / "node.pem").write_text("")
    (tmp_path / "node.key").write_text("")
    check_paths_exist(tls)
    check_paths_exist(shared.replace(shared_root=str(tmp_path)))
    check_paths_exist(Config(home=tmp_path, shared_root="/no/such/octo-shared", tls_cert="/no/such"))  # rules off


def test_submit_refuses_a_missing_shared_root_before_a_job_exists(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = click.testing.CliRunner().invoke(octo, [
        "submit", str(tmp_path / "job.py"), "--shuffle-mode", "paths", "--shared-root", str(tmp_path / "none")],
        env={"OCTO_HOME": str(home)})
    assert result.exit_code == 2, result.output
    assert f"octo: error: shared_root {tmp_path / 'none'}: no such folder" in result.output
    assert not home.exists()


# -- what workers receive --------------------------------------------------------------------------


def test_worker_settings_are_what_the_coordinator_sends_today(tmp_path: Path) -> None:
    config = Config(home=tmp_path, memory_budget_bytes=256 * 2**20, zstd_level=3, lease_s=8.0)
    plan = config.memory_plan()
    today = {"partitions": 5, "block_bytes": config.block_bytes, "zstd_level": 3,
             "map_buffer_bytes": plan.map_buffer_bytes, "values_memory_bytes": plan.values_memory_bytes,
             "merge_fan_in": plan.merge_fan_in, "max_attempts": config.max_attempts,
             "heartbeat_every_s": 2.0, "shared_dir": str(tmp_path / "job")}  # octostore/coordinator/server.py
    assert worker_settings(config, 5, tmp_path / "job").to_wire() == today
    assert worker_settings(config, 5, None).shared_dir is None


def test_worker_settings_round_trip_through_msgpack(tmp_path: Path) -> None:
    sent = worker_settings(Config(home=tmp_path), 8, tmp_path)
    wire = msgpack.unpackb(msgpack.packb(sent.to_wire()))
    assert WorkerSettings.from_wire(wire) == sent
    assert WorkerSettings.from_wire({**wire, "heartbeat_every_s": 2}).heartbeat_every_s == 2.0


@pytest.mark.parametrize("change, message", [
    ({"partitions": None}, "worker settings: missing partitions"),
    ({"colour": "blue"}, "worker settings: unknown colour"),
    ({"partitions": None, "colour": "blue"}, "worker settings: missing partitions; unknown colour"),
    ({"zstd_level": "3"}, "worker settings: zstd_level is a string ('3'), not <class 'int'>"),
    ({"max_attempts": True}, "worker settings: max_attempts is a boolean (true), not <class 'int'>"),
    ({"shared_dir": 7}, "worker settings: shared_dir is an integer (7), not str | None"),
])
def test_from_wire_names_what_is_wrong(tmp_path: Path, change: dict[str, object], message: str) -> None:
    wire = {**worker_settings(Config(home=tmp_path), 8, None).to_wire(), **change}
    wire = {key: value for key, value in wire.items() if value is not None or key == "shared_dir"}
    with pytest.raises(ValueError) as caught:
        WorkerSettings.from_wire(wire)
    assert str(caught.value) == message


@pytest.mark.parametrize("name", [row.name for row in SETTINGS if row.wire and row.name not in
                                  ("partitions", "shared_root")])  # those two reach workers resolved, passed in
def test_each_wire_setting_changes_what_workers_receive(tmp_path: Path, name: str) -> None:
    base = Config(home=tmp_path, map_buffer_bytes=2**20)
    changed = {"memory_budget_bytes": 256 * 2**20, "map_buffer_bytes": 2**21, "zstd_level": 9,
               "max_attempts": 2, "lease_s": 4.0, "heartbeat_every_s": 1.0, "block_bytes": 4096}[name]
    assert worker_settings(base, 8, None) != worker_settings(base.replace(**{name: changed}), 8, None)

"""Cluster config files: one YAML file says where workers run and how (#5).

    workers: 2
    coordinator: {bind: 0.0.0.0, port: 11235}
    ssh: {hosts_file: hosts.txt, slots: 4}
    shuffle: {mode: paths, shared_root: /mnt/shared/octo}

``load_config_file`` reads and checks the whole file before anything starts and
returns a frozen ``ConfigFile``; ``ConfigFile.config_overrides()`` gives the
values that are ``Config`` fields, and the CLI merges them under its flags (the
command line wins).  Every mistake is one ``ConfigError`` whose first line is
``{file}:{line}: {dotted.key}: ...`` and whose hint says what to write instead.

Decisions:

- PyYAML's ``SafeLoader`` (no object construction from tags), with two changes
  in ``_Loader``.  Mappings and lists remember the line of each key and item,
  so every error names its line; a key given twice is an error, not "the last
  one wins".  Only ``true``/``false`` are booleans (YAML 1.2), not YAML 1.1's
  ``yes``/``no``/``on``/``off``, or ``progress: off`` would read as False.
- Hand-written validators, one small function per type, not jsonschema or
  pydantic: errors must name file, line and dotted key with a hint, we would
  rewrite a library's messages anyway, and it would be one more dependency.
- ``null`` means "not set" only for the keys in ``_NULLABLE`` (the schema's
  optional paths, and the counts whose ``Config`` default is derived).
  Elsewhere ``zstd_level:`` with no value is an error, not a silent default.
- Relative paths (``ssh.hosts_file``, ``shuffle.shared_root``, the TLS files,
  ``home``) start from the config file's folder, so a config and its hosts file
  move together; ``~`` is expanded.  The hosts file and ``shared_root`` must
  exist when they are used (mode ``paths``); the TLS files when TLS is on.

Layer: imports ``launch.hosts`` (one line syntax for hosts files and inline
``ssh.hosts``), so it sits with ``launch``; only ``cli`` and ``api`` import it.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from .config import MIN_MEMORY_BUDGET_BYTES, read_user_file
from .errors import ConfigError
from .launch.hosts import (DEFAULT_PYTHON, DEFAULT_SLOTS, Host, host_entries, parse_host_line, read_host_text,
                           unique_hosts)


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """The checked settings of one config file; None where the file does not set a key.

    Field names are the dotted keys with '_' for '.' (``shuffle.mode`` is ``shuffle_mode``)."""

    path: Path
    hosts: list[Host] = field(default_factory=list)  # ssh.hosts_file's lines, then ssh.hosts
    lines: dict[str, int] = field(default_factory=dict)  # dotted key -> its line in the file
    workers: int | None = None
    partitions: int | None = None
    map_tasks: int | None = None
    coordinator_bind: str | None = None
    coordinator_port: int | None = None
    ssh_hosts_file: Path | None = None
    ssh_slots: int | None = None
    ssh_python: str | None = None
    ssh_accept_new_host_keys: bool | None = None
    shuffle_mode: str | None = None  # payload | paths
    shuffle_shared_root: Path | None = None
    memory_budget: int | None = None
    map_buffer_bytes: int | None = None
    zstd_level: int | None = None
    compress_inputs: str | None = None  # auto | always | never
    max_attempts: int | None = None
    lease_s: float | None = None
    state_sync: bool | None = None
    home: Path | None = None
    tls_enabled: bool | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    progress: str | None = None  # auto | bar | lines | off

    def config_overrides(self) -> dict[str, object]:
        """The file's values for ``octostore.config.Config`` fields, by field name; unset keys left out."""
        values = {name: getattr(self, mine) for mine, name in _CONFIG_FIELDS.items()}
        if self.shuffle_shared_root is not None:
            values["shared_root"] = os.path.abspath(self.shuffle_shared_root)  # stored: resume may run elsewhere
        if self.hosts:  # as hosts-file lines, so a resumed job stores and reads them back the same way
            values["ssh_hosts"] = tuple(f"{h.label} slots={h.slots} python={h.python}" for h in self.hosts)
        for name in ("tls_cert", "tls_key", "tls_ca"):  # absolute: stored with the job, resume may run elsewhere
            path = getattr(self, name)
            values[name] = os.path.abspath(path) if path is not None else None
        return {name: value for name, value in values.items() if value is not None}


_CONFIG_FIELDS = {
    "workers": "workers", "partitions": "partitions", "map_tasks": "map_tasks", "coordinator_bind": "bind",
    "coordinator_port": "port", "memory_budget": "memory_budget_bytes", "map_buffer_bytes": "map_buffer_bytes",
    "zstd_level": "zstd_level", "compress_inputs": "compress_inputs",
    "max_attempts": "max_attempts", "lease_s": "lease_s", "state_sync": "sync", "progress": "progress",
    "ssh_accept_new_host_keys": "accept_new_host_keys", "shuffle_mode": "shuffle_mode", "tls_enabled": "tls",
}
"""ConfigFile field -> Config field.  ``home`` is not here: the CLI decides how it ranks against $OCTO_HOME."""


# -- reading YAML with lines ---------------------------------------------------------------------

_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers the line (1-based) of each of its keys."""

    def __init__(self) -> None:
        super().__init__()
        self.key_lines: dict[Any, int] = {}


class _Seq(list[Any]):
    """A YAML sequence that remembers the line (1-based) of each of its items."""

    def __init__(self, item_lines: list[int]) -> None:
        super().__init__()
        self.item_lines = item_lines


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, whose mappings and sequences remember lines."""

    # Drop YAML 1.1's yes/no/on/off booleans; true/false come back below (add_implicit_resolver).
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_lined_map(self, node: yaml.MappingNode) -> Iterator[_Map]:
        data = _Map()
        yield data  # filled in after, so an alias inside can refer to it (as SafeLoader does)
        own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
        self.flatten_mapping(node)  # merged '<<' pairs first, then the mapping's own pairs
        first_own = len(node.value) - own
        own_lines: dict[Any, int] = {}  # a merged key may be overridden; an own key given twice is an error
        for i, (key_node, value_node) in enumerate(node.value):
            key, line = self.construct_object(key_node), _line(key_node)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(None, None, "a key cannot be a list or mapping",
                                                        key_node.start_mark)
            if i >= first_own and key in own_lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (first on line {own_lines[key]})", key_node.start_mark)
            if i >= first_own:
                own_lines[key] = line
            data[key] = self.construct_object(value_node)
            data.key_lines[key] = line  # a merged key's line is where the merged mapping wrote it

    def construct_lined_seq(self, node: yaml.SequenceNode) -> Iterator[_Seq]:
        data = _Seq([_line(item) for item in node.value])
        yield data
        data.extend(self.construct_sequence(node))


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_lined_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_lined_seq)
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


# -- where a value was written, and how to describe it ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spot:
    """Where a value was written: the config file, the line and the dotted key."""

    path: Path
    line: int
    key: str

    @property
    def leaf(self) -> str:
        return self.key.rpartition(".")[2]

    def error(self, problem: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{self.path}:{self.line}: {self.key}: {problem}", hint)

    def resolve(self, text: str) -> Path:
        """A path as written in the file: ~ expanded, relative to the config file's folder."""
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.path.parent / path


def _describe(value: object) -> str:
    """A value's YAML type and the value, for 'expected X, got Y'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"{'an integer' if isinstance(value, int) else 'a number'} ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "a mapping"
    return f"a {type(value).__name__} ({value})"  # a date, a set, binary


def _wrong_type(value: object, spot: _Spot, expected: str, hint: str) -> ConfigError:
    if value is None:
        hint = f"give {spot.leaf} a value, or delete the line to use the default"
    return spot.error(f"expected {expected}, got {_describe(value)}", hint)


def _unquote_hint(value: object, spot: _Spot, pattern: str, otherwise: str) -> str:
    """Spot the quoted value ('8' for 8): suggest dropping the quotes, else `otherwise`."""
    if isinstance(value, str) and re.fullmatch(pattern, value.strip()):
        return f"remove the quotes: {spot.leaf}: {value.strip()}"
    return otherwise


# -- one validator per type ------------------------------------------------------------------------

_Validator = Callable[[object, _Spot], object]


def _integer(least: int, most: int | None = None) -> _Validator:
    """A whole number in least..most (booleans are not numbers)."""
    allowed = f">= {least}" if most is None else f"in {least}..{most}"

    def check(value: object, spot: _Spot) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = _unquote_hint(value, spot, r"-?[0-9]+", f"write a whole number {allowed}")
            raise _wrong_type(value, spot, "an integer", hint)
        if value < least or (most is not None and value > most):
            raise spot.error(f"{value} is out of range (must be {allowed})", f"write a whole number {allowed}")
        return value

    return check


def _seconds(value: object, spot: _Spot) -> float:
    """A finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str) and re.fullmatch(r"[0-9.]+\s*s", value.strip()):
            hint = f"write plain seconds, without a unit: {spot.leaf}: {value.strip().rstrip('s').strip()}"
        else:
            hint = _unquote_hint(value, spot, r"[0-9]*\.?[0-9]+", f"write a number of seconds, e.g. {spot.leaf}: 30")
        raise _wrong_type(value, spot, "a number of seconds", hint)
    if not (math.isfinite(value) and value > 0):
        raise spot.error(f"{value} is out of range (must be a number > 0)", f"e.g. {spot.leaf}: 30")
    return float(value)


def _text(value: object, spot: _Spot) -> str:
    """Non-empty text."""
    if not isinstance(value, str):
        scalar = isinstance(value, (bool, int, float))
        raise _wrong_type(value, spot, "text", f"quote it: {spot.leaf}: '{value}'" if scalar else "write text")
    if not value.strip():
        raise spot.error("is empty", f"give {spot.leaf} a value, or delete the line to use the default")
    return value


def _boolean(value: object, spot: _Spot) -> bool:
    """true or false, unquoted."""
    if not isinstance(value, bool):
        hint = _unquote_hint(value, spot, r"true|false", "write true or false")
        if isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "y", "n"):
            hint = f"write true or false ('{value}' is text here, as in YAML 1.2)"
        raise _wrong_type(value, spot, "true or false", hint)
    return value


def _choice(*options: str) -> _Validator:
    """One of a few words."""
    listed = ", ".join(options)

    def check(value: object, spot: _Spot) -> str:
        if not isinstance(value, str):
            raise _wrong_type(value, spot, f"one of {listed}", f"write one of {listed}")
        if value not in options:
            close = difflib.get_close_matches(value, options, n=1)
            raise spot.error(f"'{value}' is not one of {listed}",
                             f"did you mean '{close[0]}'?" if close else f"write one of {listed}")
        return value

    return check


_SIZE_UNITS = {"": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_SIZE = re.compile(r"([0-9]+)\s*(B|KiB|MiB|GiB|TiB)?")
_SIZE_SLIP = re.compile(r"([0-9]+)\s*([KMGTkmgt])[iI]?[bB]?")  # 64MB, 64M, 64mib: meant 64MiB
_SIZE_HINT = "write bytes (67108864) or a size like 512KiB, 64MiB or 1GiB"


def _size(value: object, spot: _Spot) -> int:
    """Bytes, as a whole number or a string like '64MiB'; at least 1."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _wrong_type(value, spot, "a size in bytes", _SIZE_HINT)
    size = value if isinstance(value, int) else _parse_size(value, spot)
    if size < 1:
        raise spot.error(f"{value} is out of range (must be at least 1 byte)", _SIZE_HINT)
    return size


def _memory_budget(value: object, spot: _Spot) -> int:
    size = _size(value, spot)
    if size < MIN_MEMORY_BUDGET_BYTES:
        raise spot.error(f"{value} is below the minimum of {MIN_MEMORY_BUDGET_BYTES >> 20}MiB",
                         "an idle worker alone is ~45 MiB; give each process at least 96MiB")
    return size


def _parse_size(text: str, spot: _Spot) -> int:
    match = _SIZE.fullmatch(text.strip())
    if match:
        return int(match[1]) * _SIZE_UNITS[match[2] or ""]
    slip = _SIZE_SLIP.fullmatch(text.strip())
    hint = (f"did you mean '{slip[1]}{slip[2].upper()}iB'? sizes are binary: KiB, MiB, GiB" if slip
            else _SIZE_HINT)
    raise spot.error(f"'{text}' is not a size", hint)


def _path(value: object, spot: _Spot) -> Path:
    """A path; relative to the config file's folder, ~ expanded.  Need not exist (yet)."""
    return spot.resolve(_text(value, spot))


def _existing_file(value: object, spot: _Spot) -> Path:
    path = _path(value, spot)
    _require(path, spot, "file")
    return path


def _require(path: Path, spot: _Spot, kind: str) -> None:
    """Raise unless `path` is an existing file or folder (`kind`)."""
    if path.is_dir() if kind == "folder" else path.is_file():
        return
    problem = f"'{path}' is not a {kind}" if path.exists() else f"{kind} '{path}' does not exist"
    raise spot.error(problem, f"relative paths start from the config file's folder ({spot.path.parent})")


def _host_lines(value: object, spot: _Spot) -> list[tuple[str, str]]:
    """Inline hosts-file lines, each with where it was written ("file:line")."""
    if not isinstance(value, _Seq):
        raise _wrong_type(value, spot, "a list of host lines",
                          'write e.g. hosts: ["alice@node1", "node2:2222 slots=4"]')
    lines = []
    for item, line in zip(value, value.item_lines):
        if not isinstance(item, str):
            raise _wrong_type(item, _Spot(spot.path, line, spot.key), "a host line (text)",
                              "write each host as text: [user@]host[:port] [slots=N] [python=PATH]")
        lines.append((f"{spot.path}:{line}", item))
    return lines


# -- the schema ------------------------------------------------------------------------------------

_Schema = dict[str, "_Validator | _Schema"]

_SCHEMA: _Schema = {
    "workers": _integer(0),
    "partitions": _integer(1),
    "map_tasks": _integer(1),
    "coordinator": {"bind": _text, "port": _integer(0, 65535)},
    "ssh": {"hosts_file": _existing_file, "hosts": _host_lines, "slots": _integer(1), "python": _text,
            "accept_new_host_keys": _boolean},
    "shuffle": {"mode": _choice("payload", "paths"), "shared_root": _path},
    "memory_budget": _memory_budget,
    "map_buffer_bytes": _size,
    "zstd_level": _integer(-22, 22),
    "compress_inputs": _choice("auto", "always", "never"),
    "max_attempts": _integer(1),
    "lease_s": _seconds,
    "state_sync": _boolean,
    "home": _path,
    "tls": {"enabled": _boolean, "cert": _path, "key": _path, "ca": _path},
    "progress": _choice("auto", "bar", "lines", "off"),
}

_NULLABLE = frozenset({"workers", "partitions", "map_tasks", "ssh.hosts_file", "ssh.hosts", "shuffle.shared_root",
                       "tls.cert", "tls.key", "tls.ca"})
"""Keys where null means "not set": Config derives the first three; the rest are optional paths."""


def _check_level(data: _Map, schema: _Schema, spot: _Spot, values: dict[str, object], lines: dict[str, int]) -> None:
    """Validate one mapping (the top level, or a section at `spot`) into values and lines by dotted key."""
    prefix = f"{spot.key}." if spot.key else ""
    for key, value in data.items():
        here = _Spot(spot.path, data.key_lines[key], f"{prefix}{key}")
        rule = schema.get(key) if isinstance(key, str) else None
        if rule is None:
            raise _unknown_key(here, schema, prefix)
        lines[here.key] = here.line
        if isinstance(rule, dict):
            _check_section(value, rule, here, values, lines)
        elif value is not None or here.key not in _NULLABLE:
            values[here.key] = rule(value, here)


def _check_section(value: object, schema: _Schema, spot: _Spot, values: dict[str, object],
                   lines: dict[str, int]) -> None:
    if value is None:  # `tls:` with every line below it commented out
        return
    if not isinstance(value, _Map):
        example = next(iter(schema))
        raise _wrong_type(value, spot, "a mapping", f"indent its settings under '{spot.key}:', e.g. '  {example}: ...'")
    _check_level(value, schema, spot, values, lines)


def _unknown_key(spot: _Spot, schema: _Schema, prefix: str) -> ConfigError:
    leaf = spot.key[len(prefix):]
    close = difflib.get_close_matches(leaf, list(schema), n=1)
    sections = [name for name, rule in schema.items() if isinstance(rule, dict) and leaf in rule]
    if sections:  # `port: 11235` at the top level
        hint = f"'{leaf}' belongs under '{sections[0]}:', i.e. {sections[0]}: {{{leaf}: ...}}"
    elif close:
        hint = f"did you mean '{prefix}{close[0]}'?"
    else:
        hint = f"valid keys{' under ' + prefix[:-1] if prefix else ''}: {', '.join(schema)}"
    return ConfigError(f"{spot.path}:{spot.line}: unknown key '{spot.key}'", hint)


# -- rules across keys -----------------------------------------------------------------------------


def _check_shuffle(path: Path, values: dict[str, object], lines: dict[str, int]) -> None:
    """Mode 'paths' needs a shared_root folder that exists."""
    if values.get("shuffle.mode") != "paths":
        return
    root = values.get("shuffle.shared_root")
    if not isinstance(root, Path):
        raise _Spot(path, lines["shuffle.mode"], "shuffle.mode").error(
            "mode 'paths' needs shuffle.shared_root",
            "set shuffle.shared_root to a folder every host mounts at the same path, or use mode: payload")
    _require(root, _Spot(path, lines["shuffle.shared_root"], "shuffle.shared_root"), "folder")


def _check_tls(path: Path, values: dict[str, object], lines: dict[str, int]) -> None:
    """TLS on needs a certificate and key that exist (and the CA file, if named)."""
    if values.get("tls.enabled") is not True:
        return
    for name in ("tls.cert", "tls.key"):
        if name not in values:
            raise _Spot(path, lines["tls.enabled"], "tls.enabled").error(
                f"TLS is on but {name} is not set",
                "name the PEM files, e.g. tls: {enabled: true, cert: node.pem, key: node.key}")
    for name in ("tls.cert", "tls.key", "tls.ca"):
        if name in values:
            _require(cast(Path, values[name]), _Spot(path, lines[name], name), "file")


def _collect_hosts(values: dict[str, object]) -> list[Host]:
    """The hosts file's hosts, then the inline ones, with ssh.slots and ssh.python as defaults."""
    slots = cast(int, values.get("ssh.slots", DEFAULT_SLOTS))
    python = cast(str, values.get("ssh.python", DEFAULT_PYTHON))
    entries: list[tuple[str, Host]] = []
    hosts_file = values.get("ssh.hosts_file")
    if isinstance(hosts_file, Path):
        entries += host_entries(read_host_text(hosts_file), str(hosts_file), slots=slots, python=python)
    for where, text in cast(list[tuple[str, str]], values.get("ssh.hosts", [])):
        host = parse_host_line(text, where, slots=slots, python=python)
        if host is None:
            raise ConfigError(f"{where}: ssh.hosts: empty host line", "remove the empty item from ssh.hosts")
        entries.append((where, host))
    return unique_hosts(entries)


# -- entry point -----------------------------------------------------------------------------------


def load_config_file(path: Path) -> ConfigFile:
    """Read and check the config file at `path`.  Raises ConfigError ("{path}:{line}: ...")
    on the first problem; reads the hosts file and checks that named paths exist."""
    data, line = _read_yaml(path)
    if data is None:  # an empty file, or only comments
        return ConfigFile(path=path)
    if not isinstance(data, _Map):
        raise ConfigError(f"{path}:{line}: the top level must be a mapping of settings, not {_describe(data)}",
                          "write one 'key: value' per line, e.g. workers: 2")
    values: dict[str, object] = {}
    lines: dict[str, int] = {}
    _check_level(data, _SCHEMA, _Spot(path, line, ""), values, lines)
    _check_shuffle(path, values, lines)
    _check_tls(path, values, lines)
    hosts = _collect_hosts(values)
    fields = {key.replace(".", "_"): value for key, value in values.items() if key != "ssh.hosts"}
    return ConfigFile(path=path, hosts=hosts, lines=lines, **fields)  # type: ignore[arg-type]  # validators typed them


def _read_yaml(path: Path) -> tuple[object, int]:
    """The file's one YAML document and its first line; ConfigError for unreadable or bad YAML."""
    text = _read_text(path)
    try:
        return _parse_yaml(text)
    except yaml.reader.ReaderError as e:  # not a MarkedYAMLError: it has a position, not a line
        line = text.count("\n", 0, e.position) + 1
        raise ConfigError(f"{path}:{line}: invalid YAML: character U+{int(e.character):04X} is not allowed",
                          "remove the control character (save the file as plain UTF-8 text)") from None
    except yaml.MarkedYAMLError as e:
        raise _yaml_error(path, e) from None


def _parse_yaml(text: str) -> tuple[object, int]:
    loader = _Loader(text)  # raises ReaderError already, for a control character anywhere
    try:
        node = loader.get_single_node()
        return (None, 1) if node is None else (loader.construct_document(node), _line(node))
    finally:
        loader.dispose()


def _yaml_error(path: Path, e: yaml.MarkedYAMLError) -> ConfigError:
    mark = e.problem_mark or e.context_mark
    line = int(mark.line) + 1 if mark is not None else 1
    problem = e.problem or e.context or "cannot parse"
    if "'\\t'" in problem:
        hint = "indent with spaces: YAML does not allow tabs"
    elif "appears twice" in problem:
        hint = "keep one of the two lines"
    elif "mapping values are not allowed" in problem:
        hint = "write 'key: value' with a space after ':'; quote text containing ': '; check the line above has its ':'"
    else:
        hint = "check the indentation and quoting on this line and the one above"
    return ConfigError(f"{path}:{line}: invalid YAML: {problem}", hint)


def _read_text(path: Path) -> str:
    return read_user_file(path, "config file", "check the path of the config file")

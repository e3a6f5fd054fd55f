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

- The schema is the settings table's keys (``settings.SETTINGS``: kind, key,
  null allowed or not) plus the file's own ssh keys, ``_FILE_ONLY`` below
  (``ssh.hosts_file``, ``ssh.hosts``, ``ssh.slots``, ``ssh.python`` become
  ``Config.ssh_hosts``).  A kind says what is wrong with a value and the hint;
  this module adds where: ``{file}:{line}: {dotted.key}: ``.
- PyYAML's ``SafeLoader`` (no object construction from tags), with two changes
  in ``_Loader``.  Mappings and lists remember the line of each key and item,
  so every error names its line; a key given twice is an error, not "the last
  one wins".  Only ``true``/``false`` are booleans (YAML 1.2), not YAML 1.1's
  ``yes``/``no``/``on``/``off``, or ``progress: off`` would read as False.
- ``null`` means "not set" only for the settings whose ``Config`` default is
  ``None`` (derived counts, optional paths) and the optional ssh paths.
  Elsewhere ``zstd_level:`` with no value is an error, not a silent default.
- Relative paths (``ssh.hosts_file``, ``shuffle.shared_root``, the TLS files,
  ``home``) start from the config file's folder, so a config and its hosts file
  move together; ``~`` is expanded.  The hosts file must exist; the paths of a
  rule (``settings.RULES``: ``shared_root`` in mode ``paths``, the TLS files
  with TLS on) when the rule applies, checked here too so that the error names
  their line.

Layer: imports ``launch.hosts`` (one line syntax for hosts files and inline
``ssh.hosts``), so it sits with ``launch``; only ``cli`` and ``api`` import it.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from .config import read_user_file
from .errors import ConfigError
from .launch.hosts import (
    DEFAULT_PYTHON,
    DEFAULT_SLOTS,
    Host,
    host_entries,
    parse_host_line,
    read_host_text,
    unique_hosts,
)
from .settings import BY_NAME, RULES, SETTINGS, Int, Kind, PathTo, Rule, Text, describe


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """The checked settings of one config file, by dotted key; a key the file does not set is absent."""

    path: Path
    values: dict[str, object] = field(default_factory=dict)  # dotted key -> checked value (paths resolved)
    lines: dict[str, int] = field(default_factory=dict)  # dotted key -> its line in the file
    hosts: list[Host] = field(default_factory=list)  # ssh.hosts_file's lines, then ssh.hosts

    @property
    def home(self) -> Path | None:
        """The file's ``home``: the CLI decides how it ranks against $OCTO_HOME, so it is no override."""
        return cast("Path | None", self.values.get("home"))

    def config_overrides(self) -> dict[str, object]:
        """The file's values for ``octostore.config.Config`` fields, by field name; unset keys left out."""
        overrides: dict[str, object] = {}
        for row in SETTINGS:
            if row.key is None or row.key not in self.values or row.name == "home":
                continue
            value = self.values[row.key]  # paths absolute: stored with the job, resume may run elsewhere
            overrides[row.name] = os.path.abspath(cast(Path, value)) if isinstance(row.kind, PathTo) else value
        if self.hosts:  # as hosts-file lines, so a resumed job stores and reads them back the same way
            overrides["ssh_hosts"] = tuple(f"{h.label} slots={h.slots} python={h.python}" for h in self.hosts)
        return overrides


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


# -- where a value was written -----------------------------------------------------------------------


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


def _wrong_type(value: object, spot: _Spot, expected: str, hint: str) -> ConfigError:
    if value is None:
        hint = f"give {spot.leaf} a value, or delete the line to use the default"
    return spot.error(f"expected {expected}, got {describe(value)}", hint)


# -- validators: a setting's kind, or one of the file's own keys ---------------------------------------

_Validator = Callable[[object, _Spot], object]


def _of_kind(kind: Kind) -> _Validator:
    """Check a value with a setting's kind; a path comes back resolved (see _Spot.resolve)."""

    def check(value: object, spot: _Spot) -> object:
        try:
            checked = kind.parse(value, spot.leaf)
        except ConfigError as e:
            raise spot.error(e.message, e.hint) from None
        return spot.resolve(cast(str, checked)) if isinstance(kind, PathTo) else checked

    return check


def _existing_file(value: object, spot: _Spot) -> Path:
    path = cast(Path, _of_kind(PathTo("file"))(value, spot))
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

_FILE_ONLY: _Schema = {"ssh": {
    "hosts_file": _existing_file, "hosts": _host_lines, "slots": _of_kind(Int(1)), "python": _of_kind(Text()),
}}
"""The file's own keys, no Config field: together they become ``Config.ssh_hosts``."""


def _build_schema() -> _Schema:
    """The nested schema: each setting's key in table order; the file's own keys lead their section."""
    schema: _Schema = {}
    for row in SETTINGS:
        if row.key is not None:
            section, _, leaf = row.key.rpartition(".")
            level = cast(_Schema, schema.setdefault(section, {})) if section else schema
            level[leaf] = _of_kind(row.kind)
    for section, own in _FILE_ONLY.items():
        schema[section] = {**cast(_Schema, own), **cast(_Schema, schema.get(section, {}))}
    return schema


_SCHEMA = _build_schema()

_NULLABLE = frozenset({row.key for row in SETTINGS if row.key and row.nullable} | {"ssh.hosts_file", "ssh.hosts"})
"""Keys where null means "not set": the settings whose Config default is None, and the optional hosts."""


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


# -- rules across keys (settings.RULES), with lines ----------------------------------------------------


def _check_rule(rule: Rule, path: Path, values: dict[str, object], lines: dict[str, int]) -> None:
    """A rule that applies needs its keys set (else name the line of its `when` key), and every
    path of it that the file names must exist."""
    by_name = {row.name: values[row.key] for row in SETTINGS if row.key in values}
    if not rule.applies(by_name):
        return
    missing = rule.missing(by_name)
    if missing is not None:
        when = cast(str, BY_NAME[rule.when].key)
        raise _Spot(path, lines[when], when).error(rule.file_problem.format(key=BY_NAME[missing].key),
                                                   rule.file_hint)
    for name in (*rule.needs, *rule.also_checked):
        key, kind = cast(str, BY_NAME[name].key), cast(PathTo, BY_NAME[name].kind)
        if key in values:
            _require(cast(Path, values[key]), _Spot(path, lines[key], key), cast(str, kind.exists))


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
        raise ConfigError(f"{path}:{line}: the top level must be a mapping of settings, not {describe(data)}",
                          "write one 'key: value' per line, e.g. workers: 2")
    values: dict[str, object] = {}
    lines: dict[str, int] = {}
    _check_level(data, _SCHEMA, _Spot(path, line, ""), values, lines)
    for rule in RULES:
        _check_rule(rule, path, values, lines)
    hosts = _collect_hosts(values)
    checked = {key: value for key, value in values.items() if key != "ssh.hosts"}  # ssh.hosts: in `hosts`
    return ConfigFile(path=path, values=checked, lines=lines, hosts=hosts)


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

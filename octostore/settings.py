"""The settings table: every knob of octostore, each declared once (#12).

One field of ``Settings`` is one setting.  The field gives its name, type and
default; its ``setting(...)`` gives the rest: its *kind* (how a value is
checked, and its unit), its config-file key, its command-line flags and their
help, whether it is stored with the job (a resumed job runs with it again) and
whether workers receive it.  Everything else is derived from this table:

- ``config.Config`` is ``Settings`` plus what follows from it (the memory
  plan, the ``resolved_*`` values); building one checks every value with its
  kind, then the rules across settings (``RULES``);
- ``Config.stored()`` and ``Config.from_stored`` keep the ``stored`` ones;
- ``config_file.load_config_file`` builds its schema from the keys;
- ``cli.main`` builds the options of submit, server and resume from the flags.

**To add a setting**, add a field to ``Settings`` below (and read it where it
is used).  A config-file key, a flag, storing it with the job: one argument
each.

Decisions:

- The table is a dataclass whose fields carry their ``Setting`` in
  ``metadata``.  Rejected: a list of rows from which ``Config`` is generated
  with ``make_dataclass`` (mypy and readers would lose ``config.lease_s:
  float``).
- Kinds are hand-written, neither pydantic nor msgspec (docs/decisions.md,
  "One settings table": pydantic adds 62 ms to `octo`'s ~100 ms of imports;
  msgspec does not check on construction; our error texts would be rewritten
  from either's anyway).
- A kind checks a value in one place and raises ``ConfigError(problem, hint)``
  without saying where the value came from; the caller adds that: the config
  file ``{file}:{line}: {dotted.key}: ``, ``Config`` the setting's label.  A
  kind also gives the canonical value (``'64MiB'`` -> 67108864, a list ->
  tuple), which ``Settings`` keeps.
- ``None`` means "derive it" (or "not set") for exactly the settings whose
  default is ``None``; a config file's ``null`` means the same there.
- Building ``Settings`` touches no filesystem.  The paths a rule needs must
  exist only when a job starts: ``check_paths_exist``, called by ``api``.
- What workers receive is a typed ``WorkerSettings`` (``to_wire`` /
  ``from_wire``), built from a Config by ``config.worker_settings``; the
  settings marked ``wire`` feed it.

Layer 1: imports nothing of octostore but ``errors``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_PORT = 11235
"""TCP port of ``octo server`` when none is given (mincemeat's, so old habits work)."""

MEMORY_BUDGET_BYTES = 512 * 1024 * 1024
"""What each process (coordinator, every worker) plans to use at most; ``memory_plan`` splits it."""

MIN_MEMORY_BUDGET_BYTES = 96 * 1024 * 1024
"""An idle worker is ~45 MiB (Python, octostore, the job's imports); below this nothing useful fits."""

INITIAL_MAP_SIZE_BYTES = 64 * 1024 * 1024
"""First LMDB map size of each store; it doubles whenever a write finds it full."""

MAX_FRAME_BYTES = 256 * 1024 * 1024
"""Largest frame a peer may announce; checked before a byte of the body is allocated."""


# -- describing a refused value --------------------------------------------------------------------


def describe(value: object) -> str:
    """A value's YAML type and the value, for 'expected X, got Y'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"{'an integer' if isinstance(value, int) else 'a number'} ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, (list, tuple, dict)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return f"a {type(value).__name__} ({value})"  # a date, a set, binary


def _wrong_type(value: object, leaf: str, expected: str, hint: str) -> ConfigError:
    if value is None:
        hint = f"give {leaf} a value, or delete the line to use the default"
    return ConfigError(f"expected {expected}, got {describe(value)}", hint)


def _unquote_hint(value: object, leaf: str, pattern: str, otherwise: str) -> str:
    """Spot the quoted value ('8' for 8): suggest dropping the quotes, else `otherwise`."""
    if isinstance(value, str) and re.fullmatch(pattern, value.strip()):
        return f"remove the quotes: {leaf}: {value.strip()}"
    return otherwise


# -- kinds: how a value is checked ------------------------------------------------------------------
#
# Each kind's parse() returns the canonical value or raises ConfigError(problem, hint); `leaf` is the
# name the user wrote (the last part of the config-file key), for hints like "remove the quotes: ...".
# Kinds are plain slotted classes, set once in __init__: as frozen dataclasses the eight of them cost
# ~5 ms of `octo`'s imports (0.65 ms each on Python 3.11, which execs each generated method alone).


class _Kind:
    __slots__: tuple[str, ...] = ()
    unit = ""  # what the number counts, for names and docs ("s", "bytes")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(getattr(self, name)) for name in self.__slots__)})"


class Int(_Kind):
    """A whole number in least..most (booleans are not numbers)."""

    __slots__ = ("least", "most")

    def __init__(self, least: int, most: int | None = None) -> None:
        self.least, self.most = least, most

    @property
    def allowed(self) -> str:
        return f">= {self.least}" if self.most is None else f"in {self.least}..{self.most}"

    def parse(self, value: object, leaf: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = _unquote_hint(value, leaf, r"-?[0-9]+", f"write a whole number {self.allowed}")
            raise _wrong_type(value, leaf, "an integer", hint)
        if value < self.least or (self.most is not None and value > self.most):
            raise ConfigError(f"{value} is out of range (must be {self.allowed})",
                              f"write a whole number {self.allowed}")
        return value


class Seconds(_Kind):
    """A finite number of seconds > 0 (or >= 0 with `zero_ok`, where 0 means "derive it")."""

    __slots__ = ("zero_ok",)
    unit = "s"

    def __init__(self, zero_ok: bool = False) -> None:
        self.zero_ok = zero_ok

    def parse(self, value: object, leaf: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str) and re.fullmatch(r"[0-9.]+\s*s", value.strip()):
                hint = f"write plain seconds, without a unit: {leaf}: {value.strip().rstrip('s').strip()}"
            else:
                hint = _unquote_hint(value, leaf, r"[0-9]*\.?[0-9]+", f"write a number of seconds, e.g. {leaf}: 30")
            raise _wrong_type(value, leaf, "a number of seconds", hint)
        if not (math.isfinite(value) and (value >= 0 if self.zero_ok else value > 0)):
            least = ">= 0" if self.zero_ok else "> 0"
            raise ConfigError(f"{value} is out of range (must be a number {least})", f"e.g. {leaf}: 30")
        return float(value)


_SIZE_UNITS = {"": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_SIZE = re.compile(r"([0-9]+)\s*(B|KiB|MiB|GiB|TiB)?")
_SIZE_SLIP = re.compile(r"([0-9]+)\s*([KMGTkmgt])[iI]?[bB]?")  # 64MB, 64M, 64mib: meant 64MiB
_SIZE_HINT = "write bytes (67108864) or a size like 512KiB, 64MiB or 1GiB"


class Size(_Kind):
    """Bytes, as a whole number or a string like '64MiB'; at least 1, and at least `floor_bytes`
    (said with `floor_hint`)."""

    __slots__ = ("floor_bytes", "floor_hint")
    unit = "bytes"

    def __init__(self, floor_bytes: int = 1, floor_hint: str | None = None) -> None:
        self.floor_bytes, self.floor_hint = floor_bytes, floor_hint

    def parse(self, value: object, leaf: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise _wrong_type(value, leaf, "a size in bytes", _SIZE_HINT)
        size = value if isinstance(value, int) else _parse_size(value)
        if size < 1:
            raise ConfigError(f"{value} is out of range (must be at least 1 byte)", _SIZE_HINT)
        if size < self.floor_bytes:
            raise ConfigError(f"{value} is below the minimum of {self.floor_bytes >> 20}MiB", self.floor_hint)
        return size


def _parse_size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if match:
        return int(match[1]) * _SIZE_UNITS[match[2] or ""]
    slip = _SIZE_SLIP.fullmatch(text.strip())
    hint = f"did you mean '{slip[1]}{slip[2].upper()}iB'? sizes are binary: KiB, MiB, GiB" if slip else _SIZE_HINT
    raise ConfigError(f"'{text}' is not a size", hint)


class Text(_Kind):
    """Non-empty text."""

    def parse(self, value: object, leaf: str) -> str:
        if not isinstance(value, str):
            scalar = isinstance(value, (bool, int, float))
            raise _wrong_type(value, leaf, "text", f"quote it: {leaf}: '{value}'" if scalar else "write text")
        if not value.strip():
            raise ConfigError("is empty", f"give {leaf} a value, or delete the line to use the default")
        return value


class PathTo(_Kind):
    """A path, as text (a config file resolves it against its own folder).  With `exists`, it must
    be an existing "file" or "folder" when it is used: checked by the config file, and by
    ``check_paths_exist`` for the paths a rule needs; never when a Settings is built."""

    __slots__ = ("exists",)

    def __init__(self, exists: str | None = None) -> None:
        self.exists = exists

    def parse(self, value: object, leaf: str) -> object:
        return value if isinstance(value, os.PathLike) else Text().parse(value, leaf)


class Boolean(_Kind):
    """true or false, unquoted."""

    def parse(self, value: object, leaf: str) -> bool:
        if not isinstance(value, bool):
            hint = _unquote_hint(value, leaf, r"true|false", "write true or false")
            if isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "y", "n"):
                hint = f"write true or false ('{value}' is text here, as in YAML 1.2)"
            raise _wrong_type(value, leaf, "true or false", hint)
        return value


class Choice(_Kind):
    """One of a few words, each with what it means (``Config``'s errors spell the meanings out)."""

    __slots__ = ("meanings",)

    def __init__(self, meanings: dict[str, str]) -> None:
        self.meanings = meanings

    def parse(self, value: object, leaf: str) -> str:
        listed = ", ".join(self.meanings)
        if not isinstance(value, str):
            raise _wrong_type(value, leaf, f"one of {listed}", f"write one of {listed}")
        if value not in self.meanings:
            close = difflib.get_close_matches(value, list(self.meanings), n=1)
            raise ConfigError(f"'{value}' is not one of {listed}",
                              f"did you mean '{close[0]}'?" if close else f"write one of {listed}")
        return value

    def explain(self, leaf: str) -> str:
        """Say what each word means, e.g. "use mode: payload (...) or mode: paths (...)"."""
        return "use " + " or ".join(f"{leaf}: {word} ({meaning})" for word, meaning in self.meanings.items())


class Lines(_Kind):
    """A list of text lines, kept as a tuple (msgpack gives a stored tuple back as a list)."""

    def parse(self, value: object, leaf: str) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not all(isinstance(line, str) for line in value):
            raise _wrong_type(value, leaf, "a list of text lines", "give one text line per item")
        return tuple(value)


Kind = Int | Seconds | Size | Text | PathTo | Boolean | Choice | Lines


# -- one row of the table --------------------------------------------------------------------------

JOB_COMMANDS = ("submit", "server")


@dataclass(frozen=True, slots=True)
class Flag:
    """A command-line option of a setting in some commands.  Its value is None unless given, so
    that a --config file's value applies; "--x/--no-x" declares an on/off pair."""

    decl: str
    help: str
    commands: tuple[str, ...] = JOB_COMMANDS
    least: float | None = None  # a flag-only lower bound, stricter than the kind's


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the table; `name` and `default` are filled in from its field of Settings."""

    kind: Kind
    help: str  # what it means; each Flag has its own wording for --help
    key: str | None = None  # config-file dotted key, e.g. "shuffle.shared_root"
    flags: tuple[Flag, ...] = ()
    stored: bool = False  # kept with the job: `octo resume` runs with it again
    wire: bool = False  # workers receive it, or a value derived from it (WorkerSettings)
    name: str = ""  # filled in from the field
    default: object = None  # filled in from the field; MISSING: it must be given

    @property
    def nullable(self) -> bool:
        """None is allowed, and means "derive it" (a config file's null: "not set")."""
        return self.default is None

    @property
    def unit(self) -> str:
        return self.kind.unit

    @property
    def leaf(self) -> str:
        """The name the user writes: the config-file key's last part, else the field name."""
        return self.key.rpartition(".")[2] if self.key else self.name

    @property
    def label(self) -> str:
        """How Config's errors name it: "shuffle mode" for shuffle.mode, else the field name."""
        return self.key.replace(".", " ") if self.key and "." in self.key else self.name

    def check(self, value: object) -> object:
        """Return `value` in canonical form, or raise ConfigError naming the setting (not a file)."""
        if value is None and self.nullable:
            return None
        try:
            return self.kind.parse(value, self.leaf)
        except ConfigError as e:
            hint = self.kind.explain(self.leaf) if isinstance(self.kind, Choice) else e.hint
            raise ConfigError(f"{self.label} {e.message}", hint) from None


def setting(default: object, kind: Kind, help: str, *, key: str | None = None, flags: tuple[Flag, ...] = (),
            stored: bool = False, wire: bool = False) -> Any:
    """Declare a field of Settings as a setting (MISSING as `default`: it must be given)."""
    return field(default=default, metadata={"setting": Setting(kind, help, key, flags, stored, wire)})


# -- the table -------------------------------------------------------------------------------------
#
# Fields with a config-file key come first, in the order the file's schema lists them ("valid keys:
# ..." hints); the file's own ssh keys (hosts_file, hosts, slots, python) live in config_file.py.

_WORKERS_HELP = "Local worker processes (default: one per core; 0 waits for `octo client`)."
_PROGRESS = {"auto": "a bar on a terminal, else lines", "bar": "a live bar", "lines": "a line every few seconds",
             "off": "nothing"}
_BUDGET_HINT = "an idle worker alone is ~45 MiB; give each process at least 96MiB"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting, checked and in canonical form; build a ``config.Config``, which adds what is derived.

    Each field: its default, kind and meaning; then its config-file key, stored, wire; then its flags."""

    workers: int | None = setting(
        None, Int(0), "local worker processes; None = one per core",
        key="workers", stored=True,
        flags=(Flag("--workers", _WORKERS_HELP, ("submit",)),
               Flag("--workers", "Local workers to start besides the clients (default: 0).", ("server",)),
               Flag("--workers", "Local workers (default: as submitted).", ("resume",))))
    partitions: int | None = setting(
        None, Int(1), "reduce partitions; None = the job's `partitions`, else DEFAULT_PARTITIONS",
        key="partitions", wire=True,
        flags=(Flag("--partitions", "Reduce partitions (default: the job's, else 8)."),))
    map_tasks: int | None = setting(
        None, Int(1), "map tasks; None = Config.resolved_map_tasks()",
        key="map_tasks",
        flags=(Flag("--map-tasks", "Map tasks (default: 4 per local worker, at least 8)."),))
    bind: str = setting(
        "127.0.0.1", Text(), "the address the coordinator listens on",
        key="coordinator.bind", stored=True,
        flags=(Flag("--bind", "Address to listen on (default: 0.0.0.0).", ("server",)),))
    port: int = setting(
        0, Int(0, 65535), "the coordinator's TCP port; 0 = any free port (local submit)",
        key="coordinator.port", stored=True,
        flags=(Flag("--port", f"Port to listen on (default: {DEFAULT_PORT}).", ("server",)),))
    accept_new_host_keys: bool = setting(
        False, Boolean(), "add unknown (never changed) SSH host keys to known_hosts",
        key="ssh.accept_new_host_keys", stored=True,
        flags=(Flag("--accept-new-host-keys",
                    "Add unknown (never changed) SSH host keys to known_hosts, printing their fingerprints."),))
    shuffle_mode: str = setting(
        "payload", Choice({"payload": "through the coordinator", "paths": "a shared filesystem"}),
        "how map output reaches the reducers",
        key="shuffle.mode", stored=True,
        flags=(Flag("--shuffle-mode",
                    "payload: data through the coordinator (default); paths: through --shared-root."),))
    shared_root: str | None = setting(
        None, PathTo("folder"), "paths mode: a folder every worker host mounts at the same path",
        key="shuffle.shared_root", stored=True, wire=True,
        flags=(Flag("--shared-root", "paths mode: a folder every worker host mounts at the same path."),))
    memory_budget_bytes: int = setting(
        MEMORY_BUDGET_BYTES, Size(MIN_MEMORY_BUDGET_BYTES, _BUDGET_HINT), "per process; see config.memory_plan()",
        key="memory_budget", stored=True, wire=True)
    map_buffer_bytes: int | None = setting(
        None, Size(), "the map side's grouping buffer; None = memory_plan()'s share of the budget",
        key="map_buffer_bytes", stored=True, wire=True)
    zstd_level: int = setting(
        1, Int(-22, 22), "zstd level of shuffle blocks",
        key="zstd_level", stored=True, wire=True)
    compress_inputs: str = setting(
        "auto", Choice({"auto": "except to workers over loopback", "always": "every map input",
                        "never": "no map input"}), "zstd map inputs on their way to workers",
        key="compress_inputs", stored=True)
    max_attempts: int = setting(
        4, Int(1), "attempts of a task before the job fails",
        key="max_attempts", stored=True, wire=True)
    lease_s: float = setting(
        30.0, Seconds(), "a worker silent this long is lost; its tasks run elsewhere",
        key="lease_s", stored=True, wire=True,
        flags=(Flag("--lease", "Seconds of silence after which a worker is lost and its task runs elsewhere "
                    "(default 30).", least=0.1),))
    no_workers_timeout_s: float = setting(
        60.0, Seconds(), "a job whose own workers are all gone, and none may be started, fails after this long",
        key="no_workers_timeout_s", stored=True)
    sync: bool = setting(
        True, Boolean(), "the state store fsyncs every commit (durable against power loss)",
        key="state_sync", stored=True)
    home: Path = setting(
        MISSING, PathTo(), "$OCTO_HOME, where jobs live (a config file's home wins over the environment)",
        key="home")
    tls: bool = setting(
        False, Boolean(), "encrypt worker connections (the HMAC handshake authenticates either way)",
        key="tls.enabled", stored=True)
    tls_cert: str | None = setting(
        None, PathTo("file"), "coordinator: its certificate (PEM, chain first); absolute path",
        key="tls.cert", stored=True)
    tls_key: str | None = setting(
        None, PathTo("file"), "coordinator: the certificate's private key (PEM, unencrypted)",
        key="tls.key", stored=True)
    tls_ca: str | None = setting(
        None, PathTo("file"), "workers verify the coordinator against it; None = tls_cert (self-signed)",
        key="tls.ca", stored=True)
    progress: str = setting(
        "auto", Choice(_PROGRESS), "progress on stderr",
        key="progress",
        flags=(Flag("--progress", "Progress on stderr (default: auto, a bar on a terminal)."),
               Flag("--progress", "Progress on stderr.", ("resume",))))
    block_bytes: int = setting(
        128 * 1024, Size(), "uncompressed size of a shuffle block",
        stored=True, wire=True)
    map_size_bytes: int = setting(
        INITIAL_MAP_SIZE_BYTES, Size(), "first LMDB map size of each store",
        stored=True)
    max_frame_bytes: int = setting(
        MAX_FRAME_BYTES, Size(), "largest frame a peer may announce",
        stored=True)
    heartbeat_every_s: float = setting(
        0.0, Seconds(zero_ok=True), "seconds between a worker's heartbeats; 0 = lease_s / 4",
        stored=True, wire=True)
    backup_tasks: bool = setting(
        True, Boolean(), "near a phase's end, idle workers run backup attempts of stragglers",
        stored=True,
        flags=(Flag("--backup-tasks/--no-backup-tasks",
                    "Near the end of a phase, run second attempts of stragglers (default: on)."),))
    ssh_hosts: tuple[str, ...] = setting(
        (), Lines(), 'hosts-file lines to start workers on ("user@host:port slots=N python=P"), from a config '
        "file's ssh section", stored=True)
    ssh_known_hosts: str | None = setting(
        None, Text(), "known_hosts file; None = ~/.ssh/known_hosts",
        stored=True,
        flags=(Flag("--known-hosts", "known_hosts file (default: ~/.ssh/known_hosts)."),))
    ssh_config_file: str | None = setting(
        None, Text(), "OpenSSH client config; None = ~/.ssh/config",
        stored=True,
        flags=(Flag("--ssh-config", "OpenSSH client config (default: ~/.ssh/config)."),))
    progress_every_s: float = setting(
        5.0, Seconds(), "seconds between plain progress lines, when stderr is not a terminal")

    def __post_init__(self) -> None:
        for row in SETTINGS:
            object.__setattr__(self, row.name, row.check(getattr(self, row.name)))  # frozen: only here
        values = {row.name: getattr(self, row.name) for row in SETTINGS}
        for rule in RULES:
            rule.check(values)


SETTINGS: tuple[Setting, ...] = tuple(replace(f.metadata["setting"], name=f.name, default=f.default)
                                      for f in fields(Settings))
"""The table's rows, in field order."""

BY_NAME = {row.name: row for row in SETTINGS}


# -- rules across settings -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """While setting `when` is `value`, each setting of `needs` must be set; once a job starts, as a
    path that exists (``check_paths_exist``).  Config and the config file word it each their way:
    the file can point at the line of `when`."""

    when: str
    value: object
    needs: dict[str, str]  # setting -> how a missing path is named ("TLS key")
    problem: str  # Config's words for a need that is not set
    hint: str
    file_problem: str  # the config file's words; {key} is the missing key
    file_hint: str
    missing_hint: str  # a needed path that does not exist
    also_checked: tuple[str, ...] = ()  # optional paths the config file checks too, while the rule applies

    def applies(self, values: Mapping[str, object]) -> bool:
        return values.get(self.when) == self.value

    def missing(self, values: Mapping[str, object]) -> str | None:
        """The first setting the rule needs that is not set, if the rule applies."""
        if not self.applies(values):
            return None
        return next((name for name in self.needs if not values.get(name)), None)

    def check(self, values: Mapping[str, object]) -> None:
        if self.missing(values) is not None:
            raise ConfigError(self.problem, self.hint)


_SHARED_ROOT_HINT = "set shuffle.shared_root to a folder every host mounts at the same path, or use mode: payload"
_TLS_EXAMPLE = "tls: {enabled: true, cert: node.pem, key: node.key}"

RULES = (
    Rule("shuffle_mode", "paths", {"shared_root": "shared_root"},
         "shuffle mode 'paths' needs a shared_root", _SHARED_ROOT_HINT,
         "mode 'paths' needs {key}", _SHARED_ROOT_HINT,
         "create it (on the shared filesystem every host mounts), or fix the path"),
    Rule("tls", True, {"tls_cert": "TLS certificate", "tls_key": "TLS key"},
         "TLS is on but the certificate or key is not set", f"set both in the config file: {_TLS_EXAMPLE}",
         "TLS is on but {key} is not set", f"name the PEM files, e.g. {_TLS_EXAMPLE}",
         "check tls.cert and tls.key; a resumed job reads them from the same paths", also_checked=("tls_ca",)),
)
"""Rules across settings, checked by Settings (Config) and, with lines, by the config file."""


def check_paths_exist(settings: Settings) -> None:
    """Raise ConfigError unless every path a rule needs exists (shared_root in paths mode, the TLS
    files with TLS on).  Call before a job starts or resumes: building a Settings never looks."""
    for rule in RULES:
        if not rule.applies({rule.when: getattr(settings, rule.when)}):
            continue
        for name, noun in rule.needs.items():
            path, kind = getattr(settings, name), BY_NAME[name].kind
            assert isinstance(kind, PathTo) and kind.exists in ("file", "folder"), name  # our table's bug
            if not (os.path.isdir(path) if kind.exists == "folder" else os.path.isfile(path)):
                raise ConfigError(f"{noun} {path}: no such {kind.exists}", rule.missing_hint)


# -- what workers receive --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The settings a worker runs its tasks with, sent in its Welcome.  Built by
    ``config.worker_settings``; every field comes from a setting marked ``wire``."""

    partitions: int  # the job's resolved reduce partitions
    block_bytes: int
    zstd_level: int
    map_buffer_bytes: int  # from the memory plan
    values_memory_bytes: int  # from the memory plan
    merge_fan_in: int  # from the memory plan
    max_attempts: int
    heartbeat_every_s: float  # resolved: never 0
    shared_dir: str | None  # paths mode: this job's folder under shared_root

    def to_wire(self) -> dict[str, object]:
        """The msgpack-ready dict of a Welcome's settings."""
        return {name: getattr(self, name) for name in _WIRE_TYPES}

    @classmethod
    def from_wire(cls, wire: Mapping[str, object]) -> WorkerSettings:
        """Read a Welcome's settings; ValueError naming every missing or unknown key, or a mistyped one."""
        missing = [name for name in _WIRE_TYPES if name not in wire]
        unknown = sorted(str(key) for key in wire if key not in _WIRE_TYPES)
        if missing or unknown:
            said = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"]
                                                                             if unknown else [])
            raise ValueError(f"worker settings: {'; '.join(said)}")
        for name, expected in _WIRE_TYPES.items():
            value = wire[name]
            fits = isinstance(value, (int, float)) if expected is float else isinstance(value, expected)
            if isinstance(value, bool) or not fits:
                raise ValueError(f"worker settings: {name} is {describe(value)}, not {expected}")
        return cls(**{name: float(v) if _WIRE_TYPES[name] is float else v  # type: ignore[arg-type]
                      for name, v in wire.items()})


_WIRE_TYPES: dict[str, Any] = typing.get_type_hints(WorkerSettings)
"""Each wire key and its type, in field order."""

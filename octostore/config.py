"""One frozen ``Config``: every knob the engine reads, with its unit and why.

Nothing below ``cli`` reads the environment or a global config: the CLI builds
a ``Config`` from flags (and, later, a YAML file) and passes it down.  A field
that is ``None`` means "derive it from the job or the machine", and the
derivation lives in one named function here so that submit and resume agree.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

DEFAULT_PORT = 11235
"""TCP port of ``octo server`` when none is given (mincemeat's, so old habits work)."""

DEFAULT_PARTITIONS = 8
"""Reduce partitions when neither the job nor the user says: 4 per core on 2 cores keeps both busy."""

MAP_TASKS_PER_WORKER = 4
"""Map tasks per local worker when the user does not say.  Each task costs a spill
and a run in every partition's merge, so fewer, larger tasks win until cores go
idle: on the 200 MiB word count (64 files, 2 workers) 64 tasks took 19.4 s and
16 tasks 17.2 s (before the faster shuffle); after it, 16 tasks 12.9 s and 8
tasks 11.9 s (benchmarks/wordcount.py).  4 per worker keeps the last wave short."""

MIN_MAP_TASKS = 8
"""Map tasks at least (when there are enough source keys), e.g. for `octo server`,
which cannot know how many clients will come."""

MEMORY_BUDGET_BYTES = 512 * 1024 * 1024
"""What each process (coordinator, every worker) plans to use at most; ``memory_plan`` splits it."""

INITIAL_MAP_SIZE_BYTES = 64 * 1024 * 1024
"""First LMDB map size of each store; it doubles whenever a write finds it full."""

MAX_FRAME_BYTES = 256 * 1024 * 1024
"""Largest frame a peer may announce; checked before a byte of the body is allocated."""


MIN_MEMORY_BUDGET_BYTES = 96 * 1024 * 1024
"""An idle worker is ~45 MiB (Python, octostore, the job's imports); below this nothing useful fits."""


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Where a process's memory goes, each part a share of the budget (docs/performance.md).

    The shares leave room for what the budget cannot shrink: the interpreter and the job's
    imports (~45 MiB), Python's overhead over the map buffer's estimate (up to ~2x while a
    spill sorts it) and the largest single source value, which must arrive whole."""

    map_buffer_bytes: int  # the map side's grouping buffer (estimated) before it spills a run
    values_memory_bytes: int  # one key's serialized values a reducer holds before they go to disk
    merge_fan_in: int  # runs a reducer merges at once (each holds a decoded block, ~1-2 MB)
    input_batch_bytes: int  # source values per Input message


def memory_plan(budget_bytes: int) -> MemoryPlan:
    """Split a per-process budget: 1/8 map buffer, 1/16 one key's values, a merge of budget/8 MiB
    runs (4..64) and inputs in batches of budget/64 (256 KiB..4 MiB).  512 MiB, the default,
    gives 64 MiB, 32 MiB, 64 runs and 4 MiB."""
    mib = 1024 * 1024
    return MemoryPlan(map_buffer_bytes=budget_bytes // 8, values_memory_bytes=budget_bytes // 16,
                      merge_fan_in=min(64, max(4, budget_bytes // (8 * mib))),
                      input_batch_bytes=min(4 * mib, max(mib // 4, budget_bytes // 64)))


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a coordinator or worker needs to know, resolved once."""

    home: Path
    workers: int | None = None  # local worker processes; None = one per core
    partitions: int | None = None  # None = the job's `partitions`, else DEFAULT_PARTITIONS
    map_tasks: int | None = None  # None = resolved_map_tasks()
    bind: str = "127.0.0.1"
    port: int = 0  # 0 = any free port (local submit)
    memory_budget_bytes: int = MEMORY_BUDGET_BYTES  # per process; see memory_plan()
    map_buffer_bytes: int | None = None  # None = memory_plan()'s share of the budget
    block_bytes: int = 128 * 1024
    zstd_level: int = 1
    compress_inputs: str = "auto"  # zstd map inputs: auto = except to workers over loopback | always | never
    map_size_bytes: int = INITIAL_MAP_SIZE_BYTES
    max_frame_bytes: int = MAX_FRAME_BYTES
    max_attempts: int = 4
    sync: bool = True  # state store fsyncs every commit (durable against power loss)
    lease_s: float = 30.0  # a worker silent this long is lost; its tasks run elsewhere
    heartbeat_every_s: float = 0.0  # 0 = lease_s / 4
    backup_tasks: bool = True  # near a phase's end, idle workers run backup attempts of stragglers
    ssh_hosts: tuple[str, ...] = ()  # hosts-file lines ("user@host:port slots=N python=P") to start workers on
    accept_new_host_keys: bool = False  # add unknown (never changed) SSH host keys to known_hosts
    ssh_known_hosts: str | None = None  # None = ~/.ssh/known_hosts
    ssh_config_file: str | None = None  # None = ~/.ssh/config
    shuffle_mode: str = "payload"  # payload: data travels through the coordinator; paths: through shared_root
    shared_root: str | None = None  # paths mode: a folder every worker host mounts at the same path
    tls: bool = False  # encrypt worker connections (authentication is the HMAC handshake either way)
    tls_cert: str | None = None  # coordinator: its certificate (PEM, chain first); absolute path
    tls_key: str | None = None  # coordinator: the certificate's private key (PEM, unencrypted)
    tls_ca: str | None = None  # workers verify the coordinator against it; None = tls_cert (self-signed)
    progress: str = "auto"  # auto | bar | lines | off
    progress_every_s: float = 5.0  # plain progress lines, when stderr is not a terminal

    def __post_init__(self) -> None:
        _check_positive("workers", self.workers, allow_zero=True)
        _check_positive("partitions", self.partitions)
        _check_positive("map_tasks", self.map_tasks)
        _check_positive("map_buffer_bytes", self.map_buffer_bytes)
        if self.memory_budget_bytes < MIN_MEMORY_BUDGET_BYTES:
            raise ConfigError(f"memory_budget {self.memory_budget_bytes} bytes is below the "
                              f"{MIN_MEMORY_BUDGET_BYTES >> 20} MiB a worker's interpreter, imports and buffers need")
        _check_positive("block_bytes", self.block_bytes)
        _check_positive("max_attempts", self.max_attempts)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range", "use 0..65535 (0 picks a free port)")
        _check_shuffle(self.shuffle_mode, self.shared_root)
        _check_tls(self.tls, self.tls_cert, self.tls_key)
        if not self.lease_s > 0:
            raise ConfigError(f"lease {self.lease_s!r} must be a positive number of seconds")
        if self.progress not in ("auto", "bar", "lines", "off"):
            raise ConfigError(f"progress {self.progress!r} is not one of auto, bar, lines, off")
        if self.compress_inputs not in ("auto", "always", "never"):
            raise ConfigError(f"compress_inputs {self.compress_inputs!r} is not one of auto, always, never")

    def replace(self, **changes: object) -> Config:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def stored(self) -> dict[str, object]:
        """The fields a resumed job must run with again (stored in its state store)."""
        return {name: getattr(self, name) for name in _STORED}

    @classmethod
    def from_stored(cls, home: Path, stored: dict[str, object], **overrides: object) -> Config:
        """The config a job was submitted with, with `overrides` (not None) applied."""
        values = {name: stored[name] for name in _STORED if name in stored}
        if "ssh_hosts" in values:
            values["ssh_hosts"] = tuple(values["ssh_hosts"])  # type: ignore[arg-type]  # msgpack gives a list
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(home=home, **values)  # type: ignore[arg-type]

    def memory_plan(self) -> MemoryPlan:
        """How each process spends `memory_budget_bytes` (an explicit map_buffer_bytes wins)."""
        plan = memory_plan(self.memory_budget_bytes)
        if self.map_buffer_bytes is not None:
            plan = dataclasses.replace(plan, map_buffer_bytes=self.map_buffer_bytes)
        return plan

    def resolved_workers(self) -> int:
        """Local worker processes to start: the option, else one per core."""
        return self.workers if self.workers is not None else (os.cpu_count() or 1)

    def resolved_map_tasks(self, source_keys: int) -> int:
        """Map tasks: the option, else MAP_TASKS_PER_WORKER per local worker; never more than keys."""
        planned = self.map_tasks or max(MIN_MAP_TASKS, MAP_TASKS_PER_WORKER * self.resolved_workers())
        return min(source_keys, planned)

    def resolved_heartbeat_s(self) -> float:
        """Seconds between a worker's heartbeats: several per lease, so one late beat is no loss."""
        return self.heartbeat_every_s or self.lease_s / 4

    def resolved_tls_ca(self) -> str | None:
        """The CA file the coordinator's own workers verify it with: tls_ca, else the (self-signed) tls_cert."""
        return (self.tls_ca or self.tls_cert) if self.tls else None

    def resolved_partitions(self, job_partitions: int | None) -> int:
        """Reduce partitions: the option wins over the job's `partitions`, then the default."""
        return self.partitions or job_partitions or DEFAULT_PARTITIONS


_STORED = ("workers", "bind", "port", "memory_budget_bytes", "map_buffer_bytes", "block_bytes", "zstd_level",
           "map_size_bytes", "max_frame_bytes", "max_attempts", "sync", "compress_inputs", "lease_s",
           "heartbeat_every_s", "backup_tasks", "ssh_hosts", "accept_new_host_keys", "ssh_known_hosts",
           "ssh_config_file", "shuffle_mode", "shared_root", "tls", "tls_cert", "tls_key", "tls_ca")


def _check_shuffle(mode: str, shared_root: str | None) -> None:
    """Mode 'paths' needs an existing shared_root folder; 'payload' needs nothing."""
    if mode not in ("payload", "paths"):
        raise ConfigError(f"shuffle mode {mode!r} is not one of payload, paths",
                          "use mode: payload (through the coordinator) or mode: paths (a shared filesystem)")
    if mode != "paths":
        return
    if not shared_root:
        raise ConfigError("shuffle mode 'paths' needs a shared_root",
                          "set shuffle.shared_root to a folder every host mounts at the same path, or use mode: payload")
    if not os.path.isdir(shared_root):
        raise ConfigError(f"shared_root {shared_root}: no such folder",
                          "create it (on the shared filesystem every host mounts), or fix the path")


def _check_tls(tls: bool, cert: str | None, key: str | None) -> None:
    """TLS on needs the coordinator's certificate and key, as files that exist."""
    if not tls:
        return
    if not cert or not key:
        raise ConfigError("TLS is on but the certificate or key is not set",
                          "set both in the config file: tls: {enabled: true, cert: node.pem, key: node.key}")
    for kind, path in (("certificate", cert), ("key", key)):
        if not os.path.isfile(path):
            raise ConfigError(f"TLS {kind} {path}: no such file",
                              "check tls.cert and tls.key; a resumed job reads them from the same paths")


def _check_positive(name: str, value: int | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        least = 0 if allow_zero else 1
        raise ConfigError(f"{name} must be an integer >= {least}, not {value!r}")


def read_user_file(path: Path, kind: str, not_found_hint: str) -> str:
    """The UTF-8 text of a file the user named (a config file, a hosts file), or a
    ConfigError naming the path and saying what is wrong with it."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {kind} not found", not_found_hint) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {kind}", f"name the {kind} itself") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: {kind} is not UTF-8 text ({e.reason} at byte {e.start})",
                          "save it as plain UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {kind}: {e.strerror}") from None


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Parse HOST, HOST:PORT or [IPv6]:PORT into (host, port)."""
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ConfigError(f"address {text!r} has no host", "write HOST or HOST:PORT, e.g. localhost:11235")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"port {port_text!r} in address {text!r} is not a number in 1..65535",
                          "write HOST or HOST:PORT, e.g. localhost:11235")
    return host, int(port_text)

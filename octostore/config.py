"""``Config``: the settings table (settings.py) plus what follows from it, with units and why.

Nothing below ``cli`` reads the environment or a global config: the CLI builds
a ``Config`` from flags and a config file and passes it down.  A setting that
is ``None`` means "derive it from the job or the machine", and the derivation
lives in one named method here so that submit and resume agree.  Each setting
itself (type, default, check, file key, flag, stored or not) is declared once,
in ``settings.Settings``; add one there.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .settings import (
    DEFAULT_PORT,
    INITIAL_MAP_SIZE_BYTES,
    MAX_FRAME_BYTES,
    MEMORY_BUDGET_BYTES,
    MIN_MEMORY_BUDGET_BYTES,
    SETTINGS,
    Settings,
    WorkerSettings,
)

__all__ = ["DEFAULT_PORT", "INITIAL_MAP_SIZE_BYTES", "MAX_FRAME_BYTES", "MEMORY_BUDGET_BYTES",
           "MIN_MEMORY_BUDGET_BYTES", "DEFAULT_PARTITIONS", "MAP_TASKS_PER_WORKER", "MIN_MAP_TASKS", "MemoryPlan",
           "memory_plan", "Config", "worker_settings", "read_user_file", "parse_address"]

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


class Config(Settings):
    """Everything a coordinator or worker needs to know, resolved once: the checked settings
    (one field each, declared in ``settings.Settings``) and what is derived from them.

    Frozen, and building one touches no filesystem: ``settings.check_paths_exist`` looks for
    the files and folders a job needs before it starts."""

    __slots__ = ()

    def replace(self, **changes: object) -> Config:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def stored(self) -> dict[str, object]:
        """The fields a resumed job must run with again (stored in its state store)."""
        return {row.name: getattr(self, row.name) for row in SETTINGS if row.stored}

    @classmethod
    def from_stored(cls, home: Path, stored: dict[str, object], **overrides: object) -> Config:
        """The config a job was submitted with, with `overrides` (not None) applied."""
        values = {row.name: stored[row.name] for row in SETTINGS if row.stored and row.name in stored}
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


def worker_settings(config: Config, partitions: int, shared_dir: Path | None) -> WorkerSettings:
    """What the coordinator sends every worker: the job's resolved `partitions`, its shuffle folder
    under shared_root (paths mode) and the worker's share of the memory plan."""
    plan = config.memory_plan()
    return WorkerSettings(partitions=partitions, block_bytes=config.block_bytes, zstd_level=config.zstd_level,
                          map_buffer_bytes=plan.map_buffer_bytes, values_memory_bytes=plan.values_memory_bytes,
                          merge_fan_in=plan.merge_fan_in, max_attempts=config.max_attempts,
                          heartbeat_every_s=config.resolved_heartbeat_s(),
                          shared_dir=str(shared_dir) if shared_dir is not None else None)


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

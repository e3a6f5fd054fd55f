"""Progress of a running job on stderr: a live bar on a terminal, plain lines otherwise.

Per phase: tasks done / total, input records, bytes moved, rate and ETA.  The
bar is rich's (a well-kept library that handles terminal width, redraws and
non-TTY fallbacks better than anything we would hand-draw); when stderr is
not a terminal (CI, a log file, ``2> log``) we print one plain line every
``every_s`` seconds and at the end of each phase, so logs stay readable.

stdout is never touched: it belongs to the job's ``final``.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Protocol


class Progress(Protocol):
    def start_phase(self, name: str, total: int) -> None: ...
    def advance(self, tasks: int = 1, records: int = 0, bytes_moved: int = 0) -> None: ...
    def set_workers(self, by_host: dict[str, int]) -> None: ...
    def close(self) -> None: ...


def workers_text(by_host: dict[str, int]) -> str:
    """Connected workers by host, e.g. "3 workers: node1 x2, node2 x1"."""
    total = sum(by_host.values())
    hosts = ", ".join(f"{host} x{count}" for host, count in sorted(by_host.items()))
    return f"{total} worker{'' if total == 1 else 's'}" + (f": {hosts}" if hosts else "")


def make_progress(mode: str, every_s: float, stream: IO[str] | None = None) -> Progress:
    """Return the reporter for `mode` (auto | bar | lines | off)."""
    stream = stream or sys.stderr
    if mode == "off":
        return NullProgress()
    if mode == "bar" or (mode == "auto" and stream.isatty()):
        return BarProgress(stream)
    return LineProgress(stream, every_s)


class NullProgress:
    def start_phase(self, name: str, total: int) -> None:
        pass

    def advance(self, tasks: int = 1, records: int = 0, bytes_moved: int = 0) -> None:
        pass

    def set_workers(self, by_host: dict[str, int]) -> None:
        pass

    def close(self) -> None:
        pass


class _Counts:
    def __init__(self, name: str, total: int) -> None:
        self.name, self.total = name, total
        self.tasks = self.records = self.bytes = 0
        self.started = time.monotonic()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.bytes / elapsed
        eta = ""
        if 0 < self.tasks < self.total:
            eta = f", ETA {_duration(elapsed * (self.total - self.tasks) / self.tasks)}"
        return (f"{self.name}: {self.tasks}/{self.total} tasks, {_count(self.records)} records, "
                f"{_bytes(self.bytes)}, {_bytes(rate)}/s{eta}")


class LineProgress:
    """One plain line per `every_s` seconds and per finished phase."""

    def __init__(self, stream: IO[str], every_s: float) -> None:
        self.stream, self.every_s = stream, every_s
        self._counts: _Counts | None = None
        self._last = 0.0
        self._workers = ""

    def start_phase(self, name: str, total: int) -> None:
        self._counts = _Counts(name, total)
        self._last = time.monotonic()

    def advance(self, tasks: int = 1, records: int = 0, bytes_moved: int = 0) -> None:
        c = self._counts
        if c is None:
            return
        c.tasks, c.records, c.bytes = c.tasks + tasks, c.records + records, c.bytes + bytes_moved
        now = time.monotonic()
        if c.tasks >= c.total or now - self._last >= self.every_s:
            self._last = now
            workers = f"; {self._workers}" if self._workers else ""
            print(f"octo: {c.line()}{workers}", file=self.stream, flush=True)

    def set_workers(self, by_host: dict[str, int]) -> None:
        self._workers = workers_text(by_host)

    def close(self) -> None:
        self._counts = None


class BarProgress:
    """rich's live progress bar, one row per phase."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(file=stream), transient=False,
            redirect_stdout=False,  # stdout is the job's: never capture it
            redirect_stderr=True,  # our log lines print above the bar instead of through it
        )
        self._progress.start()
        self._task: int | None = None
        self._counts: _Counts | None = None
        self._workers = ""

    def start_phase(self, name: str, total: int) -> None:
        self._counts = _Counts(name, total)
        self._task = self._progress.add_task(name, total=total, detail=self._workers)

    def advance(self, tasks: int = 1, records: int = 0, bytes_moved: int = 0) -> None:
        c = self._counts
        if c is None or self._task is None:
            return
        c.tasks, c.records, c.bytes = c.tasks + tasks, c.records + records, c.bytes + bytes_moved
        elapsed = max(time.monotonic() - c.started, 1e-6)
        detail = f"{_count(c.records)} rec  {_bytes(c.bytes)}  {_bytes(c.bytes / elapsed)}/s  {self._workers}"
        self._progress.update(self._task, advance=tasks, detail=detail)

    def set_workers(self, by_host: dict[str, int]) -> None:
        self._workers = workers_text(by_host)
        self.advance(0)

    def close(self) -> None:
        self._progress.stop()


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

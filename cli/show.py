"""The text of ``octo jobs`` and ``octo status``, from the data octostore.jobinfo returns.

Printing belongs to the CLI: ``jobinfo.list_jobs`` and ``jobinfo.job_status``
return dataclasses (``JobSummary``, ``JobStatus``), and only this module knows
how they look on a terminal, so the engine never holds a column width or a
date format.  Every function here is pure: data in, text out (no trailing
newline); the command prints it.

Times are local (``time.localtime``), durations rounded to what a person
reads at a glance (12.3s, 4m05s, 1h02m), byte counts in binary units.

Layer: ``cli`` (5).  Imports ``octostore.jobinfo`` for the dataclasses and
``octostore.stores.state`` for the task states it names; the ``jobs`` and
``status`` commands of ``cli/main.py`` print what it returns.
"""

from __future__ import annotations

import textwrap
import time

from octostore.jobinfo import DAMAGED, JobStatus, JobSummary
from octostore.stores.state import TaskState

# -- units -----------------------------------------------------------------------------------


def format_time(epoch_s: float) -> str:
    """Render epoch seconds as local time, YYYY-mm-dd HH:MM:SS."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


def format_duration(seconds: float | None) -> str:
    """Render seconds as 12.3s, 4m05s or 1h02m; "-" for None."""
    if seconds is None:
        return "-"
    if seconds < 59.95:  # would round to "60.0s"
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole // 60 % 60:02d}m"


def format_bytes(n: int) -> str:
    """Render a byte count as 512 B, 1.5 KiB, 3.2 MiB or 1.1 GiB."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# -- one job's lines ---------------------------------------------------------------------------


def _tasks_line(kind: str, done: int, total: int, by_state: dict[str, int]) -> str:
    others = [f"{count} {state}" for state, count in by_state.items() if count and state != TaskState.DONE.value]
    return f"{kind} tasks: {done}/{total} done" + (f" ({', '.join(others)})" if others else "")


def _coordinator_lines(status: JobStatus) -> list[str]:
    live = status.live
    moved = ([f"bytes moved: {format_bytes(status.moved[0])} in, {format_bytes(status.moved[1])} out"]
             if status.moved else [])
    if live is None:
        return ["coordinator: not running", *moved]
    seen = f"pid {live['pid']} on {live['host']}, updated {format_time(live['updated_at'])}"
    if not status.is_running:
        return [f"coordinator: not running (last status: {seen})", *moved]
    workers = live["workers"]
    return [
        f"coordinator: {seen}",
        f"workers: {len(workers)}",
        *(f"  {w['name']}: {w.get('task') or 'idle'}" for w in workers),
        f"bytes moved: {format_bytes(live['bytes_in'])} in, {format_bytes(live['bytes_out'])} out",
        *(f"may be stuck (10x its phase's median, see the coordinator's log): {task}"
          for task in live.get("stuck", [])),
    ]


# -- entry points ------------------------------------------------------------------------------


def format_jobs(jobs: list[JobSummary]) -> str:
    """Render summaries as an aligned table under a header; "" for no jobs (the caller says so)."""
    if not jobs:
        return ""
    rows = [("ID", "STATE", "STARTED", "DURATION", "MAP", "REDUCE")]
    for job in jobs:
        damaged = job.state == DAMAGED
        rows.append((job.job_id, job.state, format_time(job.started_at), format_duration(job.duration_s),
                     "-" if damaged else f"{job.map_done}/{job.map_total}",
                     "-" if damaged else f"{job.reduce_done}/{job.reduce_total}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def format_status(status: JobStatus) -> str:
    """Render a job's report as lines of text (no trailing newline); user tracebacks are indented."""
    s = status.summary
    lines = [
        f"job {s.job_id}: {s.state} (phase {status.phase}), epoch {status.epoch}, {status.partitions} partitions",
        f"started {format_time(s.started_at)}, duration {format_duration(s.duration_s)}",
        _tasks_line("map", s.map_done, s.map_total, status.tasks_by_state["map"]),
        _tasks_line("reduce", s.reduce_done, s.reduce_total, status.tasks_by_state["reduce"]),
        f"failed attempts: {status.attempts}",
        *_coordinator_lines(status),
    ]
    if status.error is not None:
        first, _, rest = status.error.partition("\n")
        lines.append(f"error: {first}")
        if rest:
            lines.append(textwrap.indent(rest.rstrip("\n"), "  "))
    if status.failures:
        lines.append("failures:")
        for kind, task, failures, last_error in status.failures:
            lines.append(f"  {kind} task {task}: {failures} failed attempt{'' if failures == 1 else 's'}")
            lines.append(textwrap.indent(last_error.rstrip("\n") or "(no error text recorded)", "    "))
    return "\n".join(lines)

"""The reference: run a job in-process with a plain dict and sorted(), no octostore involved.

Every end-to-end test compares octostore's output with this, exactly.  It
imports only the job file and the standard library, so a bug in the engine
cannot leak into the expected answer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"oracle_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def run(path: Path) -> list[tuple[Any, Any]]:
    """Return [(key, final value)] in key order, exactly as the job's contract defines them."""
    job = load(path)
    groups: dict[Any, list[Any]] = {}
    for source_key in job.source:
        for k, v in job.mapfn(source_key, job.source[source_key]):
            groups.setdefault(k, []).append(v)
    combinefn = getattr(job, "combinefn", None)
    results = []
    for key in sorted(groups, key=_order):
        values = groups[key]
        if combinefn is not None:
            values = [combinefn(key, values)]
        returned = job.reducefn(key, values)
        if type(returned) is tuple and len(returned) == 2 and returned[0] == key:
            returned = returned[1]
        results.append((key, returned))
    return results


def final_output(path: Path) -> str:
    """What the job's final() prints for the oracle's results, in key order."""
    job = load(path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for key, value in run(path):
            job.final(key, value)
    return out.getvalue()


_TYPE_ORDER = {type(None): 0, bool: 1, int: 1, float: 1, str: 2, bytes: 3, tuple: 4}


def _order(key: Any) -> Any:
    """Python's order within a type; across types None < numbers < str < bytes < tuple (documented)."""
    if isinstance(key, tuple):
        return (4, tuple(_order(k) for k in key))
    return (_TYPE_ORDER[type(key)], key if key is not None else 0)

"""The job contract: load a job file once, check its names, ship its functions, the final() rule.

A job is a Python file with module-level ``source``, ``mapfn`` and
``reducefn``, and optionally ``final``, ``combinefn``, ``partitions`` and
``partitionfn`` (docs/user-guide.md).  The file runs **once, on the
coordinator**: ``source`` is built there and never on a worker (octo.py
re-imported the script on every client, re-reading the whole data set).
Workers get ``mapfn``, ``reducefn``, ``combinefn`` and ``partitionfn`` by
value through cloudpickle, with the job module (and any module imported from
the job's own folder) registered for pickling by value, so the helpers and
imports those functions use still work on a worker that has only octostore.

The final() rule: if reducefn returns a 2-tuple whose first item equals the
key, the result is the second item (the guide's ``return key, len(values)``
gives ``final("the", 5)``); anything else is the result as is.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import io
import linecache
import marshal
import re
import sys
import traceback
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import cloudpickle

from .errors import JobError, UserCodeError

REQUIRED = ("source", "mapfn", "reducefn")
_OCTOSTORE_DIR = str(Path(__file__).resolve().parent)


@dataclass(frozen=True, slots=True)
class WorkerFunctions:
    """What a worker needs of the job: its functions, never its data."""

    job_name: str
    job_file: str  # absolute path on the coordinator, for tracebacks
    job_source: str  # the job file's text, so tracebacks show the user's lines on any host
    mapfn: Callable[[Any, Any], Any]
    reducefn: Callable[[Any, Any], Any]
    combinefn: Callable[[Any, Any], Any] | None
    partitionfn: Callable[[Any, int], int] | None


@dataclass(frozen=True, slots=True)
class Job:
    """A loaded job file (coordinator side)."""

    path: Path
    text: str
    module: ModuleType
    source: Any
    functions: WorkerFunctions
    final: Callable[[Any, Any], Any] | None
    partitions: int | None

    @property
    def name(self) -> str:
        return self.path.name


def load_job(path: Path, text: str | None = None) -> Job:
    """Run the job file once and check the contract; raise JobError naming what is wrong.

    `text` replaces the file's contents (resume runs the copy stored at submit,
    so a later edit of the file cannot change a running job's code)."""
    module = _exec_job_file(path, text)
    names = vars(module)
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise JobError(
            f"{path}: {_quote(missing)} {'is' if len(missing) == 1 else 'are'} not defined "
            f"(required: source, mapfn, reducefn)",
            _DEFINE_HINTS[missing[0]],
        )
    for name in ("mapfn", "reducefn", "final", "combinefn", "partitionfn"):
        if names.get(name) is not None and not callable(names[name]):
            raise JobError(f"{path}: {name} is {_a(type(names[name]).__name__)}, not a function",
                           _DEFINE_HINTS.get(name))
    check_source(path, names["source"])
    partitions = names.get("partitions")
    if partitions is not None and (not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1):
        raise JobError(f"{path}: partitions must be a positive integer, not {partitions!r}")
    _register_by_value(module, path.parent)
    functions = WorkerFunctions(
        path.name, str(path.resolve()), module.__octo_source__,
        names["mapfn"], names["reducefn"], names.get("combinefn"), names.get("partitionfn"),
    )
    return Job(path, module.__octo_source__, module, names["source"], functions, names.get("final"), partitions)


_DEFINE_HINTS = {
    "source": "define it at module level: source = {key: value, ...} (or an object with __iter__ and __getitem__)",
    "mapfn": "define it at module level: def mapfn(key, value): yield k, v",
    "reducefn": "define it at module level: def reducefn(key, values): return key, result",
    "final": "define it at module level: def final(key, value): print(key, value)",
    "combinefn": "define it at module level: def combinefn(key, values): return one_value",
    "partitionfn": "define it at module level: def partitionfn(key, n): return an int in range(n)",
}


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _quote(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _read_job_file(path: Path) -> str:
    """The job file's text, or a JobError that says what the path is instead (never a traceback)."""
    hint = "octo submit takes the path of a .py file"
    if not path.exists():
        raise JobError(f"{path}: no such job file", hint)
    if path.is_dir():
        raise JobError(f"{path}: is a folder, not a job file", hint)
    if not path.is_file():  # a FIFO would block the read, a device would never end
        raise JobError(f"{path}: is not a regular file", hint)
    try:
        return path.read_text(errors="replace")
    except OSError as e:
        raise JobError(f"{path}: cannot read the job file: {e.strerror or e}") from None


def _exec_job_file(path: Path, text: str | None) -> ModuleType:
    if text is None:
        text = _read_job_file(path)
    try:
        code = compile(text, str(path.resolve()), "exec")  # tracebacks name it absolutely
    except SyntaxError as e:
        raise JobError(f"{path}:{e.lineno}: {e.msg}", (e.text or "").strip() or None) from None
    module_name = "octo_job_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_loader(module_name, loader=None, origin=str(path))
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path.resolve())
    module.__octo_source__ = text  # type: ignore[attr-defined]  # stored with the job, shipped for tracebacks
    linecache.cache[module.__file__] = (len(text), None, text.splitlines(keepends=True), module.__file__)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent.resolve()))  # as `python job.py` would: helpers beside it import
    try:
        exec(code, vars(module))
    except Exception as e:  # user code: show their traceback, not ours
        raise UserCodeError(f"{path}: the job file raised {type(e).__name__}: {e}", format_user_traceback(e),
                            started=False) from None
    return module


def _register_by_value(module: ModuleType, job_dir: Path) -> None:
    """Ship the job module, and modules imported from the job's folder, by value."""
    cloudpickle.register_pickle_by_value(module)
    root = str(job_dir.resolve())
    for mod in list(sys.modules.values()):
        file = getattr(mod, "__file__", None) or ""
        if mod is not module and file.startswith(root + "/") and not file.startswith(_OCTOSTORE_DIR):
            if "site-packages" not in file:
                cloudpickle.register_pickle_by_value(mod)


def check_source(path: Path, source: Any) -> None:
    """Refuse a source that is not dict-like (needs __iter__ over keys and __getitem__)."""
    if isinstance(source, (list, tuple, str, bytes, set, frozenset)):
        raise JobError(
            f"{path}: source is a {type(source).__name__}; it must be a dict or an object with "
            f"__iter__ (keys) and __getitem__ (value for a key)",
            "did you mean source = dict(enumerate(items))?",
        )
    missing = [m for m in ("__iter__", "__getitem__") if not hasattr(source, m)]
    if missing:
        raise JobError(
            f"{path}: source ({type(source).__name__}) has no {' or '.join(missing)}; "
            "it must be a dict or an object with __iter__ (keys) and __getitem__ (value for a key)",
            _DEFINE_HINTS["source"],
        )


NO_ITEM: Any = object()  # "mapfn yielded nothing": None is an item, and a bad one


def check_pairs(path: Path, mapfn: Callable[[Any, Any], Any], key: Any, value: Any) -> None:
    """Call mapfn once on the coordinator and check that it yields (key, value) pairs.

    Only the first pair is drawn, so this is cheap; it turns the commonest
    mistakes into an error before any worker starts."""
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is final()'s alone
            result = mapfn(key, value)
            first = next(iter(result), NO_ITEM) if _is_iterable(result) else result
    except Exception as e:
        raise UserCodeError(f"{path}: mapfn raised {type(e).__name__} on key {key!r:.80}: {e}",
                            format_user_traceback(e), started=False) from None
    problem = describe_bad_pairs(result, first)
    if problem:
        raise JobError(f"{path}: mapfn({key!r}, ...) {problem}", pair_hint(result))


def _is_iterable(obj: Any) -> bool:
    return hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes, dict))


def describe_bad_pairs(result: Any, first_item: Any = NO_ITEM) -> str | None:
    """Say what is wrong with a mapfn result whose first item is `first_item`, or None."""
    if not _is_iterable(result):
        return f"returned {type(result).__name__} {_short(result)}, not an iterable of (key, value) pairs"
    if isinstance(result, tuple) and len(result) == 2 and not _is_pair(result[0]):
        return f"returned {_short(result)}, a single pair, instead of yielding (key, value) pairs"
    if first_item is NO_ITEM:
        return None
    if not _is_pair(first_item):
        return f"yielded {_short(first_item)}, which is not a (key, value) pair"
    return None


def _is_pair(item: Any) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2


def pair_hint(result: Any) -> str:
    if isinstance(result, tuple) and len(result) == 2:
        return "did you write `return k, v`? use `yield k, v`"
    return "write mapfn as a generator: for ...: yield key, value"


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, but code objects keep their file name.

    cloudpickle 3 renames every by-value code object to "<dynamic-code>" (for
    deterministic payloads), so a worker's traceback could no longer name the
    user's file.  marshal keeps every field, and both ends run the same Python
    (the worker checks versions), which marshal requires."""

    dispatch_table = collections.ChainMap({types.CodeType: lambda code: (marshal.loads, (marshal.dumps(code),))},
                                          cloudpickle.Pickler.dispatch_table)


def pack_functions(functions: WorkerFunctions) -> bytes:
    """Serialize the worker-side functions by value."""
    buffer = io.BytesIO()
    _Pickler(buffer).dump(functions)
    return buffer.getvalue()


def unpack_functions(data: bytes) -> WorkerFunctions:
    """Rebuild the worker-side functions (only ever called after the handshake)."""
    functions = cloudpickle.loads(data)
    if not isinstance(functions, WorkerFunctions):
        raise JobError("the coordinator sent something that is not a job's functions")
    # Tracebacks on this host show the job's lines even if the file is not here.
    lines = functions.job_source.splitlines(keepends=True)
    linecache.cache[functions.job_file] = (len(functions.job_source), None, lines, functions.job_file)
    return functions


def result_value(key: Any, returned: Any) -> Any:
    """Apply the final() rule to what reducefn returned for `key`."""
    if type(returned) is tuple and len(returned) == 2:
        try:
            if returned[0] is key or returned[0] == key:  # `is`: a NaN key is not == itself
                return returned[1]
        except Exception:  # user types with odd __eq__: keep the value as returned
            return returned
    return returned


TRACEBACK_KEEP_FRAMES = 50
"""A traceback deeper than twice this shows its first and last this many frames: formatting all
10 million frames of a runaway recursion took 150 s and 4 GB, and nobody reads them."""


def format_user_traceback(exc: BaseException) -> str:
    """Format `exc` keeping only the user's frames (octostore's own are trimmed); a very deep
    traceback keeps its first and last TRACEBACK_KEEP_FRAMES frames and says how many it omits."""
    depth = _depth(exc.__traceback__)
    if depth > 2 * TRACEBACK_KEEP_FRAMES:
        return _format_deep(exc, depth)
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list(_users(te.stack))
    return "".join(te.format())


def _users(frames: Iterable[traceback.FrameSummary]) -> list[traceback.FrameSummary]:
    return [f for f in frames if not f.filename.startswith(_OCTOSTORE_DIR) and "importlib" not in f.filename]


def _depth(tb: TracebackType | None) -> int:
    depth = 0
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    return depth


def _format_deep(exc: BaseException, depth: int) -> str:
    keep = TRACEBACK_KEEP_FRAMES
    tail = exc.__traceback__
    for _ in range(depth - keep):
        assert tail is not None
        tail = tail.tb_next
    first = traceback.format_list(_users(traceback.extract_tb(exc.__traceback__, limit=keep)))
    last = traceback.format_list(_users(traceback.extract_tb(tail)))
    return "".join(["Traceback (most recent call last):\n", *first,
                    f"  ... {depth - 2 * keep} frames omitted ...\n", *last,
                    *traceback.format_exception_only(type(exc), exc)])

"""The parent's half of coverage: asking isolates for the lines they ran, and adding them
to coverage.py's data (the isolate's half, and why it is not coverage.py: coverage_tracer).

``request`` is None unless coverage.py is measuring this process (``Coverage.current()``:
pytest-cov, ``coverage run``); isolates are then booted with the directories it measures
(its ``source`` and ``source_pkgs``, else the working directory, as coverage.py itself
defaults) and whether it counts arcs. ``merge`` takes an isolate's Coverage message and
adds it, file names made real as coverage.py makes them, to one data file of this
process's own beside coverage.py's (``.coverage.<host>.<pid>.<random>``, written as it
comes): ``coverage combine`` joins it, and pytest-cov combines it by itself. A parent
that cannot write that file (a Supervisor its own policy confines) counts nothing of its
isolates: measuring never changes an outcome.

What an isolate sends is held to what was asked: files beneath the roots only, at most
``MAX_FILES`` per message, line numbers that are ints (the wire's types). A message from
an isolate that was not asked is dropped.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from typing import Any, Final

from .wire import Coverage, CoverageRequest

MAX_FILES: Final = 4096
_lock = threading.Lock()
_sink: dict[str, Any] = {}  # coverage.py's data file of this process's isolates, by basename


def request() -> CoverageRequest | None:
    """What to ask isolates for, if coverage.py measures this process."""
    current = _current()
    if current is None:
        return None
    try:
        roots = _roots(current)
    except Exception:  # measuring is best effort: it never fails an isolate's start
        return None
    return CoverageRequest(roots=roots, arcs=bool(current.config.branch))


def merge(msg: Coverage) -> None:
    """Add an isolate's lines (or arcs) to this process's isolates' data file. Best
    effort: whatever goes wrong (a supervisor whose own policy denies writing the data
    file, a full disk) loses these lines and nothing else."""
    try:
        _merge(msg)
    except Exception:
        pass


def _merge(msg: Coverage) -> None:
    current = _current()
    if current is None:
        return
    roots = tuple(root.rstrip("/") + "/" for root in _roots(current))
    beneath = [name for name in list(msg.arcs or msg.lines)[:MAX_FILES] if name.startswith(roots)]
    if not beneath:
        return
    with _lock:
        data = _data_file(current)
        if current.config.branch:
            data.add_arcs({os.path.realpath(n): msg.arcs.get(n, []) for n in beneath})
        else:
            data.add_lines({os.path.realpath(n): msg.lines.get(n, []) for n in beneath})


def _current() -> Any:
    coverage = sys.modules.get("coverage")
    if coverage is None:
        return None
    return coverage.Coverage.current()


def _roots(current: Any) -> list[str]:
    """The directories coverage.py measures, as paths and as real paths (an isolate names
    its files as it imported them: a symlinked tree stays symlinked)."""
    named = [*(current.config.source or ()), *(current.config.source_pkgs or ())]
    dirs = [d for name in named for d in _directories(name)] or [os.getcwd()]
    return sorted({form for d in dirs for form in (os.path.abspath(d), os.path.realpath(d))})


def _directories(name: str) -> list[str]:
    if os.path.isdir(name):
        return [name]
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)
    return [os.path.dirname(spec.origin)] if spec.origin else []


def _data_file(current: Any) -> Any:
    from coverage import CoverageData

    basename = os.path.abspath(current.config.data_file)
    data = _sink.get(basename)
    if data is None or _sink.get("pid") != os.getpid():
        data = CoverageData(basename=basename, suffix=True)
        _sink.clear()
        _sink.update({basename: data, "pid": os.getpid()})
    return data

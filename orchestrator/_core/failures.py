"""An exception in the isolate, as the Failure message it sends (plain data, never the
exception itself, never pickle), and the source lines its tracebacks show.

The isolate's side only, and lean like ``isolate_main``: the traceback is formatted
here, from the frames and the source lines the parent sent, because the ``traceback``
module (with linecache, tokenize and re) is a cost every call would pay at start-up for
the few that fail, and once confined an isolate may not read source files anyway.
The parent rebuilds what it received with ``encode.rebuild``.
"""

from __future__ import annotations

import os
import sys

from .lean_wire import Unsupported, pack

TYPE_CHECKING = False  # no typing at run time (see above)
if TYPE_CHECKING:
    from types import CodeType, TracebackType
    from typing import Any

#: Source lines by file name: the function's file, sent with the boot message.
_SOURCES: dict[str, list[str]] = {}
#: Frames from these files are the orchestrator's own: dropped from the top of a traceback.
_OURS = os.path.dirname(os.path.dirname(__file__)) + os.sep  # isolates/orchestrator/


def failure_of(exc: BaseException, stage: str) -> dict[str, Any]:
    """``exc`` as a Failure message (``wire.Failure``): its type's name, plain-data
    arguments, message and traceback."""
    return {
        "type": "failure",
        "kind": _kind(type(exc)),
        "builtin": type(exc).__module__ == "builtins",
        "args": _plain_args(exc),
        "message": _text(exc),
        "traceback": format_exception(exc),
        "stage": stage,
    }


def _kind(cls: type) -> str:
    """An exception type as a traceback names it: bare for builtins, else qualified."""
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _plain_args(exc: BaseException) -> list[Any]:
    try:
        pack(list(exc.args))
    except Unsupported:
        return [_text(exc)]
    return list(exc.args)


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a __str__ that raises: say so rather than lose the failure
        return f"<{type(exc).__name__}: str() failed>"


def format_exception(exc: BaseException) -> str:
    """What ``traceback.format_exception`` prints: the chain of causes and contexts,
    oldest first, each with its frames (ours dropped from the top) and source lines."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        current, link = _previous(current)
    parts = []
    for e, link_after in reversed(chain):
        parts.append(_one(e, top=e is exc))
        if link_after:
            parts.append(link_after)
    return "".join(parts)


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _previous(exc: BaseException) -> tuple[BaseException | None, str]:
    if exc.__cause__ is not None:
        return exc.__cause__, _CAUSE
    if exc.__context__ is not None and not exc.__suppress_context__:
        return exc.__context__, _CONTEXT
    return None, ""


def _one(exc: BaseException, *, top: bool) -> str:
    tb = _user_frames(exc.__traceback__) if top else exc.__traceback__
    lines = ["Traceback (most recent call last):\n"] if tb is not None else []
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
        source = _line(code.co_filename, tb.tb_lineno)
        if source:
            lines.append(f"    {source}\n")
        tb = tb.tb_next
    name, message = _kind(type(exc)), _text(exc)
    lines.append(f"{name}: {message}\n" if message else f"{name}\n")
    return "".join(lines)


def _line(filename: str, lineno: int | None) -> str:
    lines = _SOURCES.get(filename)
    if lines is None:
        cache = getattr(sys.modules.get("linecache"), "cache", {})  # loaded by the user's code
        entry = cache.get(filename)
        lines = entry[2] if entry else None
    if not lines or lineno is None or not 0 < lineno <= len(lines):
        return ""
    return str(lines[lineno - 1]).strip()


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop the orchestrator's own frames from the top of a worker's traceback."""
    while tb is not None and tb.tb_next is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_OURS):
            break
        tb = tb.tb_next
    return tb


def hold_sources(fn: Any, sources: dict[str, list[str]]) -> None:
    """Keep the source lines the parent sent (tracebacks without reading files), and give
    by-value code (cloudpickle names it ``<dynamic-code>``) its real file name."""
    _SOURCES.update(sources)
    for filename in sources:
        code = getattr(fn, "__code__", None)
        if code is not None and code.co_filename == "<dynamic-code>":
            fn.__code__ = _renamed(code, filename)


def _renamed(code: CodeType, filename: str) -> CodeType:
    consts = tuple(_renamed(c, filename) if type(c) is type(code) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def no_source_lookups() -> None:
    """From now on tracebacks show only the source lines we hold: looking up others means
    stat() and open(), which a policy that kills on them would punish (the traceback of
    a harmless exception would end as a violation). Only when the function's own imports
    loaded linecache (a user's ``traceback.print_exc()``); ours never do."""
    linecache = sys.modules.get("linecache")
    if linecache is None:
        return
    for filename, lines in _SOURCES.items():
        # An mtime of None keeps checkcache from dropping the entry when stat() is denied.
        linecache.cache[filename] = (len(lines), None, lines, filename)
    linecache.checkcache = lambda filename=None: None  # type: ignore[attr-defined]
    linecache.updatecache = lambda filename, module_globals=None: []  # type: ignore[attr-defined]

"""The isolate's half of coverage: which lines it ran, recorded without a system call.

When the parent measures coverage (coverage.py is running there: pytest-cov, ``coverage
run``), the Boot message carries a CoverageRequest: the directories it measures, and
whether it counts arcs (branch coverage). The isolate then traces the call itself (its
boot, imports included, is not traced: a Python-level tracer costs a Python call per
function call, and a caller's timeout counts the boot) and sends what it ran, by file,
in a Coverage message just before the outcome; the parent adds it to coverage.py's data
(_core/coverage.py).

Why not coverage.py itself in the isolate: its tracer looks at the filesystem (realpath,
stat) for each new file it meets, and after confinement those calls are denied, or kill
the isolate under a killing policy. This tracer only reads ``frame.f_code.co_filename``
and line numbers: it makes no system call, so it needs nothing from any policy and
changes no test's denials. It is slower than coverage.py's C tracer (a Python call per
traced line), which only a run that measures coverage pays.

Lines are what CPython reports as "line" events, as coverage.py's own Python tracer
counts them; arcs are (previous line, line) pairs, entering code from minus its first
line and leaving it to minus its first line, a yield being no exit. An isolate that is
killed (a violation, a limit) sends nothing: its lines are lost.

Lean: an isolate imports it only when asked, before it is confined.
"""

from __future__ import annotations

import sys
import threading
from opcode import opmap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

    Tracer = Callable[[FrameType, str, Any], Any]

_YIELDS = frozenset(opmap[name] for name in ("YIELD_VALUE",) if name in opmap)


class Recorder:
    """Lines (or arcs) run in files beneath ``roots``, by file name as the code has it."""

    def __init__(self, roots: list[str], arcs: bool) -> None:
        self.roots = tuple(root.rstrip("/") + "/" for root in roots)
        self.arcs = arcs
        self.ran: dict[str, set[Any]] = {}
        self._elsewhere: set[str] = set()

    def start(self) -> None:
        threading.settrace(self._call)
        sys.settrace(self._call)

    def stop(self) -> None:
        sys.settrace(None)
        threading.settrace(None)

    def message(self) -> dict[str, Any]:
        """The Coverage message (wire.Coverage) of what ran so far."""
        by_file = {name: sorted(ran) for name, ran in self.ran.items() if ran}
        return {"type": "coverage", ("arcs" if self.arcs else "lines"): by_file}

    def _call(self, frame: FrameType, event: str, arg: object) -> Tracer | None:
        name = frame.f_code.co_filename
        ran = self.ran.get(name)
        if ran is None:
            if name in self._elsewhere:
                return None
            if not name.startswith(self.roots):
                self._elsewhere.add(name)
                return None
            ran = self.ran[name] = set()
        return _arcs_of(frame, ran) if self.arcs else _lines_of(ran)


def _lines_of(ran: set[Any]) -> Tracer:
    def line(frame: FrameType, event: str, arg: object) -> Tracer:
        if event == "line":
            ran.add(frame.f_lineno)
        return line

    return line


def _arcs_of(frame: FrameType, ran: set[Any]) -> Tracer:
    first = frame.f_code.co_firstlineno
    # A generator resumed starts from where it yielded, not from its entry.
    last = -first if frame.f_lasti < 0 else frame.f_lineno

    def arc(frame: FrameType, event: str, arg: object) -> Tracer:
        nonlocal last
        if event == "line":
            ran.add((last, frame.f_lineno))
            last = frame.f_lineno
        elif event == "return" and frame.f_code.co_code[frame.f_lasti] not in _YIELDS:
            ran.add((last, -first))
        return arc

    return arc

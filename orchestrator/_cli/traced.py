"""What a trace records: each kind of call a traced program made (``TracedCall``), with
counts, in a ``Trace``. The tracer (``trace.py``) fills one in; the covers
(``trace_cover.py``) read it.

A call keeps only the arguments some builtin rule, promise or group compares (the
others are zeroed), so a trace stays small and the covers can be checked call by call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from isolates.sandbox.lowlevel import NATIVE_ARCH
from isolates.sandbox.lowlevel import syscall_name as name_of
from isolates.sandbox.lowlevel import syscall_number as number

from .._core.resources import Resources

#: Stands for "the calling process's own pid" in a call's arguments (never a u64 value).
SELF: Final = -1
_CLONE3: Final = number("clone3")

#: syscall number -> (argument indices rules compare, those compared to the caller's pid)
Relevance: TypeAlias = Mapping[int, tuple[tuple[int, ...], frozenset[int]]]


@dataclass(frozen=True)
class TracedCall:
    """A kind of call: syscall ``nr`` of ``arch`` with the arguments rules look at."""

    nr: int
    args: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    arch: int = NATIVE_ARCH

    @property
    def name(self) -> str:
        if self.arch != NATIVE_ARCH:
            return f"arch{self.arch:#x}:{self.nr}"
        return name_of(self.nr)


@dataclass
class Trace:
    """What a traced command did: its calls (with counts), tasks seen, exit status."""

    argv: list[str]
    calls: Counter[TracedCall] = field(default_factory=Counter)
    tasks: set[int] = field(default_factory=set)
    exit_code: int = 0
    #: The paths, ports and sockets the calls named (_core/resources.py).
    resources: Resources = field(default_factory=Resources)

    def counts(self) -> dict[str, int]:
        """Calls per syscall name, most frequent first."""
        by_name: Counter[str] = Counter()
        for call, count in self.calls.items():
            by_name[call.name] += count
        return dict(sorted(by_name.items(), key=lambda item: (-item[1], item[0])))


def answered_enosys(call: TracedCall) -> bool:
    """clone3, which the tracer (as every isolates policy) answers ENOSYS."""
    return call.arch == NATIVE_ARCH and call.nr == _CLONE3

"""The calls a policy failed with an errno, in words: what ``--report``, ``WorkerFailed
.denials`` and a failed isolate's note list.

A listener that answers an errno denial (answers.py, run_report.py) records it here while
the call is still parked, so that its paths are read from the caller's memory as the
call saw them (``described``). Bounded: ``MAX_DENIALS`` distinct calls kept, the rest
counted, so a program denied without end costs its parent no more memory.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from isolates.sandbox.lowlevel import (
    Notification,
    describe_call,
    memory_reader,
    notification_valid,
    syscall_name,
)

if TYPE_CHECKING:
    from isolates.sandbox import Policy


def described(listener: int, n: Notification) -> str:
    """The parked call ``n`` in words, its paths and addresses read from its memory
    while it is parked (``openat(AT_FDCWD, "/etc/passwd", O_RDONLY)``); only numbers if
    the call is no longer parked by the time the read is done (its pid may be another's)."""
    key = (n.nr, n.args)
    known = _READ_NOTHING.get(key)
    if known is not None:
        return known
    reads: list[int] = []
    read = memory_reader(n.pid)

    def counted(address: int, size: int) -> bytes | None:
        reads.append(address)
        return read(address, size)

    text = describe_call(n.nr, n.args, counted)
    if not reads:  # words of the registers alone: the same for every such call
        if len(_READ_NOTHING) < MAX_REMEMBERED:
            _READ_NOTHING[key] = text
        return text
    return text if notification_valid(listener, n.id) else describe_call(n.nr, n.args)


#: Calls described from their registers alone (no memory read), by (nr, args): a program
#: denied in a loop is described once, not at each denial.
_READ_NOTHING: dict[tuple[int, tuple[int, ...]], str] = {}
MAX_REMEMBERED: Final = 1024


#: Distinct denials kept per isolate; more are counted, not kept.
MAX_DENIALS: Final = 64


@dataclass(frozen=True)
class Denial:
    """A call the policy failed: in words (``call``), the errno's name (``error``), how
    often the same call was denied (``times``) and a rule that would allow it."""

    call: str
    error: str
    times: int
    allow: str

    def __str__(self) -> str:
        again = f" ({self.times} times)" if self.times > 1 else ""
        return f"{self.call} -> {self.error}{again}; allowed by {self.allow}"


#: What a denial the guards decide says of what would allow it: nothing would.
GUARDED: Final = "no rule or option: isolates refuses it under every policy"

Guarded = Callable[[int, tuple[int, ...]], bool]


class Denials:
    """An isolate's denials, the first ``MAX_DENIALS`` distinct ones kept."""

    def __init__(
        self, allow_of: Callable[[int], str] | None = None, guarded: Guarded | None = None
    ) -> None:
        """``allow_of``: what would allow a denied syscall (by number), in the words of
        whoever reads the list (default: a Rule of it, for isolates in Python);
        ``guarded``: whether a call (nr, args) is one isolates' guards refuse, which no
        rule allows (``guarded_by``)."""
        self._seen: dict[tuple[str, str], list[int | str]] = {}
        self._allow_of = allow_of or (lambda nr: f"Rule({syscall_name(nr)!r})")
        self._guarded = guarded
        self.dropped = 0  # denials beyond what is kept

    def add(self, call: str, nr: int, err: int, args: tuple[int, ...] = ()) -> None:
        """Count ``call`` (system call ``nr`` with ``args``) denied with ``err``."""
        key = (call, errno.errorcode.get(err, str(err)))
        entry = self._seen.get(key)
        if entry is not None:
            entry[0] = int(entry[0]) + 1
        elif len(self._seen) < MAX_DENIALS:
            guarded = self._guarded is not None and self._guarded(nr, args)
            self._seen[key] = [1, GUARDED if guarded else self._allow_of(nr)]
        else:
            self.dropped += 1

    def listed(self) -> tuple[Denial, ...]:
        return tuple(
            Denial(call, error, int(times), str(allow))
            for (call, error), (times, allow) in self._seen.items()
        )

    def __bool__(self) -> bool:
        return bool(self._seen)


def guarded_by(program: Callable[[], bytes]) -> Guarded:
    """``Denials``' ``guarded``, from what compiles the guards-only program
    (``guards_program``), called at the first denial only."""
    from .verdicts import Verdicts

    verdicts: list[Verdicts] = []

    def guarded(nr: int, args: tuple[int, ...]) -> bool:
        if not verdicts:
            verdicts.append(Verdicts(program()))
        return verdicts[0].refuses(nr, args)

    return guarded


def guards_program(policy: Policy) -> Callable[[], bytes]:
    """What compiles ``policy``'s guards alone: every other call allowed."""

    def program() -> bytes:
        from isolates.sandbox import Action
        from isolates.sandbox.lowlevel import compile_filter

        return compile_filter((), policy.guards(all_threads=True), Action.ALLOW, os.getpid())

    return program

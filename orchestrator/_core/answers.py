"""How an isolate's parked calls are answered: by its own policy.

The filter an isolate loads hands to its listener every call its policy kills (then a
violation), every call its policy fails with an errno when its denials are reported,
and its clones under a processes limit (process_count.py). The monitor thread reads
each (monitor.py) and its isolate (process.py) asks ``Answers.answer``, which runs the
isolate's policy as compiled without any of this (its *verdict*) on the call's
registers:

- an errno: the call fails with it, as it would have without the listener, and the
  denial is recorded in words (``Denials``: the call with its path, the errno, how often);
- allowed: a clone goes to the count; another call the listener was given to decide
  (``isolates run`` parks its exec) runs;
- anything else (a kill): not answered here; the caller reports a violation and kills.

Safety argument:

- The verdict is the isolate's own program: every answer is the one the kernel would
  have given without the listener, but for the count's refusals (EAGAIN, ENOSYS, EPERM),
  which only deny. It runs on the registers the kernel parked the call with, which a
  parked thread cannot change, and no filter reads memory, so what another thread
  writes to the call's memory meanwhile cannot change the verdict.
- A call the verdict kills is never answered: it stays parked until the kill ends it.
- A call from another architecture (i386 ``int 0x80``) is never answered here: the
  verdict's numbers are native ones, and every filter kills other ABIs anyway.
- The denial log is bounded (``MAX_DENIALS`` distinct calls, counted beyond), so an
  isolate denied without end costs its parent no more memory.
"""

from __future__ import annotations

import errno
import logging
import sys
from dataclasses import dataclass
from typing import Final

from isolates.sandbox import Action
from isolates.sandbox.lowlevel import (
    NATIVE_ARCH,
    Notification,
    action_of,
    continue_notification,
    deny_notification,
    evaluate_reading,
    syscall_name,
)

from .monitor import described
from .process_count import ProcessCount

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


class Denials:
    """An isolate's denials, the first ``MAX_DENIALS`` distinct ones kept."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], list[int | str]] = {}
        self.dropped = 0  # denials beyond what is kept

    def add(self, call: str, nr: int, err: int) -> None:
        key = (call, errno.errorcode.get(err, str(err)))
        entry = self._seen.get(key)
        if entry is not None:
            entry[0] = int(entry[0]) + 1
        elif len(self._seen) < MAX_DENIALS:
            self._seen[key] = [1, f"Rule({syscall_name(nr)!r})"]
        else:
            self.dropped += 1

    def listed(self) -> tuple[Denial, ...]:
        return tuple(
            Denial(call, error, int(times), str(allow))
            for (call, error), (times, allow) in self._seen.items()
        )

    def __bool__(self) -> bool:
        return bool(self._seen)


class Verdicts:
    """The answers of a filter program, remembered: running it in Python costs about a
    hundred microseconds, and a program is a function of the words it reads, so a call
    whose nr and read words match one seen before gets that one's answer
    (``evaluate_reading``). At most ``PER_CALL`` remembered per syscall."""

    PER_CALL: Final = 16

    def __init__(self, program: bytes) -> None:
        self._program = program
        self._seen: dict[int, list[tuple[tuple[tuple[int, int], ...], Action]]] = {}

    def of(self, nr: int, args: tuple[int, ...]) -> Action:
        words = _words(args)
        known = self._seen.setdefault(nr, [])
        for reads, action in known:
            if all(words.get(offset) == value for offset, value in reads):
                return action
        ret, reads = evaluate_reading(self._program, nr, args)
        action = action_of(ret)
        if len(known) < self.PER_CALL:
            known.append((reads, action))
        return action


def _words(args: tuple[int, ...]) -> dict[int, int]:
    """seccomp_data's argument words by offset (instruction_pointer is never compared
    by our filters; a read of it misses, so it is evaluated)."""
    out = {}
    for i, arg in enumerate(args):
        low, high = arg & 0xFFFFFFFF, (arg >> 32) & 0xFFFFFFFF
        out[16 + 8 * i], out[20 + 8 * i] = (low, high) if _LITTLE else (high, low)
    return out


_LITTLE: Final = sys.byteorder == "little"


class Answers:
    """Answers an isolate's parked calls by ``verdict``, its policy's program without
    the notifying; with ``count`` its clones, with ``denials`` its denials recorded."""

    def __init__(
        self,
        verdict: bytes,
        *,
        count: ProcessCount | None = None,
        denials: Denials | None = None,
    ) -> None:
        self._verdicts = Verdicts(verdict)
        self.count = count
        self.denials = denials

    def answer(self, listener: int, n: Notification) -> bool:
        """Answer ``n``; False: its verdict kills (a violation, not answered)."""
        if n.arch != NATIVE_ARCH:
            return False
        action = self._verdicts.of(n.nr, n.args)
        try:
            if action.kind == "errno":
                if self.denials is not None:
                    self.denials.add(described(listener, n), n.nr, action.errno)
                deny_notification(listener, n.id, action.errno)
            elif action.denies:
                return False
            elif self.count is not None and self.count.counts(n):
                self.count.answer(listener, n)
            else:
                continue_notification(listener, n.id)
        except OSError:  # ENOENT: the caller died while parked; nothing ran
            pass
        return True


def with_denials(failure: BaseException, name: str, answers: Answers | None) -> None:
    """Put the denials an isolate met on the ``failure`` it ended in: as ``.denials``
    and as a note its traceback shows (``denied by parse's policy: openat(...) ->
    EPERM``); logged too, to the "isolates" logger."""
    denials = answers.denials if answers is not None else None
    if not denials:
        return
    listed = denials.listed()
    failure.denials = listed  # type: ignore[attr-defined]
    lines = [f"denied by {name}'s policy:", *(f"  {d}" for d in listed)]
    if denials.dropped:
        lines.append(f"  and {denials.dropped} more")
    failure.add_note("\n".join(lines))
    _LOG.warning("%s", "\n".join(lines))


_LOG: Final = logging.getLogger("isolates")

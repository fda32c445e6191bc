"""What a filter program answers a parked call, remembered (``Verdicts``).

A listener that answers calls for their own policy (answers.py for isolates, run_report.py
for ``isolates run``) runs that policy's program without the notifying, its *verdict*, on
the registers the kernel parked the call with. Lean on purpose: ``isolates run``'s
answering parent imports this, the BPF interpreter and nothing of the rule values.
"""

from __future__ import annotations

import sys

from isolates.sandbox.lowlevel import evaluate_reading, uapi

TYPE_CHECKING = False  # not typing's: on isolates run's cached start (run_report.py)
if TYPE_CHECKING:
    from typing import Final

    from isolates.sandbox import Action


class Verdicts:
    """The answers of a filter program, remembered: running it in Python costs about a
    hundred microseconds, and a program is a function of the words it reads, so a call
    whose nr and read words match one seen before gets that one's answer
    (``evaluate_reading``). At most ``PER_CALL`` remembered per syscall."""

    PER_CALL: Final = 16

    def __init__(self, program: bytes) -> None:
        self._program = program
        self._seen: dict[int, list[tuple[tuple[tuple[int, int], ...], int]]] = {}

    def ret_of(self, nr: int, args: tuple[int, ...]) -> int:
        """The SECCOMP_RET_* value the program returns for this native call."""
        words = _words(args)
        known = self._seen.setdefault(nr, [])
        for reads, ret in known:
            if all(words.get(offset) == value for offset, value in reads):
                return ret
        ret, reads = evaluate_reading(self._program, nr, args)
        if len(known) < self.PER_CALL:
            known.append((reads, ret))
        return ret

    def refuses(self, nr: int, args: tuple[int, ...]) -> bool:
        """Whether the program answers this call with anything but an allow (or log)."""
        return self.ret_of(nr, args) & _ACTION not in _ALLOWS

    def of(self, nr: int, args: tuple[int, ...]) -> Action:
        """``ret_of`` as the Action it stands for."""
        from isolates.sandbox.lowlevel import action_of

        return action_of(self.ret_of(nr, args))


def _words(args: tuple[int, ...]) -> dict[int, int]:
    """seccomp_data's argument words by offset (instruction_pointer is never compared
    by our filters; a read of it misses, so it is evaluated)."""
    out = {}
    for i, arg in enumerate(args):
        low, high = arg & 0xFFFFFFFF, (arg >> 32) & 0xFFFFFFFF
        out[16 + 8 * i], out[20 + 8 * i] = (low, high) if _LITTLE else (high, low)
    return out


_LITTLE: Final = sys.byteorder == "little"
_ACTION: Final = uapi.SECCOMP_RET_ACTION_FULL
_ALLOWS: Final = (uapi.SECCOMP_RET_ALLOW, uapi.SECCOMP_RET_LOG)

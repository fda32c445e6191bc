"""libseccomp as a second compiler, for tests: the differential oracle beside the reference
decider (_decide.py). isolates compiles with its own compiler (_compiler.py); this needs
pyseccomp (the test extra) and the system's libseccomp, and is never imported otherwise.

It compiles the merged entries alone, without the guards (they are our compiler's).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ._errors import PolicyError
from ._merge import Entry


class _Fd:
    """The object libseccomp's export wants: anything with ``fileno()``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def to_bpf(entries: Iterable[Entry], default: int, pid: int) -> bytes:
    """Compile ``entries`` for the native architecture into a raw sock_filter array.

    Any other ABI of this CPU (i386 ``int 0x80``, x32) gets KILL_PROCESS from
    libseccomp's architecture check before any rule is looked at. The tree is
    optimised (binary search on syscall numbers), so cost does not grow with rule count.
    """
    import pyseccomp as sc

    filt = sc.SyscallFilter(default)
    filt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    filt.set_attr(sc.Attr.CTL_NNP, 0)  # we set NO_NEW_PRIVS ourselves when loading
    filt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    for e in entries:
        args = [sc.Arg(*_arg(c.resolve(pid))) for c in e.conditions]
        try:
            filt.add_rule(e.action.seccomp_value, e.nr, *args)
        except OSError as exc:
            raise PolicyError(f"libseccomp refused {e.syscall!r} {e.conditions!r}: {exc}") from None
    return _export(filt)


def _arg(resolved: tuple[int, str, int, int]) -> tuple[int, int, int, int]:
    from ._rules import OPS

    index, op, value, mask = resolved
    if op == "&==":
        return index, OPS[op], mask, value
    return index, OPS[op], value, 0


def _export(filt: Any) -> bytes:
    read_end, write_end = os.pipe()  # a filter is at most 32 KiB: within one pipe buffer
    with os.fdopen(read_end, "rb") as reader:
        try:
            filt.export_bpf(_Fd(write_end))
        finally:
            os.close(write_end)
        return reader.read()

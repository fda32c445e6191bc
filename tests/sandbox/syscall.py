"""Raw syscalls for tests: reach the kernel with exact arguments, bypassing libc wrappers."""

from __future__ import annotations

import ctypes
import os

from isolates.sandbox._syscalls import number, table

table()  # resolve every name now: a confined child cannot load libseccomp

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def raw(name: str, *args: int) -> int:
    """Make syscall ``name``; return its result or raise OSError with its errno.

    Resolve numbers before loading a policy (the table import may read files).
    """
    nr = number(name)
    res = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(res)

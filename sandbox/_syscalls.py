"""Syscall names and numbers for the native architecture.

libseccomp's table is the source (it knows every architecture), supplemented with the
x86_64 syscalls newer than the libseccomp release most distributions ship. libseccomp is
imported lazily: a process that only loads compiled filters never needs it.
"""

from __future__ import annotations

import difflib
import functools
import platform
from typing import Final

from ._errors import PolicyError

# x86_64 syscalls added after libseccomp 2.5.4 (arch/x86/entry/syscalls/syscall_64.tbl).
_X86_64_NEWER: Final = {
    "uretprobe": 335,
    "statmount": 457,
    "listmount": 458,
    "lsm_get_self_attr": 459,
    "lsm_set_self_attr": 460,
    "lsm_list_modules": 461,
    "mseal": 462,
    "setxattrat": 463,
    "getxattrat": 464,
    "listxattrat": 465,
    "removexattrat": 466,
    "open_tree_attr": 467,
    "file_getattr": 468,
    "file_setattr": 469,
}
_HIGHEST: Final = 1024


@functools.cache
def table() -> dict[str, int]:
    """Every syscall name of the native architecture, with its number."""
    import pyseccomp

    names: dict[str, int] = {}
    for nr in range(_HIGHEST):
        try:
            names[pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, nr).decode()] = nr
        except ValueError:
            continue
    if platform.machine() == "x86_64":
        for name, nr in _X86_64_NEWER.items():
            names.setdefault(name, nr)
    return names


@functools.cache
def names_by_number() -> dict[int, str]:
    return {nr: name for name, nr in table().items()}


def number(name: str, where: str = "") -> int:
    """The native number of ``name``; PolicyError with a suggestion if it has none."""
    nr = table().get(name)
    if nr is None:
        raise PolicyError(f"{where}unknown syscall {name!r} on {platform.machine()}{hint(name)}")
    return nr


def hint(name: str) -> str:
    close = difflib.get_close_matches(name, table(), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def name_of(nr: int) -> str:
    """The name of syscall ``nr``, or ``syscall_<nr>`` when the table does not know it."""
    return names_by_number().get(nr, f"syscall_{nr}")


def exists(name: str) -> bool:
    return name in table()

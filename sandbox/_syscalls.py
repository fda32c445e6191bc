"""Syscall names and numbers for the native architecture.

x86_64 and aarch64 come from the table shipped in _syscall_table.py (generated from
libseccomp plus newer kernels), so naming syscalls never loads libseccomp; isolates
supports no other architecture.
"""

from __future__ import annotations

import functools
import platform

from ._errors import PolicyError
from ._suggest import did_you_mean
from ._syscall_table import TABLES


@functools.cache
def table() -> dict[str, int]:
    """Every syscall name of the native architecture, with its number."""
    shipped = TABLES.get(platform.machine())
    if shipped is None:
        raise PolicyError(
            f"isolates knows the syscalls of {', '.join(TABLES)}, not {platform.machine()}"
        )
    return dict(shipped)


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
    return did_you_mean(name, table())


def name_of(nr: int) -> str:
    """The name of syscall ``nr``, or ``syscall_<nr>`` when the table does not know it."""
    return names_by_number().get(nr, f"syscall_{nr}")


def exists(name: str) -> bool:
    return name in table()

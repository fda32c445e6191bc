"""Syscall names and numbers for the native architecture.

x86_64 and aarch64 come from the table shipped in _syscall_table.py (generated from
libseccomp plus newer kernels), so naming syscalls never loads libseccomp. Any other
architecture asks libseccomp, lazily.
"""

from __future__ import annotations

import functools
import platform
from typing import Final

from ._errors import PolicyError, did_you_mean
from ._syscall_table import TABLES

_HIGHEST: Final = 1024


@functools.cache
def table() -> dict[str, int]:
    """Every syscall name of the native architecture, with its number."""
    shipped = TABLES.get(platform.machine())
    return dict(shipped) if shipped is not None else _from_libseccomp()


def _from_libseccomp() -> dict[str, int]:
    import pyseccomp

    names: dict[str, int] = {}
    for nr in range(_HIGHEST):
        try:
            names[pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, nr).decode()] = nr
        except ValueError:
            continue
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
    return did_you_mean(name, table())


def name_of(nr: int) -> str:
    """The name of syscall ``nr``, or ``syscall_<nr>`` when the table does not know it."""
    return names_by_number().get(nr, f"syscall_{nr}")


def exists(name: str) -> bool:
    return name in table()

"""Capabilities by name: what ``capabilities={"NET_BIND_SERVICE"}`` and ``--cap-keep``
accept (capabilities(7) names, with or without ``CAP_``, in any case), checked before
anything starts. The dropping itself is ``_kernel_ns.keep_only_capabilities``."""

from __future__ import annotations

from collections.abc import Iterable

from ._errors import PolicyError
from ._uapi import CAP_PERFMON, CAP_SYS_ADMIN, CAPABILITIES

#: Never kept: with either, a process in a Landlock domain still reads /proc/PID/environ
#: and maps of processes outside it (see _confine.PTRACE_BYPASS).
_NEVER = {CAP_SYS_ADMIN: "SYS_ADMIN", CAP_PERFMON: "PERFMON"}
_NAMES = {number: name for name, number in CAPABILITIES.items()}


def capability_numbers(names: Iterable[str]) -> tuple[int, ...]:
    """The capability numbers of ``names``, sorted; PolicyError names a bad one."""
    if isinstance(names, str):  # "NET_RAW" would otherwise be seven one-letter names
        names = [names]
    numbers = set()
    for name in names:
        if not isinstance(name, str):
            raise PolicyError(f"capabilities are named by strings, not {name!r}")
        bare = name.strip().upper().removeprefix("CAP_")
        if bare not in CAPABILITIES:
            from ._suggest import did_you_mean  # difflib: only when someone misspells

            hint = did_you_mean(bare, CAPABILITIES, otherwise="; see capabilities(7)")
            raise PolicyError(f"unknown capability {name!r}{hint}")
        number = CAPABILITIES[bare]
        if number in _NEVER:
            raise PolicyError(
                f"capability {name!r} cannot be kept: with CAP_{_NEVER[number]} a process "
                "in a Landlock domain still reads other processes' /proc/PID/environ and "
                "maps, so no isolate keeps it"
            )
        numbers.add(number)
    return tuple(sorted(numbers))


def capability_names(numbers: Iterable[int]) -> tuple[str, ...]:
    """``CAP_``-prefixed names of ``numbers``, in order (for statuses and reports)."""
    return tuple(f"CAP_{_NAMES.get(n, str(n))}" for n in sorted(numbers))

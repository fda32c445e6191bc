"""Tests of isolates.dask and isolates.ray, and the task functions they run.

The functions live here, not in the test modules: an isolate imports the module of the
function it calls, and this one imports nothing heavy (no dask, ray or pytest), so each
isolated task starts as quickly as an ``@isolate`` call.
"""

from __future__ import annotations

import os

from isolates.orchestrator import isolate
from isolates.sandbox import Action, Landlock, Policy, SystemIO

#: The policy the clusters' isolates get: compute, and read /proc (no other path).
READ_PROC = Policy(
    SystemIO.nothing().allow_open_readonly().allow_read().allow_close().allow_metadata(),
    Landlock().read("/proc"),
)

#: A stricter policy: compute only, and any other call kills the isolate.
KILL = Policy(default=Action.KILL_PROCESS)


def status() -> dict[str, str]:
    """This process's pid and its /proc/self/status fields Seccomp and NoNewPrivs."""
    fields = {"pid": str(os.getpid())}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Seccomp", "NoNewPrivs"):
                fields[key] = value.strip()
    return fields


def seccomp_of(fields: dict[str, str]) -> str:
    """Joins another task's status with this process's Seccomp field."""
    return f"{status()['Seccomp']} of a process whose Seccomp is {fields['Seccomp']}"


def first_line(path: str) -> str:
    with open(path) as f:
        return f.readline()


def allocate(size: int) -> int:
    """Allocate ``size`` bytes and touch them."""
    return len(bytearray(size))


def double(x: int) -> int:
    return 2 * x


def opaque() -> object:
    """A value no msgspec encoder knows: only pickle could carry it."""
    return object()


@isolate(KILL)
def strict_first_line(path: str) -> str:
    """A task with its own, stricter policy: no open at all."""
    with open(path) as f:
        return f.readline()


@isolate(KILL)
def strict_double(x: int) -> int:
    return 2 * x

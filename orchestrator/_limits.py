"""Resource limits of an isolate: ``Limits``, checked when it is made, enforced in the
isolate by rlimits set before it is released, and the ``ResourceExceeded`` a call or a
worker that went over one ends in.

The limits are the kernel's, set with soft == hard: raising one needs
CAP_SYS_RESOURCE, which no isolate keeps (it drops every capability, and
``capabilities=`` refuses to keep that one alongside limits), so the isolate cannot
undo them whatever its policy allows.
"""

from __future__ import annotations

import errno
import math
import re
import resource
import signal
from dataclasses import dataclass, fields, replace
from typing import Any, Final

from isolates.sandbox import PolicyError

from ._core.errors import IsolateViolation, WorkerFailed

_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", re.IGNORECASE)
#: Fewer descriptors than this and the isolate's own machinery (stdio, its control
#: channel, its seccomp listener, Landlock's ruleset) could not work.
MIN_OPEN_FILES: Final = 16


def parse_size(value: int | str, field: str) -> int:
    """Bytes from ``value``: an int, or a string like "256M", "1.5G", "512KiB"."""
    if isinstance(value, bool):
        raise PolicyError(f"Limits.{field}: {value!r} is no size")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value)):
        size = int(float(match[1]) * _UNITS[match[2].upper()])
    else:
        raise PolicyError(f"Limits.{field}: {value!r} is no size; use bytes or '256M'")
    if size <= 0:
        raise PolicyError(f"Limits.{field}: {value!r}; a limit must be above 0")
    return size


@dataclass(frozen=True)
class Limits:
    """What an isolate may consume. ``memory`` (bytes or "256M": its data, heap and
    anonymous mappings, RLIMIT_DATA), ``cpu_time`` (seconds of CPU, RLIMIT_CPU),
    ``processes`` (the tasks, processes and threads, it may have at once, itself
    included: its parent counts them and fails a clone past it with EAGAIN),
    ``open_files`` (descriptors, RLIMIT_NOFILE), ``file_size`` (the largest file it may
    write, RLIMIT_FSIZE), ``core`` (0: it never dumps core), ``stack`` (RLIMIT_STACK),
    ``wall_time`` (seconds from its start: the call's or worker's timeout). None: no
    limit. Invalid values raise PolicyError naming the field."""

    memory: int | str | None = None
    cpu_time: float | None = None
    processes: int | None = None
    open_files: int | None = None
    file_size: int | str | None = None
    core: int = 0
    stack: int | str | None = None
    wall_time: float | None = None

    def __post_init__(self) -> None:
        for name in ("memory", "file_size", "stack"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_size(value, name))
        _positive_seconds(self.cpu_time, "cpu_time")
        _positive_seconds(self.wall_time, "wall_time")
        if self.processes is not None and (
            isinstance(self.processes, bool)
            or not isinstance(self.processes, int)
            or self.processes < 1
        ):
            raise PolicyError(
                f"Limits.processes: {self.processes!r}; use a number of tasks of at least 1 "
                "(the isolate itself)"
            )
        if self.open_files is not None and (
            not isinstance(self.open_files, int) or self.open_files < MIN_OPEN_FILES
        ):
            raise PolicyError(
                f"Limits.open_files: {self.open_files!r}; an isolate needs at least "
                f"{MIN_OPEN_FILES} descriptors for itself"
            )
        if not isinstance(self.core, int) or isinstance(self.core, bool) or self.core < 0:
            raise PolicyError(f"Limits.core: {self.core!r}; use bytes (0: no core dump)")

    def rlimits(self) -> list[tuple[int, int, int]]:
        """(resource, soft, hard) for the isolate to set on itself, soft == hard but for
        CPU time: SIGXCPU at the limit, SIGKILL a second later if it is caught."""
        out = [(resource.RLIMIT_CORE, self.core, self.core)]
        for name, which in _RLIMITS:
            value = getattr(self, name)
            if value is not None:
                out.append((which, int(value), int(value)))
        if self.cpu_time is not None:
            seconds = math.ceil(self.cpu_time)
            out.append((resource.RLIMIT_CPU, seconds, seconds + 1))
        return out

    def mechanisms(self) -> dict[str, str]:
        """How each limit set is enforced, in words ("memory: rlimit DATA 256 MiB")."""
        said = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                said[f.name] = _MECHANISM[f.name](value)
        return said

    def in_force(self) -> tuple[str, ...]:
        """``mechanisms()`` as the lines a Status shows ("memory: rlimit DATA 256 MiB")."""
        return tuple(f"{name}: {how}" for name, how in self.mechanisms().items())


def _positive_seconds(value: Any, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise PolicyError(f"Limits.{name}: {value!r}; use seconds above 0")
    if math.isinf(value):
        raise PolicyError(f"Limits.{name}: {value!r}; use None for no limit")


_RLIMITS: Final = (
    ("memory", resource.RLIMIT_DATA),
    ("open_files", resource.RLIMIT_NOFILE),
    ("file_size", resource.RLIMIT_FSIZE),
    ("stack", resource.RLIMIT_STACK),
)


def _bytes(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value} bytes"


_MECHANISM: Final = {
    "memory": lambda v: f"rlimit DATA {_bytes(v)}",
    "cpu_time": lambda v: f"rlimit CPU {v:g} s (SIGXCPU, then SIGKILL a second later)",
    "processes": lambda v: (
        f"seccomp notify: clone, fork and vfork counted by the parent, {v} tasks (EAGAIN past it)"
    ),
    "open_files": lambda v: f"rlimit NOFILE {v}",
    "file_size": lambda v: f"rlimit FSIZE {_bytes(v)}",
    "core": lambda v: f"rlimit CORE {_bytes(v)}" if v else "rlimit CORE 0 (no core dump)",
    "stack": lambda v: f"rlimit STACK {_bytes(v)}",
    "wall_time": lambda v: f"the parent's deadline, {v:g} s (SIGKILL)",
}


class ResourceExceeded(WorkerFailed):
    """A worker or call went over one of its ``Limits``: ``resource`` names it
    ("memory", "cpu_time", "processes", "open_files", "file_size", "wall_time"),
    ``limit`` the limit and how it is enforced, ``observed`` what was seen (e.g.
    "MemoryError", "SIGXCPU", "EFBIG", "clone refused (EAGAIN) with 4 tasks live")."""

    def __init__(self, name: str, resource: str, limit: object, observed: str) -> None:
        super().__init__(name, f"exceeded its {resource} limit ({limit}): {observed}")
        self.resource = resource
        self.limit = limit
        self.observed = observed


def unified(limits: Limits | None, timeout: float | None, capabilities: tuple[int, ...]) -> Limits:
    """``limits`` with ``timeout`` as its wall time (the two are one limit), checked
    against the capabilities kept: CAP_SYS_RESOURCE would let the isolate lift them."""
    if limits is None:
        limits = Limits()
    elif not isinstance(limits, Limits):
        raise PolicyError(f"limits= takes a Limits, not {limits!r}")
    if timeout is not None:
        if limits.wall_time is not None and limits.wall_time != timeout:
            raise PolicyError(
                f"timeout={timeout!r} and Limits.wall_time={limits.wall_time!r}: give one"
            )
        _positive_seconds(timeout, "wall_time")
        limits = replace(limits, wall_time=timeout)
    if _SYS_RESOURCE in capabilities:
        raise PolicyError(
            "capability 'SYS_RESOURCE' cannot be kept: with it an isolate lifts its own "
            "limits (every isolate has some: at least no core dumps)"
        )
    return limits


_SYS_RESOURCE: Final = 24


def exceeded(
    failure: BaseException, name: str, limits: Limits, refused: str | None = None
) -> BaseException:
    """``failure`` (what a call or worker ended in) as ResourceExceeded when a limit
    explains it, else ``failure`` itself. ``refused``: the first clone the processes
    limit refused (process_count.py), if any was."""
    found = _which(failure, limits)
    if found is None and refused is not None and _from_refusal(failure):
        found = "processes", refused
    if found is None:
        return failure
    resource_name, observed = found
    limit = getattr(limits, resource_name)
    err = ResourceExceeded(name, resource_name, _MECHANISM[resource_name](limit), observed)
    err.__cause__ = failure
    return err


def _which(failure: BaseException, limits: Limits) -> tuple[str, str] | None:
    if isinstance(failure, ResourceExceeded):
        return None
    if isinstance(failure, MemoryError) and limits.memory is not None:
        return "memory", "MemoryError"
    if isinstance(failure, OSError) and not isinstance(failure, WorkerFailed):
        by_errno = {errno.EFBIG: "file_size", errno.EMFILE: "open_files"}
        field = by_errno.get(failure.errno or 0)
        if field is not None and getattr(limits, field) is not None:
            return field, errno.errorcode[failure.errno or 0]
    if isinstance(failure, WorkerFailed):
        if failure.signal == signal.SIGXCPU and limits.cpu_time is not None:
            return "cpu_time", "SIGXCPU"
        if failure.signal == signal.SIGXFSZ and limits.file_size is not None:
            return "file_size", "SIGXFSZ"
        if failure.reason.startswith("timed out") and limits.wall_time is not None:
            return "wall_time", failure.reason
    return None


def _from_refusal(failure: BaseException) -> bool:
    """What a refused clone ends a function in: EAGAIN from fork or subprocess, "can't
    start new thread", or the isolate's death (the program failed its own way)."""
    if isinstance(failure, OSError) and not isinstance(failure, WorkerFailed):
        return failure.errno == errno.EAGAIN
    if isinstance(failure, RuntimeError):
        return "new thread" in str(failure)
    return isinstance(failure, WorkerFailed) and not isinstance(failure, IsolateViolation)

"""Functions the isolate tests run. Importable by reference (kept light: isolates only)."""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
import socket
from dataclasses import dataclass

import msgspec

from isolates.orchestrator import isolate
from isolates.sandbox import Action, Policy, Signals, SystemIO


class Point(msgspec.Struct):
    x: int
    y: int


@dataclass
class Box:
    label: str
    size: float


class ParseError(Exception):
    pass


@isolate
def echo(value: object) -> object:
    return value


@isolate
def make_point(x: int, y: int) -> Point:
    return Point(x, y)


@isolate
def make_box(label: str) -> Box:
    return Box(label, 1.5)


@isolate
def make_box_untyped(label: str):  # type: ignore[no-untyped-def]
    return Box(label, 2.5)


@isolate
def pair() -> tuple[int, str]:
    return (1, "a")


@isolate
def when() -> datetime.datetime:
    return datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)


@isolate
def fail_value() -> None:
    raise ValueError("bad input", 42)


@isolate
def fail_custom() -> None:
    raise ParseError("line 3: unexpected '}'")


@isolate
def uname_denied() -> str:
    return os.uname().sysname


@isolate(Policy(default=Action.KILL_PROCESS))
def uname_killed() -> str:
    return os.uname().sysname


@isolate
def crash() -> None:
    ctypes.string_at(0)  # SIGSEGV


@isolate(Policy(Signals.nothing().allow_kill_self()))
def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@isolate(timeout=0.5)
def spin() -> None:
    while True:
        pass


@isolate
def spin_untimed() -> None:
    while True:
        pass


@isolate
def my_pid() -> int:
    return os.getpid()


@isolate(env={"GREETING": "hello"})
def environment() -> dict[str, str]:
    return dict(os.environ)


@isolate(Policy(SystemIO.nothing().allow_write()))
def compromised(payload: bytes) -> str:
    """Behaves like an isolate an attacker took over: sprays a pickle at every fd."""
    for fd in range(3, 256):
        try:
            os.write(fd, len(payload).to_bytes(4, "big") + payload)
        except OSError:
            continue
        try:
            socket.socket(fileno=fd).detach()
        except OSError:
            pass
    return "sprayed"


async def _sleep_then(value: int) -> int:
    return value


@isolate
async def async_double(value: int) -> int:
    return await _sleep_then(value * 2)


INTROSPECT = Policy(
    SystemIO.nothing().allow_open_readonly().allow_read().allow_metadata().allow_close(),
    "getpgrp",
    "getppid",
)


@isolate(INTROSPECT)
def boot_facts() -> dict[str, object]:
    """What an isolate can see of how it was started."""
    import sys

    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
    with open("/proc/self/maps") as f:
        maps = f.read()
    with open("/proc/self/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    return {
        "fds": fds,
        "own_group": os.getpgrp() == os.getpid(),
        "parent": os.getppid(),
        "libseccomp_loaded": "libseccomp" in maps or "pyseccomp" in sys.modules,
        "sys_path": list(sys.path),
        "flags": [a.decode() for a in argv[1:3]],
    }


class Opaque:
    """What msgspec cannot encode."""


@isolate
def returns_opaque():
    return Opaque()


@isolate
def returns_containers(kind: str):
    return {"set": {1, (2, 3)}, "frozenset": frozenset({"a"}), "tuple": (1, [2]),
            "nested": {"s": {1, 2}}}[kind]  # fmt: skip


@isolate(Policy(default=Action.KILL_PROCESS))
def read_passwd() -> str:
    with open("/etc/passwd") as f:
        return f.read()


@isolate(Policy("socket", default=Action.KILL_PROCESS))
def connect_out(port: int) -> None:
    import socket

    socket.socket().connect(("127.0.0.1", port))

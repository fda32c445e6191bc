"""Isolates that lie to their parent: they write forged control messages (raw bytes,
with descriptors attached) onto their own control socket. Importable by reference, so
the isolate imports this module (kept light) and runs these functions confined."""

from __future__ import annotations

import array
import itertools
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from isolates.orchestrator import WorkerContext, isolate
from isolates.orchestrator._core.wire import Failure, Idle, Log, Result

#: Descriptors per forged message: the most the control channel takes (MAX_BOOT_FDS).
MANY = 64
RECORD = 64 * 1024


def control() -> socket.socket:
    """This isolate's end of its control channel as a raw socket (the isolate's main
    keeps its number; family, type and proto given: no getsockopt needed)."""
    from isolates.orchestrator._core import isolate_main

    fd = isolate_main.control_fd
    return socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, fileno=fd)


def send_raw(payload: bytes, fds: Sequence[int] = ()) -> None:
    """Send ``payload`` as the codec would (one record, or a frame), ``fds`` attached."""
    if len(payload) > RECORD:
        payload = struct.pack("<BI", 0xC1, len(payload)) + payload
    sock = control()
    try:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        sock.sendmsg([payload[:RECORD]], anc if fds else [])
        for at in range(RECORD, len(payload), RECORD):
            sock.send(payload[at : at + RECORD])
    finally:
        sock.detach()  # the boot code still owns the descriptor


def copies_of_stdout(n: int = MANY) -> list[int]:
    return [1] * n  # each arrives in the parent as a new descriptor


def log(
    message: str = "x", logger: str = "evil", level: int = 30, created: float | None = None
) -> bytes:
    when = time.time() if created is None else created
    return msgspec.msgpack.encode(Log(level, logger, message, when))


def nested(depth: int) -> bytes:
    """msgpack for ``depth`` arrays, each holding the next (None innermost)."""
    return b"\x91" * depth + b"\xc0"


# -- descriptors on every message type --------------------------------------------------


@isolate
def logs_with_fds(n: int) -> str:
    for _ in range(n):
        send_raw(log("here are some descriptors"), copies_of_stdout())
    return "done"


@isolate
def result_with_fds() -> str:
    send_raw(msgspec.msgpack.encode(Result(msgspec.msgpack.encode("forged"))), copies_of_stdout())
    os._exit(0)


@isolate
def failure_with_fds() -> None:
    failure = Failure("ValueError", True, ["forged"], "forged", "", "run")
    send_raw(msgspec.msgpack.encode(failure), copies_of_stdout())
    os._exit(0)


@isolate
def idle_with_fds() -> str:
    send_raw(msgspec.msgpack.encode(Idle()), copies_of_stdout())
    return "done"


@isolate
def frame_with_fds() -> str:
    """A multi-record Log, descriptors on its head record."""
    send_raw(log("y" * (3 * RECORD)), copies_of_stdout())
    return "done"


def _patch_ready(change: Callable[[dict[str, Any], list[int]], tuple[Any, list[int]]]) -> None:
    """Make this isolate's boot code send READY as ``change`` rewrites it (READY goes out
    through the isolate's own lean sender, ``isolate_main.send``)."""
    from isolates.orchestrator._core import isolate_main

    send = isolate_main.send

    def forged(sock: Any, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
        if msg.get("type") == "ready":
            msg, fds = change(msg, list(fds))
        send(sock, msg, fds)

    isolate_main.send = forged  # type: ignore[assignment]


def _extra_fds(ready: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    return ready, [*fds, *copies_of_stdout(MANY - 1)]


def _no_listener(ready: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    return ready, copies_of_stdout(3)


def _bad_status(ready: dict[str, Any], fds: list[int]) -> tuple[Any, list[int]]:
    return {"type": "ready", "status": {"enforcement": [1, 2]}, "namespaces": None}, fds


class ForgeReady:
    """An argument whose unpickling (in the isolate, before it confines itself) makes
    the isolate forge its READY: ``kind`` is "extra_fds", "no_listener" or "bad_status"."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        return (forge_ready, (self.kind,))


def forge_ready(kind: str) -> str:
    _patch_ready({"extra_fds": _extra_fds, "no_listener": _no_listener,
                  "bad_status": _bad_status}[kind])  # fmt: skip
    return kind


@isolate
def with_forged_ready(kind: str) -> str:
    return f"ran with {kind}"


# -- what decoding an isolate's bytes may raise -----------------------------------------


@isolate
def nested_result(depth: int) -> object:
    send_raw(msgspec.msgpack.encode(Result(nested(depth))))
    os._exit(0)


@isolate
def nested_failure_args(depth: int) -> None:
    """A Failure whose ``args`` nest ``depth`` deep (built by hand: msgspec refuses to
    encode that deep)."""
    fields = {"type": "failure", "kind": "ValueError", "builtin": True, "message": "deep",
              "traceback": "", "stage": "run"}  # fmt: skip
    body = b"".join(
        msgspec.msgpack.encode(k) + msgspec.msgpack.encode(v) for k, v in fields.items()
    )
    args = msgspec.msgpack.encode("args") + nested(depth)
    send_raw(bytes([0x80 | (len(fields) + 1)]) + body + args)
    os._exit(0)


@isolate
def nested_control(depth: int) -> None:
    """A control message that is nothing but nested arrays."""
    send_raw(nested(depth))
    os._exit(0)


# -- log records ------------------------------------------------------------------------


@isolate(timeout=2)
def log_flood(size: int = 600) -> None:
    """Log records without pause, each under a logger name never used before."""
    sock = control()
    for i in itertools.count():
        sock.send(log("f" * size, logger=f"flood.{i}"))


@isolate
def logs_named(n: int) -> str:
    for i in range(n):
        send_raw(log("named", logger=f"evil.{i}"))
    return "done"


@isolate
def log_burst(n: int) -> str:
    sock = control()
    for i in range(n):
        sock.send(log(f"burst {i}"))
    sock.detach()
    return "done"


@isolate
def log_odd_record() -> str:
    """One record of every kind of oversized or malformed field."""
    send_raw(log("m" * 1_000_000, logger="n" * 10_000))
    send_raw(log("\x1b[2J\rfake line\nsecond\tline", logger="evil\nname", level=10**9))
    send_raw(log("from the future", level=-5, created=float("nan")))
    return "done"


def honest_worker(ctx: WorkerContext) -> str:
    return "done"


def worker_logs_with_fds(ctx: WorkerContext) -> str:
    """A supervised worker: its parent's waiter thread reads these."""
    for _ in range(20):
        send_raw(log("descriptors for the supervisor"), copies_of_stdout())
    return "done"


def worker_nested_result(ctx: WorkerContext) -> None:
    send_raw(msgspec.msgpack.encode(Result(nested(200_000))))
    os._exit(0)


def log_levels(ctx: WorkerContext) -> str:
    """A legitimate supervised worker logging at two levels."""
    ctx.log.warning("careful: %d left", 3)
    ctx.log.error("it broke")
    return "logged"

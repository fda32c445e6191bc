"""Worker functions for the Supervisor tests (importable: they travel by reference)."""

from __future__ import annotations

import os
import signal
import time

import msgspec

from isolates.orchestrator import WorkerContext


class Item(msgspec.Struct, forbid_unknown_fields=True):
    n: int


class Other(msgspec.Struct, forbid_unknown_fields=True):
    text: str


def produce(ctx: WorkerContext, count: int) -> int:
    out = ctx.channel("items")
    for i in range(count):
        out.send(Item(i))
    out.close()
    return count


def consume(ctx: WorkerContext) -> int:
    return sum(item.n for item in ctx.channel("items"))


def send_wrong_type(ctx: WorkerContext) -> None:
    ctx.channel("items").send(Other("not an item"))  # type: ignore[arg-type]


def supervisor_seccomp_mode(ctx: WorkerContext) -> str:
    """Read the supervisor's Seccomp mode from /proc the moment this worker runs."""
    with open(f"/proc/{os.getppid()}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return fields["Seccomp"].strip()


def record_start(ctx: WorkerContext, path: str) -> None:
    with open(path, "w") as f:
        f.write("ran")


def echo_with_supervisor(ctx: WorkerContext) -> int:
    ch = ctx.channel("ctl")
    seen = 0
    for item in ch:
        ch.send(Item(item.n * 10))
        seen += 1
    return seen


def log_and_report(ctx: WorkerContext) -> dict[str, object]:
    ctx.log.warning("hello from %s", ctx.name)
    return {"name": ctx.name, "enforcement": ctx.status.enforcement}


def crash(ctx: WorkerContext) -> None:
    os._exit(3)


def crash_unless_told(ctx: WorkerContext) -> int:
    """Crashes until the supervisor sends 1 on 'ctl'."""
    if ctx.channel("ctl").recv().n != 1:
        os._exit(4)
    return 1


def count_reconnects(ctx: WorkerContext, expected: int) -> int:
    reconnects = 0
    while reconnects < expected:
        try:
            ctx.channel("items").recv(timeout=10)
        except Exception:
            ctx.reconnect("items", timeout=10)
            reconnects += 1
    return reconnects


def until_stopped(ctx: WorkerContext) -> str:
    while not ctx.stopping:
        time.sleep(0.01)
    return "stopped politely"


def block_forever(ctx: WorkerContext) -> None:
    ctx.channel("items").recv()  # nothing ever comes: only SIGTERM ends this


def ignore_sigterm(ctx: WorkerContext) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.01)


def violate(ctx: WorkerContext) -> None:
    os.uname()


def namespaced(ctx: WorkerContext) -> dict[str, object]:
    return {"pid": os.getpid(), "hostname": os.uname().nodename}


def scheduling_policy(ctx: WorkerContext) -> int:
    return os.sched_getscheduler(0)

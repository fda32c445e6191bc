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


def always_fail(ctx: WorkerContext, *_: object) -> None:
    raise RuntimeError("this worker always fails")


class OnRestart:
    """A worker argument whose unpickling (in the isolate, before it confines itself) is
    instant on the first boot, which creates ``marker``, and does ``then`` on every boot
    after: "sleep" (``seconds``: a restart stuck between boot and READY), or "refuse_go"
    (the isolate shuts its control channel for reading, sends READY and exits: the GO of
    the restart meets a closed channel)."""

    def __init__(self, marker: str, then: str, seconds: float = 0.0) -> None:
        self.marker, self.then, self.seconds = marker, then, seconds

    def __reduce__(self) -> tuple[object, ...]:
        return (_unpickle_on_restart, (self.marker, self.then, self.seconds))


def _unpickle_on_restart(marker: str, then: str, seconds: float) -> str:
    if not os.path.exists(marker):
        with open(marker, "w"):
            return "first boot"
    if then == "sleep":
        time.sleep(seconds)
    elif then == "refuse_go":
        _refuse_go_after_ready()
    return then


def _refuse_go_after_ready() -> None:
    """Shut the control channel for reading now (confined, the isolate could not), so
    that the parent's next send fails; leave right after READY."""
    import socket
    import sys

    from isolates.channels import Channel

    control_fd = int(sys.argv[2])  # the bootstrap's command line: path, control fd, parent
    socket.socket(fileno=os.dup(control_fd)).shutdown(socket.SHUT_RD)
    send = Channel.send

    def ready_then_leave(self: Channel[object], msg: object, fds: object = ()) -> None:
        send(self, msg, fds)  # type: ignore[arg-type]
        if type(msg).__name__ == "Ready":
            os._exit(0)

    Channel.send = ready_then_leave  # type: ignore[method-assign,assignment]

"""Stages for the supervisor benchmark's pipeline (importable by the isolates)."""

from __future__ import annotations

from typing import Any

import msgspec

from isolates.orchestrator import WorkerContext


class Number(msgspec.Struct, forbid_unknown_fields=True, array_like=True):
    value: int


def source(ctx: WorkerContext, count: int) -> int:
    out = ctx.channel("a")
    for i in range(count):
        out.send(Number(i))
    out.close()
    return count


def double(ctx: WorkerContext) -> int:
    out, seen = ctx.channel("b"), 0
    for n in ctx.channel("a"):
        out.send(Number(n.value * 2))
        seen += 1
    out.close()
    return seen


def sink(ctx: WorkerContext) -> int:
    return sum(n.value for n in ctx.channel("b"))


def nothing(ctx: WorkerContext) -> None:
    return None


def threaded(count: int) -> int:
    """The same three stages as threads in one process, over queue.SimpleQueue."""
    import queue
    import threading

    a: queue.SimpleQueue[Any] = queue.SimpleQueue()
    b: queue.SimpleQueue[Any] = queue.SimpleQueue()
    total: list[int] = []

    def stage_source() -> None:
        for i in range(count):
            a.put(Number(i))
        a.put(None)

    def stage_double() -> None:
        while (n := a.get()) is not None:
            b.put(Number(n.value * 2))
        b.put(None)

    def stage_sink() -> None:
        acc = 0
        while (n := b.get()) is not None:
            acc += n.value
        total.append(acc)

    threads = [threading.Thread(target=t) for t in (stage_source, stage_double, stage_sink)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total[0]

"""What a type checker sees of the public API (checked by mypy in .ci/typecheck, never run).

A wrong signature or a lost generic shows up as an assert_type failure in CI.
"""

from __future__ import annotations

from typing import assert_type

import msgspec

from isolates.channels import Channel, open_pair
from isolates.orchestrator import Supervisor, Worker, WorkerContext, isolate
from isolates.sandbox import (
    Action,
    Arg,
    Compat,
    CompiledPolicy,
    Enforcement,
    Landlock,
    Policy,
    Rule,
    Status,
    SystemIO,
)


class Ping(msgspec.Struct, forbid_unknown_fields=True):
    n: int


def sandbox_api() -> None:
    rs = SystemIO.nothing().allow_stdout()
    assert_type(rs, SystemIO)
    policy = Policy(rs, "getppid", Rule("kill", Arg(0) == 0), default=Action.KILL_PROCESS)
    assert_type(policy.compile(), CompiledPolicy)
    assert_type(policy.apply(), Status)
    assert_type(policy.run(len, "abc"), int)
    assert_type(policy.decide("write", 1), Action)
    confined = Policy(rs, Landlock().read("/etc"), compat=Compat.HARD).extend(Landlock())
    assert_type(confined.landlock, Landlock | None)
    assert_type(confined.apply().enforcement, Enforcement)
    assert_type(Landlock().read("/etc").plan().compat, Compat)


def channels_api() -> None:
    a, b = open_pair(Ping)
    assert_type(a, Channel[Ping])
    a.send(Ping(1))
    assert_type(b.recv(), Ping)


@isolate
def double(x: int) -> int:
    return 2 * x


@isolate(Policy(), timeout=1.0)
def name_of(p: Ping) -> str:
    return str(p.n)


async def orchestrator_api() -> None:
    assert_type(double(2), int)
    assert_type(await double.aio(2), int)
    assert_type(name_of(Ping(1)), str)
    sup = Supervisor()
    assert_type(sup.add_worker("w", lambda ctx: None), Worker)
    assert_type(sup.connect("w", sup, Ping), str)


def worker(ctx: WorkerContext) -> None:
    assert_type(ctx.name, str)

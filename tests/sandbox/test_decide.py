"""The reference decider reads a policy's rules and answers as its compiled filter does."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from isolates.sandbox import Action, Landlock, Networking, Policy, SystemIO, profiles
from isolates.sandbox.lowlevel import action_of, decide_policy, evaluate, syscall_number, uapi
from tests.sandbox.test_hardening import BUILTINS

POLICIES = {
    **{f"{b.__name__}.everything()": (lambda b=b: Policy(b.everything())) for b in BUILTINS},
    "every builtin": lambda: Policy(*(b.everything() for b in BUILTINS)),
    "default ALLOW": lambda: Policy(default=Action.ALLOW),
    "pledge stdio rpath inet dns": lambda: profiles.pledge("stdio rpath inet dns"),
    "pledge stdio proc exec": lambda: profiles.pledge("stdio proc exec error"),
    "systemd allow-list": lambda: profiles.systemd("@system-service", default_errno="EPERM"),
    "systemd deny-list": lambda: profiles.systemd("~@mount @privileged"),
    "landlock implied": lambda: Policy(Landlock().read("/etc").write("/tmp")),
}


def _samples(policy: Policy) -> Iterator[tuple[int, tuple[int, ...]]]:
    """For each syscall a rule or guard names: arguments at, beside and around every
    value a condition compares with, on both 32-bit halves."""
    values: dict[int, set[int]] = {}
    for e in policy.entries():
        for c in e.conditions:
            v = c.value if isinstance(c.value, int) else os.getpid()
            values.setdefault(e.nr, set()).update(
                {v, v + 1, v - 1, v | (1 << 32), v & ~c.mask & 0xFFFF, c.mask, 0}
            )
        values.setdefault(e.nr, {0})
    for g in policy.guards():
        nr = syscall_number(g.syscall)
        for c in g.checks:
            values.setdefault(nr, set()).update({c.mask, c.value or 0, (c.value or 0) | 1 << 32, 0})
        values.setdefault(nr, {0})
    for nr, vs in values.items():
        for v in sorted(x & ((1 << 64) - 1) for x in vs):
            for position in range(6):
                args = [0] * 6
                args[position] = v
                yield nr, tuple(args)
        if nr == uapi.syscall_number("fcntl"):  # F_SETFL with O_ASYNC needs two arguments
            yield nr, (3, uapi.F_SETFL, uapi.O_ASYNC, 0, 0, 0)


def _shipped() -> dict[str, Callable[[], Policy]]:
    """Every promise (with stdio), every systemd group, the demo's and examples' policies."""
    from isolates.orchestrator.demo import server_policy, supervisor_policy, writer_policy

    linux = [p for p in profiles.PROMISES if p not in profiles.NO_LINUX_MEANING]
    out: dict[str, Callable[[], Policy]] = {
        f"pledge stdio {p}": (lambda p=p: profiles.pledge(f"stdio {p}")) for p in linux
    }
    out |= {f"systemd {g}": (lambda g=g: profiles.systemd(g, default_errno="EPERM"))
            for g in profiles.groups()}  # fmt: skip
    out |= {
        "demo server": lambda: server_policy(8080),
        "demo writer": lambda: writer_policy("/tmp"),
        "demo supervisor": lambda: supervisor_policy(8080, "/tmp"),
        "example compute-only": lambda: Policy(default=Action.KILL_PROCESS),
        "example gather": lambda: Policy(
            Networking.nothing().allow_tcp_clients().allow_udp_clients(),
            Landlock().dns().ssl_certs().connect_tcp(443),
            SystemIO.nothing().allow_close(),
        ),
    }
    return out


SHIPPED = _shipped()


@pytest.mark.parametrize("name", [*POLICIES, *SHIPPED])
def test_the_rules_decide_as_the_compiled_filter(name: str) -> None:
    policy = {**POLICIES, **SHIPPED}[name]()
    pid = os.getpid()
    bpf = policy.compile(pid).bpf
    checked = 0
    for nr, args in _samples(policy):
        by_rules = decide_policy(policy, nr, args, self_pid=pid)
        by_filter = action_of(evaluate(bpf, nr, args))
        assert by_rules == by_filter, (name, nr, args)
        checked += 1
    assert checked > 10


def test_other_architectures_are_killed() -> None:
    policy = Policy(default=Action.ALLOW)
    assert decide_policy(policy, 39, arch=0x40000003) == Action.KILL_PROCESS
    assert decide_policy(policy, 39 | uapi.X32_SYSCALL_BIT) == Action.KILL_PROCESS
    assert decide_policy(policy, 39) == Action.ALLOW

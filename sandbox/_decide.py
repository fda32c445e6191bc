"""The reference decider: what a policy answers for one call, read from its rules.

No BPF is involved: this reads the guards and the merged entries directly, by the
precedence the compiled filter implements, so it can check a compiler (the filter must
answer the same), decide calls a trace saw, and say why a call is refused.

The precedence, in order:

1. a call of another architecture (i386 ``int 0x80``), or x32 on x86_64, is killed;
2. the guards (see ``_guard``), on the low 32 bits of the arguments: the first that
   matches answers;
3. the entries on the call's syscall whose conditions all hold: the strictest of their
   actions answers, as the kernel ranks actions (kill process, kill thread, trap, errno,
   notify, log, allow);
4. otherwise the policy's default.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from ._guard import Check, Guard
from ._merge import Entry
from ._rules import SELF_PID, Action, Cmp
from ._syscalls import number
from ._uapi import NATIVE_ARCH, X32_SYSCALL_BIT

if TYPE_CHECKING:
    from ._policy import Policy

_U32: Final = 0xFFFFFFFF
_U64: Final = (1 << 64) - 1
_COMPARE: Final = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}  # fmt: skip


def decide(
    policy: Policy,
    nr: int,
    args: Sequence[int] = (),
    *,
    arch: int = NATIVE_ARCH,
    self_pid: int | None = None,
    all_threads: bool = False,
) -> Action:
    """What ``policy`` answers for syscall ``nr`` with ``args`` (missing ones are 0).

    ``self_pid``: the pid ``SELF_PID`` conditions stand for (default: never equal to
    any argument). ``all_threads``: decide as the filter that confines a whole process.
    """
    return decide_rules(
        policy.entries(),
        policy.guards(all_threads=all_threads),
        policy.default,
        nr,
        args,
        arch=arch,
        self_pid=self_pid,
    )


def decide_rules(
    entries: Iterable[Entry],
    guards: Iterable[Guard],
    default: Action,
    nr: int,
    args: Sequence[int] = (),
    *,
    arch: int = NATIVE_ARCH,
    self_pid: int | None = None,
) -> Action:
    """``decide`` for loose parts: merged entries, guards and a default."""
    if arch != NATIVE_ARCH or (NATIVE_ARCH == 0xC000003E and nr & X32_SYSCALL_BIT):
        return Action.KILL_PROCESS
    values = [a & _U64 for a in args] + [0] * (6 - len(args))
    for guard in guards:
        if number(guard.syscall) == nr and all(_check_holds(c, values) for c in guard.checks):
            return guard.action
    matching = [
        e.action
        for e in entries
        if e.nr == nr and all(holds(c, values, self_pid) for c in e.conditions)
    ]
    return min(matching, key=lambda a: a.rank) if matching else default


def deciding(
    policy: Policy,
    nr: int,
    args: Sequence[int] = (),
    *,
    all_threads: bool = True,
    self_pid: int | None = None,
) -> tuple[Action, Guard | Entry | None]:
    """``decide``, and what decided: the guard or the merged entry that matched (None:
    the default). ``self_pid``: the pid SELF_PID conditions stand for."""
    values = [a & _U64 for a in args] + [0] * (6 - len(args))
    for guard in policy.guards(all_threads=all_threads):
        if number(guard.syscall) == nr and all(_check_holds(c, values) for c in guard.checks):
            return guard.action, guard
    matching = [
        e
        for e in policy.entries()
        if e.nr == nr and all(holds(c, values, self_pid) for c in e.conditions)
    ]
    if not matching:
        return policy.default, None
    entry = min(matching, key=lambda e: e.action.rank)
    return entry.action, entry


def holds(cmp: Cmp, args: Sequence[int], self_pid: int | None = None) -> bool:
    """Whether comparison ``cmp`` holds for these (64-bit) arguments."""
    if cmp.value is SELF_PID:
        if self_pid is None:
            return cmp.op == "!="  # an unknown pid equals no argument
        value = self_pid & _U64
    else:
        assert isinstance(cmp.value, int)
        value = cmp.value
    arg = args[cmp.arg] & _U64 if cmp.arg < len(args) else 0
    if cmp.op == "&==":
        return arg & cmp.mask == value
    return bool(_COMPARE[cmp.op](arg, value))


def _check_holds(check: Check, args: Sequence[int]) -> bool:
    low = args[check.arg] & _U32
    if check.value is None:
        return bool(low & check.mask)
    return low & check.mask == check.value

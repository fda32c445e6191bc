"""The syscalls the orchestrator itself needs inside a worker, added to every policy.

They merge like Landlock's implied rules: a user rule on the same syscall neither
conflicts with them nor is dropped.
"""

from __future__ import annotations

import os
import socket
import termios
from collections.abc import Iterable
from typing import ClassVar, Final

from isolates.sandbox import Arg, Landlock, Policy, Rule, RuleSet
from isolates.sandbox.lowlevel import uapi

_THREAD_MASK: Final = uapi.CLONE_THREAD | uapi.CLONE_VM | uapi.NAMESPACE_FLAGS


class Orchestration(RuleSet):
    """Syscalls the orchestrator needs in a worker (never ``read``/``write``, so a user's
    ``SystemIO.allow_stdout()`` stays as tight as written)."""

    kind: ClassVar[str] = "implied"


def _implied(rs: RuleSet, name: str) -> Orchestration:
    return Orchestration(*rs.rules(), name=name)


def control_rules() -> Orchestration:
    """What an isolate needs after confinement to talk to its parent: READY, the result
    and log records go over a blocking channel."""
    from isolates.channels import Channel

    return _implied(Channel.RULES, "isolates control channel")


def channel_rules() -> Orchestration:
    """A worker's own channels, blocking or async, an event loop started after
    confinement, and reopening a renewed channel's descriptor (getsockopt checks its
    family and type, ioctl FIONBIO sets its mode)."""
    from isolates.channels import ChannelRules

    return Orchestration(
        *ChannelRules.everything().rules(),
        "getsockopt",
        Rule("ioctl", Arg(1) == termios.FIONBIO),
        # Back to SCHED_OTHER after the barrier (see isolate_main._batch), and nothing else.
        Rule("sched_setscheduler", Arg(0) == 0, Arg(1) == os.SCHED_OTHER),
        name="isolates channels",
    )


def async_rules() -> Orchestration:
    """An ``async def`` function: its event loop starts inside the confined isolate."""
    from isolates.channels import ChannelRules

    return _implied(ChannelRules.nothing().allow_async().allow_loop_startup(), "isolates async")


def supervisor_rules(
    groups: Iterable[int], policy: Policy | None = None
) -> list[RuleSet | Landlock]:
    """What a confined supervisor needs to keep supervising: its channels, reaping,
    signalling its workers (by pidfd, and by process group: ``groups`` are the pids of
    the isolates it started, each its own group's leader), reading violation
    notifications, threads and sleeps for restarts, fresh channels."""
    kills = [Rule("kill", Arg(0) & 0xFFFFFFFF == -pid & 0xFFFFFFFF) for pid in groups]
    own = Orchestration(
        "wait4",
        "waitid",
        "pidfd_send_signal",
        "nanosleep",
        "clock_nanosleep",
        Rule("ioctl", Arg(1) == uapi.SECCOMP_IOCTL_NOTIF_RECV),
        Rule("ioctl", Arg(1) == uapi.SECCOMP_IOCTL_NOTIF_SEND),
        Rule("socketpair", Arg(0) == socket.AF_UNIX),
        Rule("clone", Arg(0) & _THREAD_MASK == uapi.CLONE_THREAD | uapi.CLONE_VM),
        *kills,
        name="isolates supervisor",
    )
    return [channel_rules(), own, *_counting(policy)]


def _counting(policy: Policy | None) -> list[RuleSet | Landlock]:
    """What the monitor needs to count a worker's processes (process_count.py): reading
    /proc. A policy that already opens files without Landlock reads it as it is; else
    a Landlock right to read /proc only, with the syscalls it implies."""
    if policy is None:
        return []
    opens = not policy.decide("openat", _AT_FDCWD, 0, os.O_RDONLY | os.O_CLOEXEC).denies
    if policy.landlock is None and opens:
        return [Orchestration("getdents64", "read", "close", "fstat", "newfstatat",
                              name="isolates process count")]  # fmt: skip
    return [Landlock(name="isolates process count").read("/proc")]


_AT_FDCWD: Final = -100


def worker_policy(policy: Policy, *, channels: bool, is_async: bool) -> Policy:
    """``policy`` plus the control channel and, for workers with channels or async code,
    the endpoints' syscalls: no user lists them."""
    extra: list[RuleSet] = [control_rules()]
    if channels:
        extra.append(channel_rules())
    elif is_async:
        extra.append(async_rules())
    return policy.extend(*extra)

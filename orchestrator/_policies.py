"""The syscalls the orchestrator itself needs inside a worker, added to every policy.

They merge like Landlock's implied rules: a user rule on the same syscall neither
conflicts with them nor is dropped.
"""

from __future__ import annotations

from typing import ClassVar

from isolates.sandbox import Policy, Rule, RuleSet


class Orchestration(RuleSet):
    """Syscalls the orchestrator needs in a worker (never ``read``/``write``, so a user's
    ``SystemIO.allow_stdout()`` stays as tight as written)."""

    kind: ClassVar[str] = "implied"


def _implied(rs: RuleSet, name: str) -> Orchestration:
    return Orchestration(*rs.rules(), name=name)


def control_rules() -> Orchestration:
    """What an isolate needs after confinement to talk to its parent: READY, GO, the
    result and log records go over a blocking channel."""
    from isolates.channels import Channel

    return _implied(getattr(Channel, "RULES", _FALLBACK), "isolates control channel")


def channel_rules() -> Orchestration:
    """A worker's own channels, blocking and async."""
    from isolates.channels import Channel

    blocking = getattr(Channel, "RULES", _FALLBACK)
    asynchronous = getattr(Channel, "ASYNC_RULES", _FALLBACK)
    return Orchestration(*blocking.rules(), *asynchronous.rules(), name="isolates channels")


_FALLBACK = RuleSet(
    *(Rule(s) for s in ("sendmsg", "recvmsg", "sendto", "recvfrom", "poll", "ppoll")),
)


def worker_policy(policy: Policy, *, channels: bool, is_async: bool) -> Policy:
    """``policy`` plus the control channel and, for workers with channels or async code,
    the endpoints' syscalls: no user lists them."""
    extra: list[RuleSet] = [control_rules()]
    if channels or is_async:
        extra.append(channel_rules())
    return policy.extend(*extra)

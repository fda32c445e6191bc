"""An exec'd peer for test_rules.py: reopens two channels, loads a KILL_PROCESS policy
holding only the runtime and a channel RuleSet, then echoes.

    python rules_peer.py MODE PLAIN_FD FDS_FD [DROP]

MODE is ``blocking``, ``asyncio`` or ``trio`` (the loop starts, then the policy is applied
inside it) or ``asyncio-first`` / ``trio-first`` (the policy is applied, then the loop
starts, with the loop start-up rules added). DROP is ``i`` to leave out rule ``i`` of the
set, to prove the set minimal: the peer must then die of SIGSYS.

The exchange: a receive that times out (blocking: poll; async: the loop's timer), echoes
on PLAIN_FD until the parent closes it, then one descriptor received and sent back on
FDS_FD, and a clean exit (status 0).
"""

from __future__ import annotations

import os
import sys

import anyio
import anyio._backends._asyncio
import anyio._backends._trio
import msgspec
import trio  # noqa: F401 - imported before the policy: nothing may be imported after

from isolates.channels import AsyncChannel, Channel
from isolates.sandbox import Action, Policy, RuleSet


class Ping(msgspec.Struct, forbid_unknown_fields=True):
    n: int
    blob: bytes = b""


def rules(mode: str, drop: int | None) -> RuleSet:
    chosen = Channel.RULES if mode == "blocking" else AsyncChannel.RULES
    if mode.endswith("-first"):
        chosen = chosen.allow_loop_startup()
    kept = [r for i, r in enumerate(chosen.rules()) if i != drop]
    return RuleSet(*kept, name="channel rules under test")


def confine(mode: str, drop: int | None) -> None:
    Policy(rules(mode, drop), default=Action.KILL_PROCESS).apply()


def blocking(plain: Channel[Ping], fds: Channel[Ping]) -> None:
    try:
        plain.send(plain.recv(timeout=0.001))
    except TimeoutError:
        pass
    for msg in plain:
        plain.send(msg)
    msg, received = fds.recv_with_fds()
    fds.send(msg, fds=received)
    for fd in received:
        os.close(fd)
    fds.recv()  # until the parent closes


async def echo(
    plain: AsyncChannel[Ping], fds: AsyncChannel[Ping], mode: str, drop: int | None
) -> None:
    if not mode.endswith("-first"):
        confine(mode, drop)  # the loop is running already
    with anyio.move_on_after(0.001):
        await plain.send(await plain.receive())
    async for msg in plain:
        await plain.send(msg)
    msg, received = await fds.receive_with_fds()
    await fds.send(msg, fds=received)
    for fd in received:
        os.close(fd)
    async for _ in fds:
        pass
    await plain.aclose()
    await fds.aclose()


def main() -> None:
    mode, plain_fd, fds_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    drop = int(sys.argv[4]) if len(sys.argv) > 4 else None
    if mode == "blocking":
        plain, fds = Channel.from_fd(plain_fd, Ping), Channel.from_fd(fds_fd, Ping, max_fds=1)
        confine(mode, drop)
        try:
            blocking(plain, fds)
        except EOFError:
            pass
        plain.close()
        fds.close()
        return
    # Reopened before any policy: from_fd checks the socket (getsockopt).
    aplain = AsyncChannel.from_fd(plain_fd, Ping)
    afds = AsyncChannel.from_fd(fds_fd, Ping, max_fds=1)
    if mode.endswith("-first"):
        confine(mode, drop)
    anyio.run(echo, aplain, afds, mode, drop, backend=mode.removesuffix("-first"))


if __name__ == "__main__":
    main()

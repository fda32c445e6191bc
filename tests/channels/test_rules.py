"""Channel.RULES and AsyncChannel.RULES are complete and minimal, proven in exec'd peers.

Each peer loads ``Policy(<the set>, default=Action.KILL_PROCESS)`` (plus the runtime every
policy holds), echoes thousands of messages, passes a descriptor back, closes and exits 0.
Leaving any one rule out kills it with SIGSYS. The peers run concurrently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest

from isolates.channels import AsyncChannel, Channel, ChannelClosed, ChannelRules, open_pair

PEER = str(Path(__file__).with_name("rules_peer.py"))
ROUND_TRIPS = 1500  # 3000 messages, and one of 300 kB (five records)


class Ping(msgspec.Struct, forbid_unknown_fields=True):
    n: int
    blob: bytes = b""


def exchange(mode: str, drop: int | None = None) -> int:
    """Run one peer through the whole exchange; its exit status."""
    plain, plain_peer = open_pair(Ping)
    fds, fds_peer = open_pair(Ping, max_fds=1)
    ends = (plain_peer.fileno(), fds_peer.fileno())
    argv = [sys.executable, PEER, mode, *map(str, ends), *([str(drop)] if drop is not None else [])]
    proc = subprocess.Popen(argv, pass_fds=ends)
    plain_peer.close()
    fds_peer.close()
    try:
        talk(plain, fds)
    except ChannelClosed:
        assert drop is not None, f"the {mode} peer died"
    finally:
        plain.close()
        fds.close()
    return proc.wait(timeout=60)


def talk(plain: Channel[Ping], fds: Channel[Ping]) -> None:
    for n in range(ROUND_TRIPS):
        plain.send(Ping(n))
        assert plain.recv(timeout=30) == Ping(n)
    big = Ping(-1, b"x" * 300_000)
    plain.send(big)
    assert plain.recv(timeout=30) == big
    plain.close()
    r, w = os.pipe()
    try:
        fds.send(Ping(0), fds=[r])
        _, back = fds.recv_with_fds(timeout=30)
        assert [os.fstat(fd).st_ino for fd in back] == [os.fstat(r).st_ino]
        os.close(back[0])
    finally:
        os.close(r)
        os.close(w)


STARTUP = len(ChannelRules.nothing().allow_loop_startup().rules())
RUNS = [
    ("blocking", None), ("asyncio", None), ("trio", None),
    ("asyncio-first", None), ("trio-first", None),
    *(("blocking", i) for i in range(len(Channel.RULES.rules()))),
    # A syscall either loop needs is needed: trio makes every one asyncio makes, and more.
    *(("trio", i) for i in range(len(AsyncChannel.RULES.rules()))),
    *(("trio-first", len(AsyncChannel.RULES.rules()) + i) for i in range(STARTUP)),
]  # fmt: skip


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str, int | None], int]:
    with ThreadPoolExecutor(max_workers=len(RUNS)) as pool:
        statuses = pool.map(lambda run: exchange(*run), RUNS)
        return dict(zip(RUNS, statuses, strict=True))


@pytest.mark.parametrize("mode", ["blocking", "asyncio", "trio", "asyncio-first", "trio-first"])
def test_the_set_is_complete(outcomes: dict[tuple[str, int | None], int], mode: str) -> None:
    assert outcomes[mode, None] == 0


def _rule_of(mode: str, index: int) -> str:
    rules = Channel.RULES if mode == "blocking" else AsyncChannel.RULES
    if mode.endswith("-first"):
        rules = rules.allow_loop_startup()
    return repr(rules.rules()[index])


@pytest.mark.parametrize(("mode", "drop"), [run for run in RUNS if run[1] is not None])
def test_every_rule_is_needed(
    outcomes: dict[tuple[str, int | None], int], mode: str, drop: int
) -> None:
    assert outcomes[mode, drop] == -signal.SIGSYS, f"{mode} works without {_rule_of(mode, drop)}"

"""TCP ports and IPC scopes against the kernel, each in a forked child."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from isolates.sandbox import Compat, Landlock
from isolates.sandbox._landlock import Scope, apply_plan
from tests.sandbox.test_landlock_child import attempt, run


def confine(ll: Landlock) -> None:
    status = apply_plan(ll.plan(Compat.HARD))
    assert status.enforcement == "full", status


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on right now (held open together, so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture
def servers() -> Iterator[list[int]]:
    """Two TCP servers listening on 127.0.0.1; yields their ports."""
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    try:
        yield [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def tcp(action: str, port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return attempt(getattr(sock, action), ("127.0.0.1", port))


def test_bind_tcp_binds_that_port_only() -> None:
    mine, other = free_ports(2)

    def child() -> tuple[str, str]:
        confine(Landlock().bind_tcp(mine))
        return tcp("bind", mine), tcp("bind", other)

    assert run(child) == ("ok", "EACCES")


def test_bind_tcp_zero_means_an_ephemeral_port() -> None:
    (fixed,) = free_ports(1)

    def child() -> tuple[str, str]:
        confine(Landlock().bind_tcp(0))
        return tcp("bind", 0), tcp("bind", fixed)

    assert run(child) == ("ok", "EACCES")


def test_connect_tcp_connects_to_that_port_only(servers: list[int]) -> None:
    allowed, other = servers

    def child() -> tuple[str, str]:
        confine(Landlock().connect_tcp(allowed))
        return tcp("connect", allowed), tcp("connect", other)

    assert run(child) == ("ok", "EACCES")


def test_connect_tcp_also_handles_bind(servers: list[int]) -> None:
    (port,) = free_ports(1)

    def child() -> str:
        confine(Landlock().connect_tcp(servers[0]))
        return tcp("bind", port)

    assert run(child) == "EACCES"


def test_deny_tcp_denies_all_tcp_but_not_udp(servers: list[int]) -> None:
    def child() -> tuple[str, str, str]:
        confine(Landlock().deny_tcp())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp_bind = attempt(udp.bind, ("127.0.0.1", 0))
        return tcp("connect", servers[0]), tcp("bind", 0), udp_bind

    assert run(child) == ("EACCES", "EACCES", "ok")


def test_fs_rules_leave_tcp_alone(servers: list[int], tmp_path: Path) -> None:
    def child() -> str:
        confine(Landlock().read(tmp_path))
        return tcp("connect", servers[0])

    assert run(child) == "ok"


@pytest.fixture
def outsider() -> Iterator[int]:
    """A process outside any Landlock domain: a sleeping child of the test runner."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the outsider
        time.sleep(30)
        os._exit(0)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_signal_scope_blocks_kill_outside_the_domain(outsider: int) -> None:
    def child() -> tuple[str, str, str]:
        confine(Landlock().scope(Scope.SIGNAL))
        inner = os.fork()
        if inner == 0:  # pragma: no cover - in the domain, as a child of the confined one
            time.sleep(30)
            os._exit(0)
        inside = attempt(os.kill, inner, signal.SIGKILL)
        os.waitpid(inner, 0)
        return attempt(os.kill, outsider, 0), inside, attempt(os.kill, os.getpid(), 0)

    assert run(child) == ("EPERM", "ok", "ok")


def test_without_the_signal_scope_kill_outside_works(outsider: int, tmp_path: Path) -> None:
    def child() -> str:
        confine(Landlock().read(tmp_path).scope(Scope.ABSTRACT_UNIX_SOCKET))
        return attempt(os.kill, outsider, 0)

    assert run(child) == "ok"


def test_abstract_socket_scope_blocks_sockets_made_outside() -> None:
    outside = f"\0isolates-test-outside-{os.getpid()}"
    inside = f"\0isolates-test-inside-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(outside)
        server.listen()

        def child() -> tuple[str, str]:
            confine(Landlock().scope(Scope.ABSTRACT_UNIX_SOCKET))
            with socket.socket(socket.AF_UNIX) as own:
                own.bind(inside)
                own.listen()
                return connect_unix(outside), connect_unix(inside)

        assert run(child) == ("EPERM", "ok")


def test_without_the_abstract_scope_connecting_outside_works() -> None:
    name = f"\0isolates-test-open-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(name)
        server.listen()

        def child() -> str:
            confine(Landlock().scope(Scope.SIGNAL))
            return connect_unix(name)

        assert run(child) == "ok"


def connect_unix(name: str) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        return attempt(sock.connect, name)

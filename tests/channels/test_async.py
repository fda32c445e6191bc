"""AsyncChannel on asyncio and trio: messages, EOF, cancellation, closing, backpressure,
descriptors, fairness, and handing ends over."""

from __future__ import annotations

import fcntl
import os
import socket

import anyio
import anyio.abc
import msgspec
import pytest

from isolates.channels import (
    AsyncChannel,
    ChannelClosed,
    LocalChannelError,
    RemoteChannelError,
    open_async_pair,
    open_pair,
)

pytestmark = pytest.mark.anyio


class Job(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    id: int


class Blob(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    data: bytes


Msg = Job | Blob


async def test_messages_and_async_iteration_until_the_peer_closes() -> None:
    a, b = open_async_pair(Msg, name="jobs")
    async with a, b:
        for n in range(10):
            await a.send(Job(n))
        await a.send(Blob(b"end"))
        await a.aclose()
        assert [m async for m in b] == [*(Job(n) for n in range(10)), Blob(b"end")]
        with pytest.raises(ChannelClosed, match="channel 'jobs': the peer closed it"):
            await b.receive()


async def test_it_is_an_anyio_object_stream() -> None:
    a, b = open_async_pair(Job)
    assert isinstance(a, anyio.abc.ObjectSendStream)
    assert isinstance(b, anyio.abc.ObjectReceiveStream)
    await a.aclose()
    await b.aclose()


async def test_a_large_message_crosses_while_both_tasks_run() -> None:
    a, b = open_async_pair(Blob)
    big = Blob(os.urandom(1_000_000))
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.send, big)
        assert await b.receive() == big
    await a.aclose()
    await b.aclose()


async def test_a_cancelled_receive_leaves_the_channel_usable() -> None:
    a, b = open_async_pair(Job)
    with anyio.move_on_after(0.01) as scope:
        await b.receive()
    assert scope.cancelled_caught
    await a.send(Job(1))
    assert await b.receive() == Job(1)
    await a.aclose()
    await b.aclose()


async def test_a_send_to_a_full_socket_waits_for_the_reader() -> None:
    a, b = open_async_pair(Job)
    sent = 0
    with anyio.move_on_after(0.2) as scope:
        while True:
            await a.send(Job(sent))
            sent += 1
    assert scope.cancelled_caught, "send buffered without bound instead of waiting"
    assert [(await b.receive()).id for _ in range(sent)] == list(range(sent))
    await a.aclose()
    await b.aclose()


async def test_closing_wakes_a_task_waiting_to_receive() -> None:
    a, b = open_async_pair(Job, name="jobs")
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await b.receive()
        except LocalChannelError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        await b.aclose()
    assert "channel 'jobs' was closed while waiting" in str(errors[0])
    await a.aclose()


async def test_using_a_closed_end_is_a_local_error() -> None:
    a, b = open_async_pair(Job)
    await a.aclose()
    with pytest.raises(LocalChannelError, match="closed on this side"):
        await a.send(Job(1))
    with pytest.raises(LocalChannelError, match="closed on this side"):
        await a.receive()
    await b.aclose()


async def test_a_busy_channel_lets_other_tasks_run() -> None:
    a, b = open_async_pair(Job)
    ticks = 0
    received = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    for n in range(200):
        await a.send(Job(n))
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.lowlevel.checkpoint()  # the ticker is running now
        start = ticks
        for _ in range(200):
            await b.receive()  # every message is there already: no waiting
            received += 1
        tg.cancel_scope.cancel()
    assert received == 200
    assert ticks - start >= 2, "200 messages taken without letting another task run"
    await a.aclose()
    await b.aclose()


async def test_garbage_from_the_peer_kills_the_channel() -> None:
    a, b = open_async_pair(Job, name="jobs")
    with socket.socket(fileno=os.dup(a.fileno())) as peer:
        peer.send(msgspec.msgpack.encode({"type": "Job", "id": "x"}))
    with pytest.raises(RemoteChannelError, match=r"channel 'jobs'.*Expected `int`"):
        await b.receive()
    with pytest.raises(RemoteChannelError, match="Expected `int`"):
        await b.send(Job(1))
    await a.aclose()
    await b.aclose()


async def test_descriptors_pass_close_on_exec() -> None:
    a, b = open_async_pair(Job, max_fds=1)
    r, w = os.pipe()
    await a.send(Job(1), fds=[w])
    msg, fds = await b.receive_with_fds()
    assert msg == Job(1)
    assert fcntl.fcntl(fds[0], fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    os.write(fds[0], b"!")
    assert os.read(r, 1) == b"!"
    for fd in (r, w, *fds):
        os.close(fd)
    await a.aclose()
    await b.aclose()


async def test_a_blocking_end_becomes_an_async_one_and_talks_to_its_peer() -> None:
    blocking, peer = open_pair(Job, name="handover")
    a = AsyncChannel.from_channel(blocking)
    assert blocking.closed
    assert a.name == "handover"
    await a.send(Job(1))
    assert await anyio.to_thread.run_sync(peer.recv) == Job(1)
    await anyio.to_thread.run_sync(peer.send, Job(2))
    assert await a.receive() == Job(2)
    await a.aclose()
    peer.close()


async def test_from_fd_reopens_a_detached_end() -> None:
    a, b = open_async_pair(Job)
    again = AsyncChannel.from_fd(b.detach(), Job)
    await a.send(Job(3))
    assert await again.receive() == Job(3)
    await a.aclose()
    await again.aclose()

"""The blocking Channel: messages, EOF, timeouts, backpressure, descriptors, and a peer
that misbehaves (played by the raw socket of the other end)."""

from __future__ import annotations

import array
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from isolates.channels import (
    Channel,
    ChannelClosed,
    LocalChannelError,
    RemoteChannelError,
    open_pair,
)


class Job(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    id: int


class Stop(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    reason: str = ""


class Blob(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    data: bytes


Msg = Job | Stop | Blob


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def misbehave(channel: Channel[Any], record: bytes, fds: list[int] | None = None) -> None:
    """Send a raw record from ``channel``'s socket, as a peer that ignores the protocol."""
    with socket.socket(fileno=os.dup(channel.fileno())) as sock:
        if fds:
            sock.sendmsg([record], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            sock.send(record)


@pytest.fixture
def pair() -> Iterator[tuple[Channel[Msg], Channel[Msg]]]:
    a, b = open_pair(Msg, name="jobs")
    yield a, b
    a.close()
    b.close()


# -- messages and ends ---------------------------------------------------------------------


def test_messages_arrive_in_order_routed_by_type(pair: tuple[Channel[Msg], Channel[Msg]]) -> None:
    a, b = pair
    for msg in (Job(1), Stop("done"), Job(2)):
        a.send(msg)
    seen = []
    for _ in range(3):
        match b.recv():
            case Job(id=n):
                seen.append(n)
            case Stop(reason=why):
                seen.append(why)
    assert seen == [1, "done", 2]


def test_iteration_ends_when_the_peer_closes(pair: tuple[Channel[Msg], Channel[Msg]]) -> None:
    a, b = pair
    for n in range(5):
        a.send(Job(n))
    a.close()
    assert list(b) == [Job(n) for n in range(5)]
    with pytest.raises(ChannelClosed, match="channel 'jobs': the peer closed it"):
        b.recv()


def test_a_message_larger_than_a_record_crosses_whole(
    pair: tuple[Channel[Msg], Channel[Msg]],
) -> None:
    a, b = pair
    big = Blob(os.urandom(1_000_000))
    sender = threading.Thread(target=a.send, args=(big,))
    sender.start()
    assert b.recv() == big
    sender.join()


def test_a_timeout_raises_and_leaves_the_channel_usable(
    pair: tuple[Channel[Msg], Channel[Msg]],
) -> None:
    a, b = pair
    with pytest.raises(TimeoutError, match=r"channel 'jobs': no message within 0\.01 s"):
        b.recv(timeout=0.01)
    a.send(Job(1))
    assert b.recv(timeout=5) == Job(1)


def test_a_send_to_a_full_socket_blocks_until_the_peer_reads(
    pair: tuple[Channel[Msg], Channel[Msg]],
) -> None:
    a, b = pair
    count = 5000  # far more than the socket buffer holds
    sender = threading.Thread(target=lambda: [a.send(Job(n)) for n in range(count)])
    sender.start()
    sender.join(timeout=0.2)
    assert sender.is_alive(), "send buffered without bound instead of blocking"
    assert [b.recv().id for _ in range(count)] == list(range(count))  # type: ignore[union-attr]
    sender.join()


def test_using_a_closed_end_is_a_local_error(pair: tuple[Channel[Msg], Channel[Msg]]) -> None:
    a, _ = pair
    a.close()
    a.close()  # idempotent
    with pytest.raises(LocalChannelError, match="channel 'jobs' is closed on this side"):
        a.send(Job(1))
    with pytest.raises(LocalChannelError, match="closed on this side"):
        a.recv()


def test_sending_to_a_closed_peer_is_channel_closed(
    pair: tuple[Channel[Msg], Channel[Msg]],
) -> None:
    a, b = pair
    b.close()
    with pytest.raises(ChannelClosed):
        a.send(Job(1))


def test_the_wrong_type_is_refused_before_anything_is_sent(
    pair: tuple[Channel[Msg], Channel[Msg]],
) -> None:
    a, b = pair
    with pytest.raises(LocalChannelError, match=r"carries Job \| Stop \| Blob, not dict"):
        a.send({"id": 1})  # type: ignore[arg-type]
    a.send(Job(1))
    assert b.recv() == Job(1)


def test_context_manager_closes() -> None:
    a, b = open_pair(Job)
    with a:
        a.send(Job(1))
    assert a.closed
    assert list(b) == [Job(1)]
    b.close()


# -- a misbehaving peer --------------------------------------------------------------------


def test_undecodable_bytes_kill_the_channel_for_good(
    pair: tuple[Channel[Msg], Channel[Msg]],
) -> None:
    a, b = pair
    a.send(Job(1))
    misbehave(a, msgspec.msgpack.encode({"type": "Job", "id": "one"}))
    a.send(Job(2))
    assert b.recv() == Job(1)
    with pytest.raises(RemoteChannelError, match=r"channel 'jobs'.*Expected `int`, got `str`"):
        b.recv()
    for again in (b.recv, lambda: b.send(Job(3))):
        with pytest.raises(RemoteChannelError, match="Expected `int`"):
            again()


def test_a_record_larger_than_any_sender_makes_is_a_remote_error(
    pair: tuple[Channel[Msg], Channel[Msg]],
) -> None:
    a, b = pair
    misbehave(a, b"x" * 100_000)
    with pytest.raises(RemoteChannelError, match="record of 100000 bytes"):
        b.recv()


def test_a_peer_dying_mid_message_gives_a_truncated_close_not_a_hang() -> None:
    a, b = open_pair(Blob, name="upload")
    child = subprocess.Popen(
        [sys.executable, "-c", _BIG_SENDER, str(a.fileno())], pass_fds=[a.fileno()]
    )
    a.close()
    assert b.recv(timeout=30) == Blob(b"ready")
    ready, _, _ = select.select([b.fileno()], [], [], 30)
    assert ready, "the child never started its big message"
    child.send_signal(signal.SIGKILL)
    child.wait()
    with pytest.raises(ChannelClosed, match="in the middle of a message") as closed:
        list(b)
    assert closed.value.truncated
    b.close()


_BIG_SENDER = textwrap.dedent(
    """
    import sys, msgspec
    from isolates.channels import Channel
    class Blob(msgspec.Struct, tag=True, forbid_unknown_fields=True):
        data: bytes
    ch = Channel.from_fd(int(sys.argv[1]), Blob, name="upload")
    ch.send(Blob(b"ready"))
    ch.send(Blob(b"x" * 10_000_000))  # blocks: nobody reads; killed half-way
    """
)


# -- descriptors ---------------------------------------------------------------------------


def test_received_descriptors_are_close_on_exec_and_work() -> None:
    a, b = open_pair(Job, max_fds=2)
    r, w = os.pipe()
    a.send(Job(1), fds=[r, w])
    msg, fds = b.recv_with_fds()
    assert msg == Job(1)
    assert all(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC for fd in fds)
    os.write(fds[1], b"hi")
    assert os.read(r, 2) == b"hi"
    for fd in (r, w, *fds):
        os.close(fd)
    a.close()
    b.close()


def test_recv_closes_descriptors_it_does_not_return() -> None:
    a, b = open_pair(Job, max_fds=1)
    r, w = os.pipe()
    before = open_fds()
    a.send(Job(1), fds=[r])
    assert b.recv() == Job(1)
    assert open_fds() == before
    for fd in (r, w):
        os.close(fd)
    a.close()
    b.close()


def test_more_descriptors_than_max_fds_are_closed_and_blamed_on_the_peer() -> None:
    a, b = open_pair(Job, max_fds=1, name="files")
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(3)]
    before = open_fds()
    misbehave(a, msgspec.msgpack.encode(Job(1)), fds)
    with pytest.raises(RemoteChannelError, match="more than the 1 descriptors this channel"):
        b.recv()
    assert open_fds() <= before
    for fd in fds:
        os.close(fd)
    a.close()
    b.close()


def test_descriptors_on_a_channel_without_any_are_never_installed() -> None:
    a, b = open_pair(Job)  # max_fds=0
    fd = os.open("/dev/null", os.O_RDONLY)
    before = open_fds()
    misbehave(a, msgspec.msgpack.encode(Job(1)), [fd])
    assert b.recv() == Job(1)
    assert open_fds() <= before
    os.close(fd)
    a.close()
    b.close()


def test_sending_more_descriptors_than_declared_is_a_local_error() -> None:
    a, b = open_pair(Job, max_fds=1, name="files")
    with pytest.raises(LocalChannelError, match="passes at most 1 descriptors per message"):
        a.send(Job(1), fds=[0, 1])
    a.close()
    b.close()


def test_descriptors_ride_with_a_large_message() -> None:
    a, b = open_pair(Blob, max_fds=1)
    r, w = os.pipe()
    big = Blob(b"y" * 300_000)
    sender = threading.Thread(target=a.send, args=(big,), kwargs={"fds": [w]})
    sender.start()
    msg, fds = b.recv_with_fds()
    sender.join()
    assert msg == big
    assert len(fds) == 1
    assert os.fstat(fds[0]).st_ino == os.fstat(w).st_ino
    for fd in (r, w, *fds):
        os.close(fd)
    a.close()
    b.close()


def test_closing_mid_message_closes_the_descriptors_it_came_with() -> None:
    a, b = open_pair(Blob, max_fds=1)
    fd = os.open("/dev/null", os.O_RDONLY)
    before = open_fds()
    misbehave(a, struct.pack("<BI", 0xC1, 1000) + b"partial", [fd])
    with pytest.raises(TimeoutError):
        b.recv(timeout=0.01)  # the head (and its descriptor) arrived, the rest never does
    assert len(open_fds() - before) == 1
    b.close()
    assert open_fds() <= before
    os.close(fd)
    a.close()


# -- handing an end over -------------------------------------------------------------------


def test_from_fd_refuses_a_descriptor_that_is_not_a_channel() -> None:
    r, w = os.pipe()
    with pytest.raises(LocalChannelError, match=f"descriptor {r} is not an open socket"):
        Channel.from_fd(r, Job)
    os.close(r)
    os.close(w)
    stream, other = socket.socketpair()
    with pytest.raises(LocalChannelError, match="AF_UNIX SOCK_STREAM socket, not one end"):
        Channel.from_fd(stream.fileno(), Job)
    stream.close()
    other.close()


def test_a_failed_reopen_leaves_the_descriptor_to_the_caller() -> None:
    a, b = open_pair(Job)
    fd = b.detach()
    with pytest.raises(LocalChannelError, match="msgspec cannot carry"):
        Channel.from_fd(fd, object())
    again = Channel.from_fd(fd, Job)
    a.send(Job(1))
    assert again.recv() == Job(1)
    a.close()
    again.close()


def test_a_channel_is_made_on_a_seqpacket_socket_only() -> None:
    stream, other = socket.socketpair()
    with pytest.raises(LocalChannelError, match="not one end of a channel"):
        Channel(stream, Job)
    stream.close()
    other.close()


def test_detach_refuses_in_the_middle_of_a_message() -> None:
    a, b = open_pair(Blob)
    misbehave(a, struct.pack("<BI", 0xC1, 1000) + b"partial")
    with pytest.raises(TimeoutError):
        b.recv(timeout=0.01)
    with pytest.raises(LocalChannelError, match="holds received data"):
        b.detach()
    a.close()
    b.close()


def test_detach_hands_over_a_working_end() -> None:
    a, b = open_pair(Job)
    fd = b.detach()
    assert b.closed
    again = Channel.from_fd(fd, Job)
    a.send(Job(1))
    assert again.recv() == Job(1)
    a.close()
    again.close()


def test_an_exec_d_peer_reopens_its_end_by_descriptor_number() -> None:
    a, b = open_pair(Msg, max_fds=1, name="worker")
    child = subprocess.Popen(
        [sys.executable, "-c", _ECHO_PEER, str(b.fileno())], pass_fds=[b.fileno()]
    )
    b.close()
    r, w = os.pipe()
    a.send(Job(7))
    a.send(Blob(b"hello"), fds=[w])
    a.send(Stop("bye"))
    assert a.recv(timeout=30) == Job(8)
    msg, fds = a.recv_with_fds(timeout=30)
    assert msg == Blob(b"olleh")
    os.write(fds[0], b"!")  # the child's copy of the pipe, passed back
    assert os.read(r, 1) == b"!"
    assert a.recv(timeout=30) == Stop("bye")
    a.close()
    assert child.wait(timeout=30) == 0
    for fd in (r, w, *fds):
        os.close(fd)


_ECHO_PEER = textwrap.dedent(
    """
    import os, sys, msgspec
    from isolates.channels import Channel
    class Job(msgspec.Struct, tag=True, forbid_unknown_fields=True):
        id: int
    class Stop(msgspec.Struct, tag=True, forbid_unknown_fields=True):
        reason: str = ""
    class Blob(msgspec.Struct, tag=True, forbid_unknown_fields=True):
        data: bytes
    ch = Channel.from_fd(int(sys.argv[1]), Job | Stop | Blob, max_fds=1, name="worker")
    while True:
        msg, fds = ch.recv_with_fds()
        assert all(not os.get_inheritable(fd) for fd in fds)
        match msg:
            case Job(id=n): ch.send(Job(n + 1))
            case Blob(data=d): ch.send(Blob(d[::-1]), fds=fds)
            case Stop(): ch.send(msg); break
    for _ in ch: pass  # until the parent closes
    """
)

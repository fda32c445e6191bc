"""A hostile peer against every receive path: the codec, the blocking endpoint (fast path,
timeouts, descriptors) and the async one. Whatever it writes, each path raises
RemoteChannelError, the channel stays dead afterwards, descriptors that came with the bad
message are closed, and a well-formed message on a fresh channel still decodes."""

from __future__ import annotations

import array
import os
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgspec
import pytest

from isolates.channels import AsyncChannel, Channel, Codec, RemoteChannelError


class Lax(msgspec.Struct):
    """Declared without forbid_unknown_fields: its own decoder would drop ``extra``."""

    n: int


class Tagged(msgspec.Struct, tag=True):
    n: int


class Other(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    s: str


RECORD = 64 * 1024
EXTRA = msgspec.msgpack.encode({"n": 1, "extra": 2})
NESTED = b"\x91" * 200_000 + b"\xc0"  # a frame over several records
NESTED_RECORD = b"\x91" * 60_000 + b"\xc0"  # one record: the fast path's
#: A well-formed Lax padded past one record (a frame): same unknown-field check.
BIG_EXTRA = msgspec.msgpack.encode({"n": 1, "pad": "x" * (2 * RECORD), "extra": 2})

#: (message type, hostile payload, what the error says, a good message of that type)
CASES = {
    "extra-field": (Lax, EXTRA, "unknown field `extra`", Lax(1)),
    "extra-field-framed": (Lax, BIG_EXTRA, "unknown field `pad`", Lax(1)),
    "extra-field-in-union": (
        Tagged | Other,
        msgspec.msgpack.encode({"type": "Tagged", "n": 1, "extra": 2}),
        "unknown field `extra`",
        Tagged(1),
    ),
    "extra-field-in-list": (list[Lax], msgspec.msgpack.encode([{"n": 1, "x": 0}]),
                            "unknown field `x`", [Lax(1)]),
    "nested-framed": (list[Any], NESTED, "not a", [1]),
    "nested-record": (list[Any], NESTED_RECORD, "not a", [1]),
}  # fmt: skip


def send_raw(sock: socket.socket, payload: bytes, fds: list[int] | None = None) -> None:
    """Write ``payload`` as a channel peer would (one record, or a frame), ``fds`` on the
    first record."""
    if len(payload) > RECORD:
        payload = struct.pack("<BI", 0xC1, len(payload)) + payload
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sock.sendmsg([payload[:RECORD]], anc)
    for at in range(RECORD, len(payload), RECORD):
        sock.send(payload[at : at + RECORD])


def raw_pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def start_sending(
    sock: socket.socket, *payloads: bytes, fds: list[int] | None = None
) -> threading.Thread:
    """Send ``payloads`` from a thread (a frame does not fit in the socket's buffer);
    it ends when done or once the receiver has closed its end."""

    def run() -> None:
        try:
            for i, payload in enumerate(payloads):
                send_raw(sock, payload, fds if i == 0 else None)
        except OSError:  # EPIPE: the receiver refused the first and closed
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def copies(fd: int) -> int:
    """How many of our descriptors refer to the same open file as ``fd`` does."""
    target = os.readlink(f"/proc/self/fd/{fd}")
    return sum(
        1 for name in os.listdir("/proc/self/fd") if _readlink(f"/proc/self/fd/{name}") == target
    )


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


@pytest.fixture
def pipe() -> Iterator[int]:
    """A descriptor to attach to hostile messages (one end of a socketpair: nothing else
    refers to its file, so its copies can be counted)."""
    mine, other = socket.socketpair()
    with mine, other:
        yield mine.fileno()


# -- the codec ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_the_codec_refuses_it_on_feed_and_feed_with_fds(case: str) -> None:
    type_, payload, says, good = CASES[case]
    for feed in (lambda c, r: c.feed(r), lambda c, r: c.feed_with_fds(r, [])):
        codec = Codec(type_, name="hostile")
        records = _records(payload)
        with pytest.raises(RemoteChannelError, match=says):
            for record in records:
                feed(codec, record)
        assert codec.error is not None
    fresh = Codec(type_)
    assert fresh.feed(fresh.encode(good)) == [good]


def _records(payload: bytes) -> list[bytes]:
    if len(payload) <= RECORD:
        return [payload]
    frame = struct.pack("<BI", 0xC1, len(payload)) + payload
    return [frame[i : i + RECORD] for i in range(0, len(frame), RECORD)]


def test_the_codecs_one_decode_entry_point_refuses_unknown_fields() -> None:
    codec = Codec(Lax)
    assert codec.decode(msgspec.msgpack.encode(Lax(1))) == Lax(1)
    with pytest.raises(msgspec.ValidationError, match="unknown field `extra`"):
        codec.decode(EXTRA)


# -- the blocking endpoint ----------------------------------------------------------------

BLOCKING: dict[str, Callable[[Channel[Any]], Any]] = {
    "recv": lambda ch: ch.recv(),
    "recv-timeout": lambda ch: ch.recv(timeout=1),
    "recv_with_fds": lambda ch: ch.recv_with_fds(),
    "recv_with_fds-timeout": lambda ch: ch.recv_with_fds(timeout=1),
    "iter": lambda ch: next(iter(ch)),
}


@pytest.mark.parametrize("max_fds", [0, 2])
@pytest.mark.parametrize("path", BLOCKING)
@pytest.mark.parametrize("case", CASES)
def test_every_blocking_receive_path_refuses_it_and_stays_dead(
    case: str, path: str, max_fds: int
) -> None:
    type_, payload, says, good = CASES[case]
    receive = BLOCKING[path]
    raw, theirs = raw_pair()
    with raw:
        with Channel.from_fd(theirs.detach(), type_, max_fds=max_fds, name="hostile") as ch:
            # The good message after the bad one is never delivered: the channel is dead.
            sender = start_sending(raw, payload, msgspec.msgpack.encode(good))
            with pytest.raises(RemoteChannelError, match=f"channel 'hostile'.*{says}") as first:
                receive(ch)
            for again in (ch.recv, lambda: ch.recv(timeout=1), ch.recv_with_fds):
                with pytest.raises(RemoteChannelError) as later:
                    again()
                assert later.value is first.value
        sender.join()
    raw, theirs = raw_pair()
    with raw, Channel.from_fd(theirs.detach(), type_, max_fds=max_fds) as fresh:
        send_raw(raw, msgspec.msgpack.encode(good))
        assert receive(fresh) in (good, (good, []))


@pytest.mark.parametrize("path", ["recv", "recv_with_fds", "recv_with_fds-timeout"])
@pytest.mark.parametrize("case", ["extra-field", "extra-field-framed", "nested-framed"])
def test_descriptors_on_a_refused_message_are_closed(case: str, path: str, pipe: int) -> None:
    type_, payload, _, _ = CASES[case]
    raw, theirs = raw_pair()
    with raw, Channel.from_fd(theirs.detach(), type_, max_fds=2) as ch:
        sender = start_sending(raw, payload, fds=[pipe, pipe])
        with pytest.raises(RemoteChannelError):
            BLOCKING[path](ch)
        sender.join()
        assert copies(pipe) == 1


# -- the async endpoint -------------------------------------------------------------------

ASYNC: dict[str, Callable[[AsyncChannel[Any]], Awaitable[Any]]] = {
    "receive": lambda ch: ch.receive(),
    "receive_with_fds": lambda ch: ch.receive_with_fds(),
    "anext": lambda ch: ch.__anext__(),
}


@pytest.mark.anyio
@pytest.mark.parametrize("max_fds", [0, 2])
@pytest.mark.parametrize("path", ASYNC)
@pytest.mark.parametrize("case", CASES)
async def test_every_async_receive_path_refuses_it_and_stays_dead(
    case: str, path: str, max_fds: int
) -> None:
    type_, payload, says, good = CASES[case]
    receive = ASYNC[path]
    raw, theirs = raw_pair()
    with raw:
        async with AsyncChannel.from_fd(theirs.detach(), type_, max_fds=max_fds,
                                        name="hostile") as ch:  # fmt: skip
            sender = start_sending(raw, payload, msgspec.msgpack.encode(good))
            with pytest.raises(RemoteChannelError, match=f"channel 'hostile'.*{says}") as first:
                await receive(ch)
            with pytest.raises(RemoteChannelError) as later:
                await ch.receive()
            assert later.value is first.value
        sender.join()
    raw, theirs = raw_pair()
    async with AsyncChannel.from_fd(theirs.detach(), type_, max_fds=max_fds) as fresh:
        with raw:
            send_raw(raw, msgspec.msgpack.encode(good))
            assert await receive(fresh) in (good, (good, []))


@pytest.mark.anyio
async def test_descriptors_on_a_message_the_async_endpoint_refuses_are_closed(pipe: int) -> None:
    raw, theirs = raw_pair()
    async with AsyncChannel.from_fd(theirs.detach(), Lax, max_fds=2) as ch:
        with raw:
            send_raw(raw, EXTRA, [pipe, pipe])
            with pytest.raises(RemoteChannelError, match="unknown field"):
                await ch.receive_with_fds()
            assert copies(pipe) == 1

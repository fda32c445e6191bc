"""Batching: ``send_many``/``recv_many`` (and the async ``receive_many``) carry several
small messages per record, in order, with the checks, limits and errors of single ones;
a hostile peer's batch (bad count, bad lengths, bad payload, descriptors) kills only its
channel, and nothing is allocated for counts or lengths the record does not hold."""

from __future__ import annotations

import array
import os
import signal
import socket
import struct
import time

import anyio
import msgspec
import pytest

from isolates.channels import (
    Channel,
    ChannelClosed,
    Codec,
    LocalChannelError,
    RemoteChannelError,
    open_async_pair,
    open_pair,
)
from isolates.sandbox import Action, Policy, RuleSet
from tests.forked import in_child


class Job(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    id: int


class Blob(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    data: bytes


Msg = Job | Blob
RECORD = 64 * 1024
JOB = msgspec.msgpack.encode(Job(7))


def batch(*payloads: bytes, count: int | None = None) -> bytes:
    """A batch record as the codec lays it out (``count`` forged when given)."""
    head = struct.pack("<BII", 0xC1, 0, len(payloads) if count is None else count)
    return head + b"".join(struct.pack("<I", len(p)) + p for p in payloads)


def records_of(codec: Codec[Msg], msgs: list[Msg]) -> list[bytes]:
    return codec.encode_many(msgs)


# -- the codec -------------------------------------------------------------------------------


def test_codec_packs_small_messages_into_few_records_and_feed_splits_them() -> None:
    codec: Codec[Msg] = Codec(Msg)
    msgs: list[Msg] = [Job(n) for n in range(10_000)]
    records = records_of(codec, msgs)
    assert 1 < len(records) < 10_000 // 100
    assert all(len(r) <= RECORD for r in records)
    assert [m for r in records for m in codec.feed(r)] == msgs


def test_codec_sends_a_lone_or_large_message_as_encode_does() -> None:
    codec: Codec[Msg] = Codec(Msg, max_frame=1 << 20)
    big = Blob(b"x" * (2 * RECORD))
    assert codec.encode_many([Job(1)]) == [codec.encode(Job(1))]
    records = codec.encode_many([Job(1), Job(2), big, Job(3)])
    assert records[1] == codec.encode(big) and records[2] == codec.encode(Job(3))
    assert codec.encode_many([]) == []


def test_codec_checks_every_message_before_returning_any() -> None:
    codec: Codec[Msg] = Codec(Msg, max_frame=1000)
    with pytest.raises(LocalChannelError, match="not str"):
        codec.encode_many([Job(1), "oops"])  # type: ignore[list-item]
    with pytest.raises(LocalChannelError, match="over this channel's max_frame of 1000"):
        codec.encode_many([Job(1), Blob(b"x" * 2000)])
    assert codec.feed(codec.encode_many([Job(1), Job(2)])[0]) == [Job(1), Job(2)]


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (batch(JOB, JOB, count=2**32 - 1), "batch of 4294967295 messages"),
        (batch(JOB, JOB, count=1), "batch of 1 messages"),
        (batch(JOB, JOB)[:-1], "runs past its end"),
        (batch(JOB, count=2) + struct.pack("<I", 2**32 - 1) + JOB, "runs past its end"),
        (batch(JOB, JOB) + b"\x00", "1 bytes after its last message"),
        (batch(JOB, b"\xc1"), "not a"),
        (batch(JOB, b""), "empty message"),
        (batch(JOB, batch(JOB, JOB)), "not a"),  # no nesting: a payload is a payload
        (struct.pack("<BI", 0xC1, 0) + b"\x02", "batch of 0 messages"),
    ],
    ids=["huge-count", "count-1", "cut", "huge-length", "trailing", "bad-payload", "empty",
         "nested", "short-head"],
)  # fmt: skip
def test_codec_refuses_a_forged_batch_before_allocating(record: bytes, why: str) -> None:
    codec: Codec[Msg] = Codec(Msg)
    with pytest.raises(RemoteChannelError, match=why):
        codec.feed(record)
    assert codec.buffered == 0
    with pytest.raises(RemoteChannelError, match=why):  # dead from then on
        codec.feed(JOB)
    assert Codec(Msg).feed(batch(JOB, JOB)) == [Job(7), Job(7)]  # a fresh codec is fine


def test_codec_bounds_each_message_of_a_received_batch_by_max_frame() -> None:
    codec: Codec[Msg] = Codec(Msg, max_frame=100)
    fits, over = msgspec.msgpack.encode(Blob(b"x" * 50)), msgspec.msgpack.encode(Blob(b"x" * 150))
    assert codec.feed(batch(fits, fits)) == [Blob(b"x" * 50)] * 2
    with pytest.raises(RemoteChannelError, match="at most 100 \\(max_frame\\)"):
        codec.feed(batch(fits, over))


def test_codec_refuses_descriptors_on_a_batch_and_hands_them_back() -> None:
    codec: Codec[Msg] = Codec(Msg)
    r, w = os.pipe()
    with pytest.raises(RemoteChannelError, match="a batch carries none"):
        codec.feed_with_fds(batch(JOB, JOB), [r])
    assert codec.drain_fds() == [r]
    os.close(r)
    os.close(w)


# -- the blocking endpoint -----------------------------------------------------------------


def test_blocking_round_trip_in_order_mixed_with_single_sends() -> None:
    a, b = open_pair(Msg, max_frame=1 << 20, name="jobs")
    with a, b:
        big = Blob(os.urandom(100_000))  # a frame over two records, sent from a child
        a.send(Job(0))
        a.send_many([Job(n) for n in range(1, 50)])
        a.send(Job(50))
        a.send_many([Job(51), Job(52)])
        got: list[Msg] = []
        while len(got) < 53:
            got += b.recv_many(1000)
        assert got == [Job(n) for n in range(53)]
        outcome = in_child(lambda: a.send_many([Job(1), big, Job(2)]))
        assert outcome.ok, outcome
        assert [b.recv(), b.recv(), *b.recv_many(10)] == [Job(1), big, Job(2)]


def test_recv_many_returns_what_is_there_without_waiting_for_max_count() -> None:
    a, b = open_pair(Job)
    with a, b:
        a.send_many([Job(1), Job(2), Job(3)])
        assert b.recv_many(2) == [Job(1), Job(2)]  # at most max_count
        assert b.recv_many(100, timeout=5) == [Job(3)]  # returns at once with what is there
        a.send(Job(4))
        assert b.recv_many(100) == [Job(4)]


def test_recv_many_times_out_and_the_channel_still_works() -> None:
    a, b = open_pair(Job)
    with a, b:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=r"no message within 0\.05 s"):
            b.recv_many(10, timeout=0.05)
        assert time.monotonic() - start < 2
        a.send_many([Job(1), Job(2)])
        assert b.recv_many(10, timeout=1) == [Job(1), Job(2)]


def test_max_count_and_message_checks() -> None:
    a, b = open_pair(Job, max_frame=100)
    with a, b:
        for bad in (0, -1, 1.5, True, "3"):
            with pytest.raises(LocalChannelError, match="max_count="):
                b.recv_many(bad)  # type: ignore[arg-type]
        with pytest.raises(LocalChannelError, match="carries"):
            a.send_many([Job(1), Blob(b"")])  # type: ignore[list-item]
        a.send_many([Job(2)])
        assert b.recv_many(5) == [Job(2)]  # nothing of the refused batch was sent


def test_max_frame_bounds_each_message_of_a_batch() -> None:
    a, b = open_pair(Blob, max_frame=200)
    with a, b:
        with pytest.raises(LocalChannelError, match="max_frame of 200"):
            a.send_many([Blob(b"x" * 10), Blob(b"x" * 300)])
        a.send_many([Blob(b"x" * 150), Blob(b"y" * 150)])
        assert b.recv_many(5) == [Blob(b"x" * 150), Blob(b"y" * 150)]


def test_peer_close_ends_recv_many_after_every_message_is_taken() -> None:
    a, b = open_pair(Job, name="jobs")
    a.send_many([Job(1), Job(2)])
    a.close()
    with b:
        assert b.recv_many(10) == [Job(1), Job(2)]
        with pytest.raises(ChannelClosed, match="channel 'jobs': the peer closed it"):
            b.recv_many(10)
        with pytest.raises(LocalChannelError, match="closed"):
            a.send_many([Job(3)])


def test_a_batch_on_a_channel_with_descriptors_still_carries_none() -> None:
    a, b = open_pair(Job, max_fds=1)
    with a, b:
        a.send(Job(1), fds=[a.fileno()])
        a.send_many([Job(2), Job(3)])
        assert b.recv_many(10) == [Job(1), Job(2), Job(3)]  # recv_many closes fds
        with pytest.raises(TypeError):
            a.send_many([Job(4)], fds=[a.fileno()])  # type: ignore[call-arg]


# -- a hostile peer, in a child process ------------------------------------------------------


def _hostile_peer(sock: socket.socket, records: list[bytes], fds: list[int]) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    for record in records:
        sock.sendmsg([record], anc if fds else [])


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (batch(JOB, b"\x92\x01"), "not a"),
        (batch(JOB, JOB, count=1_000_000), "batch of 1000000 messages"),
        (batch(JOB, JOB)[:-2], "runs past its end"),
    ],
    ids=["bad-payload", "forged-count", "forged-length"],
)
def test_a_hostile_batch_kills_only_its_channel(record: bytes, why: str) -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ch = Channel(mine, Job, name="victim")
    with ch:
        assert in_child(_hostile_peer, theirs, [JOB, record], []).ok
        theirs.close()
        assert ch.recv_many(10) == [Job(7)]  # what came before it is delivered
        with pytest.raises(RemoteChannelError, match=f"channel 'victim': .*{why}"):
            ch.recv_many(10)
        with pytest.raises(RemoteChannelError, match=why):  # dead from then on
            ch.recv(timeout=1)
    a, b = open_pair(Job)
    with a, b:
        a.send_many([Job(1), Job(2)])
        assert b.recv_many(10) == [Job(1), Job(2)]


def test_descriptors_on_a_hostile_batch_are_closed() -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ch = Channel(mine, Job, max_fds=1)
    r, w = os.pipe()
    with ch:
        assert in_child(_hostile_peer, theirs, [batch(JOB, JOB)], [r]).ok
        theirs.close()
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(RemoteChannelError, match="a batch carries none"):
            ch.recv_many(10)
        assert set(os.listdir("/proc/self/fd")) <= before  # the received copy is closed
    os.close(r)
    os.close(w)


# -- the async endpoint, on both backends ----------------------------------------------------


@pytest.mark.anyio
async def test_async_round_trip_in_order_mixed_with_single_sends() -> None:
    a, b = open_async_pair(Msg, max_frame=1 << 20)
    big = Blob(os.urandom(300_000))
    async with a, b:

        async def produce() -> None:
            await a.send(Job(0))
            await a.send_many([Job(n) for n in range(1, 2000)])
            await a.send_many([big, Job(2000)])
            await a.aclose()

        got: list[Msg] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            with pytest.raises(ChannelClosed):
                while True:
                    got += await b.receive_many(500)
        assert got == [*(Job(n) for n in range(2000)), big, Job(2000)]


@pytest.mark.anyio
async def test_async_receive_many_bounds_times_out_and_refuses_hostile_batches() -> None:
    a, b = open_async_pair(Job, name="victim")
    async with a, b:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.05):
                await b.receive_many(10)
        await a.send_many([Job(1), Job(2), Job(3)])
        assert await b.receive_many(2) == [Job(1), Job(2)]
        assert await b.receive_many(2) == [Job(3)]
        with pytest.raises(LocalChannelError, match="max_count="):
            await b.receive_many(0)
        with pytest.raises(LocalChannelError, match="carries"):
            await a.send_many([Job(4), "x"])  # type: ignore[list-item]
        raw = socket.socket(fileno=os.dup(a.fileno()))
        raw.send(batch(JOB, JOB, count=999_999))
        raw.close()
        with pytest.raises(RemoteChannelError, match=r"channel 'victim': .*batch of 999999"):
            await b.receive_many(10)
        with pytest.raises(RemoteChannelError, match="batch of 999999"):
            await b.receive()
    c, d = open_async_pair(Job)
    async with c, d:
        await c.send_many([Job(5), Job(6)])
        assert await d.receive_many(10) == [Job(5), Job(6)]


# -- the syscalls: Channel.RULES covers batching ---------------------------------------------


def _batch_under_rules() -> list[list[Job]]:
    plain, plain_peer = open_pair(Job)
    fds, fds_peer = open_pair(Job, max_fds=1)  # receives with recvmsg
    Policy(Channel.RULES, default=Action.KILL_PROCESS).apply()
    got = []
    for sender, receiver in ((plain, plain_peer), (fds, fds_peer)):
        sender.send_many([Job(1), Job(2), Job(3)])
        got.append(receiver.recv_many(10, timeout=1))
        try:
            receiver.recv_many(10, timeout=0.001)
        except TimeoutError:
            got.append([])
    return got


def test_batching_needs_nothing_beyond_channel_rules() -> None:
    outcome = in_child(_batch_under_rules)
    assert outcome.unwrap() == [[Job(1), Job(2), Job(3)], [], [Job(1), Job(2), Job(3)], []]
    without = in_child(_batch_under_rules_without_recvfrom)
    assert without.signal == signal.SIGSYS  # the policy is really enforced in that child


def _batch_under_rules_without_recvfrom() -> None:
    a, b = open_pair(Job)
    kept = [r for r in Channel.RULES.rules() if r.syscall != "recvfrom"]
    Policy(RuleSet(*kept, name="no recvfrom"), default=Action.KILL_PROCESS).apply()
    a.send_many([Job(1), Job(2)])
    b.recv_many(10)

"""The sans-IO codec: typed records, frames over several records, errors by fault, and a
fuzz of the one invariant (any input decodes or raises RemoteChannelError)."""

from __future__ import annotations

import dataclasses
import struct
import tracemalloc
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isolates.channels import ChannelClosed, Codec, LocalChannelError, RemoteChannelError


class Get(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    key: str


class Put(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    key: str
    value: bytes


Request = Get | Put


def head(size: int) -> bytes:
    """A frame head record announcing ``size`` payload bytes."""
    return struct.pack("<BI", 0xC1, size)


def records(frame: bytes, size: int) -> list[bytes]:
    return [frame[i : i + size] for i in range(0, len(frame), size)]


# -- types ---------------------------------------------------------------------------------


def test_a_tagged_union_routes_each_message_to_its_type() -> None:
    codec: Codec[Request] = Codec(Request)
    got = [m for msg in (Get("a"), Put("b", b"1")) for m in codec.feed(codec.encode(msg))]
    assert got == [Get("a"), Put("b", b"1")]
    assert [type(m) for m in got] == [Get, Put]


@pytest.mark.parametrize(
    ("type_", "value"),
    [(bytes, b"\x00raw"), (dict[str, int], {"a": 1}), (list[Get], [Get("x")]), (int, 7)],
)
def test_plain_types_travel_too(type_: Any, value: Any) -> None:
    codec = Codec(type_)
    assert codec.feed(codec.encode(value)) == [value]


class Lax(msgspec.Struct, tag=True):
    """A Struct that, on its own, would ignore unknown fields."""

    n: int
    items: list[Inner] = []


class Inner(msgspec.Struct):
    n: int


def test_a_struct_accepting_unknown_fields_still_gets_them_refused_by_the_channel() -> None:
    codec = Codec(Lax, name="jobs")
    assert codec.feed(codec.encode(Lax(1, [Inner(2)]))) == [Lax(1, [Inner(2)])]
    with pytest.raises(RemoteChannelError, match=r"'jobs'.*unknown field `extra`"):
        codec.feed(msgspec.msgpack.encode({"type": "Lax", "n": 1, "extra": 2}))


def test_unknown_fields_are_refused_in_nested_structs_too() -> None:
    codec = Codec(Lax)
    bad = {"type": "Lax", "n": 1, "items": [{"n": 1, "x": 3}]}
    with pytest.raises(RemoteChannelError, match=r"unknown field `x` - at `\$.items\[0\]`"):
        codec.feed(msgspec.msgpack.encode(bad))


def test_a_missing_field_is_still_the_peers_error() -> None:
    with pytest.raises(RemoteChannelError, match="missing required field `n`"):
        Codec(Lax).feed(msgspec.msgpack.encode({"type": "Lax"}))


def test_dataclasses_are_refused_since_they_drop_unknown_fields() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    with pytest.raises(LocalChannelError, match="Point would accept unknown fields"):
        Codec(Point)


def test_a_type_msgspec_cannot_carry_is_refused() -> None:
    with pytest.raises(LocalChannelError, match="msgspec cannot carry"):
        Codec(object())


def test_an_annotation_that_does_not_resolve_is_refused_not_a_name_error() -> None:
    class Broken(msgspec.Struct, forbid_unknown_fields=True):
        ref: Missing  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(LocalChannelError, match="name 'Missing' is not defined"):
        Codec(Broken)


# -- sending -------------------------------------------------------------------------------


def test_sending_the_wrong_type_is_a_local_error_naming_both_types() -> None:
    codec: Codec[Request] = Codec(Request, name="kv")
    with pytest.raises(LocalChannelError, match=r"channel 'kv' carries Get \| Put, not int"):
        codec.encode(3)  # type: ignore[arg-type]


def test_a_plain_type_is_checked_as_the_peer_will_check_it() -> None:
    codec = Codec(dict[str, int], name="counts")
    with pytest.raises(LocalChannelError, match=r"Expected `int`, got `str` - at `\$\[\.\.\.\]`"):
        codec.encode({"a": "b"})


def test_an_oversized_outgoing_message_is_a_local_error() -> None:
    codec = Codec(bytes, max_frame=100, name="small")
    with pytest.raises(LocalChannelError, match="over this channel's max_frame of 100"):
        codec.encode(b"x" * 200)


def test_a_small_message_is_one_record_holding_only_its_msgpack() -> None:
    codec = Codec(Get)
    assert codec.encode(Get("k")) == msgspec.msgpack.encode(Get("k"))


def test_a_large_message_is_a_frame_cut_into_records() -> None:
    codec = Codec(bytes, record_size=1000)
    frame = codec.encode(b"z" * 5000)
    assert frame[:5] == head(len(frame) - 5)
    pieces = records(frame, 1000)
    got = [m for piece in pieces for m in codec.feed(piece)]
    assert got == [b"z" * 5000]


# -- receiving -----------------------------------------------------------------------------


def test_a_frame_is_joined_without_ever_holding_more_than_it_announced() -> None:
    codec = Codec(bytes, record_size=1000)
    frame = codec.encode(b"q" * 10_000)
    held = []
    for piece in records(frame, 1000)[:-1]:
        assert codec.feed(piece) == []
        held.append(codec.buffered)
    assert held == sorted(held)
    assert max(held) < len(frame) - 5


def test_a_head_claiming_2_gib_is_rejected_before_anything_is_allocated() -> None:
    codec = Codec(bytes, name="in")
    with pytest.raises(RemoteChannelError, match=r"announced a 2147483648-byte message.*16777216"):
        codec.feed(head(2**31))
    assert codec.buffered == 0


def test_a_huge_allowed_claim_holds_only_what_has_arrived() -> None:
    codec = Codec(bytes, max_frame=2**32 - 1)
    tracemalloc.start()
    try:
        codec.feed(head(2**31))
        for _ in range(10):
            codec.feed(b"y" * 10_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert codec.buffered == 100_000
    assert peak < 1_000_000


def test_a_peer_sending_more_than_it_announced_is_caught() -> None:
    codec = Codec(bytes)
    codec.feed(head(10) + b"12345")
    with pytest.raises(RemoteChannelError, match="more than the 10 bytes it announced"):
        codec.feed(b"678901")


def test_an_unknown_field_from_the_peer_is_a_remote_error_naming_it() -> None:
    codec = Codec(Get, name="kv")
    data = msgspec.msgpack.encode({"type": "Get", "key": "a", "extra": 1})
    with pytest.raises(RemoteChannelError, match=r"channel 'kv'.*not a Get.*unknown field `extra`"):
        codec.feed(data)


def test_a_wrong_field_type_names_its_path() -> None:
    codec = Codec(Put)
    data = msgspec.msgpack.encode({"type": "Put", "key": "a", "value": 5})
    with pytest.raises(RemoteChannelError, match=r"Expected `bytes`, got `int` - at `\$\.value`"):
        codec.feed(data)


def test_after_a_remote_error_the_codec_is_dead_for_good() -> None:
    codec = Codec(Get)
    with pytest.raises(RemoteChannelError) as first:
        codec.feed(b"\xff\xff")
    with pytest.raises(RemoteChannelError) as again:
        codec.feed(codec.encode(Get("fine")))
    assert again.value is first.value


def test_eof_between_messages_is_a_clean_close() -> None:
    codec = Codec(Get, name="kv")
    with pytest.raises(ChannelClosed, match="the peer closed it") as closed:
        codec.feed_eof()
    assert not closed.value.truncated


def test_eof_in_the_middle_of_a_frame_says_how_much_arrived() -> None:
    codec = Codec(bytes)
    codec.feed(head(100) + b"x" * 40)
    with pytest.raises(ChannelClosed, match=r"middle of a message \(40 of 100 bytes") as closed:
        codec.feed_eof()
    assert closed.value.truncated


def test_an_empty_record_is_a_remote_error() -> None:
    with pytest.raises(RemoteChannelError, match="empty message"):
        Codec(bytes).feed(b"")


def test_a_deeply_nested_message_is_a_remote_error_not_a_recursion_error() -> None:
    with pytest.raises(RemoteChannelError):
        Codec(Any).feed(b"\x91" * 100_000)


# -- descriptors ---------------------------------------------------------------------------


def test_descriptors_go_to_the_message_whose_first_record_they_came_with() -> None:
    codec = Codec(bytes, record_size=100)
    frame = codec.encode(b"d" * 250)
    first, *rest = records(frame, 100)
    assert codec.feed_with_fds(codec.encode(b"before")) == [(b"before", [])]
    assert codec.feed_with_fds(first, [10, 11]) == []
    assert codec.feed_with_fds(rest[0]) == []
    assert codec.feed_with_fds(rest[1]) == [(b"d" * 250, [10, 11])]


def test_descriptors_in_the_middle_of_a_frame_are_refused_and_handed_back() -> None:
    codec = Codec(bytes, record_size=100)
    first, second, *_ = records(codec.encode(b"d" * 250), 100)
    codec.feed_with_fds(first, [10])
    with pytest.raises(RemoteChannelError, match="descriptors arrived in the middle"):
        codec.feed_with_fds(second, [11])
    assert sorted(codec.drain_fds()) == [10, 11]


def test_descriptors_of_an_undecodable_message_are_handed_back() -> None:
    codec = Codec(Get)
    with pytest.raises(RemoteChannelError):
        codec.feed_with_fds(b"\xff", [12])
    assert codec.drain_fds() == [12]
    with pytest.raises(RemoteChannelError):
        codec.feed_with_fds(b"\xff", [13])  # dead now; still hands them back
    assert codec.drain_fds() == [13]


def test_feed_refuses_to_drop_the_descriptors_of_a_frame_in_progress() -> None:
    codec = Codec(bytes, record_size=100)
    first, second, *_ = records(codec.encode(b"d" * 250), 100)
    codec.feed_with_fds(first, [10])
    with pytest.raises(LocalChannelError, match="keep calling feed_with_fds"):
        codec.feed(second)
    assert codec.close() == [10]


# -- the fuzz ------------------------------------------------------------------------------


class Item(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    name: str
    tags: list[str] = []
    size: int | None = None


FUZZ_TYPES = [Request, Item, bytes, dict[str, int], Any]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FUZZ_TYPES), st.lists(st.binary(max_size=300), min_size=1, max_size=8))
def test_fuzz_any_records_decode_or_raise_remote_channel_error(
    type_: Any, pieces: list[bytes]
) -> None:
    codec = Codec(type_, max_frame=4096, record_size=256)
    for piece in pieces:
        try:
            codec.feed_with_fds(piece, [])
        except RemoteChannelError:
            pass
        assert codec.buffered <= codec.max_frame


def _mutated(data: bytes, at: int, byte: int) -> bytes:
    if not data:
        return bytes([byte])
    at %= len(data)
    return data[:at] + bytes([byte]) + data[at + 1 :]


RECORDS = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, rest: head(n) + rest, st.integers(0, 5000), st.binary(max_size=300)),
    st.builds(
        _mutated,
        st.builds(msgspec.msgpack.encode, st.builds(Item, st.text(), st.lists(st.text()))),
        st.integers(0, 1000),
        st.integers(0, 255),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FUZZ_TYPES), st.lists(RECORDS, min_size=1, max_size=8))
def test_fuzz_heads_and_mutated_messages_decode_or_raise_remote_channel_error(
    type_: Any, pieces: list[bytes]
) -> None:
    codec = Codec(type_, max_frame=4096, record_size=256)
    for piece in pieces:
        try:
            codec.feed_with_fds(piece, [])
        except RemoteChannelError:
            pass
        assert codec.buffered <= codec.max_frame


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.lists(st.binary(min_size=1), max_size=20))
def test_fuzz_a_claimed_frame_never_buffers_beyond_max_frame(
    claimed: int, pieces: list[bytes]
) -> None:
    codec = Codec(bytes, max_frame=1000)
    try:
        for piece in [head(claimed), *pieces]:
            codec.feed(piece)
            assert codec.buffered <= min(claimed, 1000)
    except RemoteChannelError:
        assert codec.buffered == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.builds(Item, st.text(), st.lists(st.text(), max_size=3)), max_size=5))
def test_fuzz_what_is_encoded_decodes_to_itself(items: list[Item]) -> None:
    codec = Codec(list[Item], record_size=64)
    pieces = records(codec.encode(items), 64)
    assert [m for piece in pieces for m in codec.feed(piece)] == [items]

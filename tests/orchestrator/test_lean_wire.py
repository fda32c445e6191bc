"""The isolate's lean half of the control wire: what it sends, a real Channel typed by
wire.Control decodes; what send_pickled sends, recv_pickled reads; and a fresh
``python -I -S`` using it loads none of the heavy modules."""

from __future__ import annotations

import ast
import dataclasses
import datetime
import enum
import math
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isolates.channels import Channel
from isolates.channels import _codec as codec
from isolates.orchestrator._core import lean_wire
from isolates.orchestrator._core.lean_wire import Unsupported, encode_value, pack
from isolates.orchestrator._core.wire import (
    MAX_BOOT_FDS,
    Control,
    Failure,
    Idle,
    Ready,
    Result,
    Stage,
    StatusData,
)

T = TypeVar("T")
HEAVY = {"msgspec", "typing", "inspect", "dataclasses", "enum", "socket", "signal", "re"}
HEAVY |= {"pickle"}  # pickle.py: the module unpickles with _pickle


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(child end, parent end) of a control socketpair."""
    child, parent = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with child, parent:
        yield child, parent


def _while_sending(send: Callable[[], object], receive: Callable[[], T]) -> T:
    """``receive()`` while another thread sends: a frame outgrows the socket's buffer."""
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(send)
        got = receive()
        sent.result()
    return got


# -- the format is the channel codec's ---------------------------------------------------


def test_its_constants_are_the_codecs_and_the_control_channels() -> None:
    assert lean_wire.RECORD_SIZE == codec.RECORD_SIZE
    assert lean_wire.MAX_FRAME == codec.DEFAULT_MAX_FRAME
    assert lean_wire.FRAME_MARK == codec.FRAME_MARK
    assert lean_wire.MAX_FDS == MAX_BOOT_FDS


# Message lengths whose payloads (msgpack bin: 3-byte header to 65535, then 5) are 65535,
# 65536 and 65537 bytes, a few records long, and exactly the 16 MiB max_frame.
@pytest.mark.parametrize("length", [1, 65532, 65533, 65534, 200 * 1024, 3 * 65536, (16 << 20) - 5])
def test_record_frames_cuts_a_payload_as_a_channel_does(length: int) -> None:
    message = os.urandom(length)
    records = lean_wire.record_frames(pack(message))
    frame = codec.Codec[bytes](bytes).encode(message)  # what Channel.send cuts into records
    cut = [frame[at : at + codec.RECORD_SIZE] for at in range(0, len(frame), codec.RECORD_SIZE)]
    assert records == cut
    receiver = codec.Codec[bytes](bytes)
    assert [msg for record in records for msg in receiver.feed(record)] == [message]


@pytest.mark.parametrize("size", [0, (16 << 20) + 1])
def test_record_frames_refuses_what_the_parent_would_refuse(size: int) -> None:
    with pytest.raises(ValueError, match=f"a {size}-byte message"):
        lean_wire.record_frames(b"x" * size)


# -- send: child -> a real Channel typed by wire.Control ------------------------------------


def _control(parent: socket.socket) -> Channel[Any]:
    return Channel(parent, Control, max_fds=MAX_BOOT_FDS, name="control")


def test_a_channel_decodes_idle(pair: tuple[socket.socket, socket.socket]) -> None:
    child, parent = pair
    lean_wire.send(child, {"type": "idle"})
    assert _control(parent).recv() == Idle()


def test_a_channel_decodes_ready_and_failure(pair: tuple[socket.socket, socket.socket]) -> None:
    child, parent = pair
    status = {"seccomp": True, "all_threads": False, "landlock": None}
    lean_wire.send(child, {"type": "ready", "status": status, "namespaces": None})
    failure = {
        "type": "failure",
        "kind": "ValueError",
        "builtin": True,
        "args": ["bad", 3],
        "message": "bad",
        "traceback": "Traceback ...",
        "stage": "run",
    }
    lean_wire.send(child, failure)
    control = _control(parent)
    assert control.recv() == Ready(StatusData(seccomp=True, all_threads=False), None)
    assert control.recv() == Failure(
        "ValueError", True, ["bad", 3], "bad", "Traceback ...", Stage.RUN
    )


def _result_payload_overhead() -> int:
    """Bytes of a Result's payload around a value of 256 to 65535 bytes (bin16)."""
    return len(pack({"type": "result", "value": b"x" * 65000})) - 65000


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_a_result_at_the_record_boundary(
    pair: tuple[socket.socket, socket.socket], extra: int
) -> None:
    # A payload of exactly RECORD_SIZE bytes is one record; one byte more is a frame.
    child, parent = pair
    value = b"v" * (lean_wire.RECORD_SIZE - _result_payload_overhead() + extra)
    lean_wire.send(child, {"type": "result", "value": value})
    assert _control(parent).recv() == Result(value=value)


def test_a_200_kib_result_arrives_framed(pair: tuple[socket.socket, socket.socket]) -> None:
    child, parent = pair
    value = os.urandom(200 * 1024)
    control = _control(parent)
    got = _while_sending(
        lambda: lean_wire.send(child, {"type": "result", "value": value}), control.recv
    )
    assert got == Result(value=value)


@pytest.mark.parametrize("size", [10, 200 * 1024])
def test_two_descriptors_ride_with_a_message(
    pair: tuple[socket.socket, socket.socket], size: int
) -> None:
    child, parent = pair
    read_end, write_end = os.pipe()
    value = b"r" * size
    control = _control(parent)
    msg = {"type": "result", "value": value}
    got, fds = _while_sending(
        lambda: lean_wire.send(child, msg, fds=[read_end, write_end]), control.recv_with_fds
    )
    try:
        assert got == Result(value=value)
        assert len(fds) == 2
        os.write(fds[1], b"hi")  # the copy of the write end reaches the original read end
        assert os.read(read_end, 2) == b"hi"
    finally:
        for fd in (*fds, read_end, write_end):
            os.close(fd)


# -- send_pickled -> recv_pickled: parent -> child --------------------------------------------


@pytest.mark.parametrize("size", [0, 65536, 1 << 20])
def test_a_pickle_round_trips(pair: tuple[socket.socket, socket.socket], size: int) -> None:
    child, parent = pair
    obj = {"payload": os.urandom(size), "args": (1, "two", [3.0]), "kind": Stage.BOOT}
    got, fds = _while_sending(
        lambda: lean_wire.send_pickled(parent, obj), lambda: lean_wire.recv_pickled(child, 2 << 20)
    )
    assert (got, fds) == (obj, [])


@pytest.mark.parametrize("size", [10, 1 << 20])
def test_a_pickle_brings_its_descriptors_close_on_exec(
    pair: tuple[socket.socket, socket.socket], size: int
) -> None:
    child, parent = pair
    read_end, write_end = os.pipe()
    got, fds = _while_sending(
        lambda: lean_wire.send_pickled(parent, b"p" * size, fds=[write_end, read_end]),
        lambda: lean_wire.recv_pickled(child, 2 << 20),
    )
    try:
        assert got == b"p" * size
        assert [os.get_inheritable(fd) for fd in fds] == [False, False]
        os.write(fds[0], b"ok")
        assert os.read(read_end, 2) == b"ok"
    finally:
        for fd in (*fds, read_end, write_end):
            os.close(fd)


def test_a_closed_peer_is_eof(pair: tuple[socket.socket, socket.socket]) -> None:
    child, parent = pair
    parent.close()
    with pytest.raises(EOFError):
        lean_wire.recv_pickled(child, 1 << 20)


def test_a_peer_closing_mid_frame_is_eof(pair: tuple[socket.socket, socket.socket]) -> None:
    child, parent = pair
    head = lean_wire.record_frames(b"x" * 100_000)[0]
    parent.send(head)  # the head record, then nothing
    parent.close()
    with pytest.raises(EOFError, match="mid-message"):
        lean_wire.recv_pickled(child, 1 << 20)


def test_a_frame_over_max_size_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    child, parent = pair
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    head = lean_wire.record_frames(b"x" * 100_000)[0]
    socket.send_fds(parent, [head], [write_end])
    os.close(write_end)  # the copy that came with the head is now the only write end
    try:
        with pytest.raises(ValueError, match="100000-byte message"):
            lean_wire.recv_pickled(child, 99_999)
        assert os.read(read_end, 1) == b""  # EOF: recv_pickled closed the copy it received
    finally:
        os.close(read_end)


def test_a_frame_longer_than_it_announces_is_refused(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    child, parent = pair
    head = lean_wire.record_frames(b"x" * 100_000)[0]
    parent.send(head)
    parent.send(b"y" * 65536)  # 34469 bytes were left to send, not 65536
    with pytest.raises(ValueError, match="announced"):
        lean_wire.recv_pickled(child, 1 << 20)


# -- pack: msgpack that msgspec reads back --------------------------------------------------


def _as_decoded(value: object) -> object:
    """``value`` as msgpack decodes it: tuples become lists, bytearrays bytes."""
    if isinstance(value, list | tuple):
        return [_as_decoded(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_decoded(item) for key, item in value.items()}
    return bytes(value) if isinstance(value, bytearray) else value


INTS = st.integers(-(2**63), 2**64 - 1)
SCALARS = (
    st.none()
    | st.booleans()
    | INTS
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.binary().map(bytearray)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner) | st.lists(inner).map(tuple) | st.dictionaries(st.text() | INTS, inner)
    ),
    max_leaves=40,
)


@given(VALUES)
def test_pack_is_read_back_by_msgspec(value: object) -> None:
    packed = pack(value)
    assert msgspec.msgpack.decode(packed) == _as_decoded(value)
    assert packed == msgspec.msgpack.encode(value)  # the very bytes the parent always got


BOUNDARIES = [
    *(0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1),
    *(-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)),
    *(0.0, 1.5, -2.25e300, 5e-324, math.inf, -math.inf),
    *("", "s" * 31, "s" * 32, "s" * 255, "s" * 256, "s" * 65535, "s" * 65536),
    *("é" * 16, "€" * 11, "😀" * 8, "\U0010ffff", "a\x00b"),
    *(b"", b"b" * 255, b"b" * 256, b"b" * 65535, b"b" * 65536, bytearray(b"ba")),
    *([0] * 15, [0] * 16, [0] * 65535, [0] * 65536, (0,) * 16),
    {i: i for i in range(15)},
    {str(i): None for i in range(16)},
    {i: i for i in range(65536)},
    {"nested": [{"a": (1, [b"x", None])}], -5: {2**64 - 1: True}},
]


@pytest.mark.parametrize("value", BOUNDARIES, ids=lambda v: f"{type(v).__name__}:{repr(v)[:20]}")
def test_pack_at_every_size_boundary(value: object) -> None:
    packed = pack(value)
    assert msgspec.msgpack.decode(packed) == _as_decoded(value)
    assert packed == msgspec.msgpack.encode(value)


@pytest.mark.parametrize(
    ("value", "head"),
    [
        (127, b"\x7f"),
        (128, b"\xcc\x80"),
        (255, b"\xcc\xff"),
        (256, b"\xcd\x01\x00"),
        (-32, b"\xe0"),
        (-33, b"\xd0\xdf"),
        (-128, b"\xd0\x80"),
        (-129, b"\xd1\xff\x7f"),
        (2**63 - 1, b"\xcf\x7f"),
        (2**64 - 1, b"\xcf\xff"),
        (-(2**63), b"\xd3\x80"),
        (1.0, b"\xcb\x3f\xf0"),
        ("s" * 31, b"\xbf"),
        ("s" * 32, b"\xd9\x20"),
        ("s" * 256, b"\xda\x01\x00"),
        ("s" * 65536, b"\xdb\x00\x01\x00\x00"),
        (b"", b"\xc4\x00"),
        (b"b" * 256, b"\xc5\x01\x00"),
        (b"b" * 65536, b"\xc6\x00\x01"),
        ([0] * 15, b"\x9f"),
        ([0] * 16, b"\xdc\x00\x10"),
        ([0] * 65536, b"\xdd\x00\x01"),
        ({}, b"\x80"),
        ({i: 0 for i in range(16)}, b"\xde\x00\x10"),
        (None, b"\xc0"),
        (False, b"\xc2"),
        (True, b"\xc3"),
    ],
)
def test_pack_writes_the_smallest_msgpack_form(value: object, head: bytes) -> None:
    assert pack(value).startswith(head)


def test_pack_floats_keep_nan_and_negative_zero() -> None:
    assert math.isnan(msgspec.msgpack.decode(pack(math.nan)))
    assert math.copysign(1.0, msgspec.msgpack.decode(pack(-0.0))) == -1.0
    assert pack(0.1) == b"\xcb" + struct.pack(">d", 0.1)  # float64 always, never float32
    assert pack(1.0) == b"\xcb" + struct.pack(">d", 1.0)


class Colour(enum.IntEnum):
    RED = 1


class Text(str):
    pass


@dataclasses.dataclass
class Point:
    x: int
    y: int


class PointStruct(msgspec.Struct):
    x: int


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


REFUSED = [
    2**64, -(2**63) - 1, "\ud800", ["ok", "x\udfff"], {"k": "\udc80"},
    {1.5: 0}, {True: 0}, {(1, 2): 0}, {None: 0}, {Text("k"): 0},
    object(), 1j, Text("s"), Point(1, 2), PointStruct(1),
    datetime.date(2024, 1, 1), memoryview(b"m"), _nested(65), _cycle(), [[1j]],
]  # fmt: skip


@pytest.mark.parametrize("value", REFUSED, ids=lambda v: f"{type(v).__name__}:{repr(v)[:16]}")
def test_pack_refuses_anything_else_as_unsupported(value: object) -> None:
    with pytest.raises(Unsupported):
        pack(value)


def test_unsupported_is_a_type_error() -> None:
    assert issubclass(Unsupported, TypeError)


def test_pack_nests_64_containers() -> None:
    assert msgspec.msgpack.decode(pack(_nested(64))) == _nested(64)
    deep: object = {"k": _nested(63)}  # a dict counts as one level too
    assert msgspec.msgpack.decode(pack(deep)) == deep
    with pytest.raises(Unsupported, match="64 deep"):
        pack({"k": _nested(64)})


def test_pack_near_the_stack_limit_raises_unsupported_from_inside() -> None:
    # Whatever depth the caller is at, a RecursionError never escapes pack's own frames.
    escaped: list[RecursionError] = []

    def descend(levels: int) -> None:
        if levels:
            return descend(levels - 1)
        try:
            pack(_nested(64))
        except Unsupported:
            pass
        except RecursionError as exc:
            escaped.append(exc)
        return None

    for levels in range(sys.getrecursionlimit()):
        try:
            descend(levels)
        except RecursionError:
            break
    inside = [exc for exc in escaped if _raised_inside_lean_wire(exc)]
    assert inside == []


def _raised_inside_lean_wire(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == lean_wire.__file__:
            return True
        tb = tb.tb_next
    return False


# -- encode_value: pack, else msgspec ---------------------------------------------------------


class Mood(enum.Enum):
    CALM = "calm"


def test_enums_sets_and_named_tuples_pack_as_msgspec_writes_them() -> None:
    import collections

    pair = collections.namedtuple("pair", "a b")
    for value in (Colour.RED, Mood.CALM, {1, 2}, frozenset({"x"}), pair(1, "b"), [Colour.RED]):
        assert pack(value) == msgspec.msgpack.encode(value), value


@pytest.mark.parametrize(
    "value",
    [
        3,
        "text",
        [1, (2, 3)],
        {"a": b"b"},
        Point(1, 2),
        PointStruct(5),
        {1, 2},
        Colour.RED,
        Mood.CALM,
        datetime.datetime(2024, 5, 6, 7, 8, 9),
        {"when": datetime.date(2024, 1, 2)},
        _nested(65),
        [2**63],
    ],
    ids=repr,
)
def test_encode_value_gives_msgspecs_bytes(value: object) -> None:
    assert encode_value(value) == msgspec.msgpack.Encoder().encode(value)


def test_encode_value_raises_as_msgspec_for_what_neither_encodes() -> None:
    for value in (object(), Text("a str subclass")):
        with pytest.raises(TypeError):
            encode_value(value)
    with pytest.raises(OverflowError):  # msgspec's error for an int out of range, as before
        encode_value(2**64)


# -- a fresh python -I -S ---------------------------------------------------------------------

_FRESH = r"""
import sys
sys.path[:] = sys.argv[1].split("\x1f")
import _socket, lean_wire
heavy = set(sys.argv[2].split(","))
print(sorted(heavy & set(sys.modules)))  # after the import alone

child, parent = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
lean_wire.send_pickled(parent, {"boot": [1, 2]}, fds=[0])
obj, fds = lean_wire.recv_pickled(child, 1 << 20)
lean_wire.send(child, {"type": "result", "value": lean_wire.encode_value(3)}, fds=fds)
assert obj == {"boot": [1, 2]} and parent.recv(100)
print(sorted(heavy & set(sys.modules)))  # after a round trip and a trivial result

import dataclasses

@dataclasses.dataclass
class Point:
    x: int

lean_wire.encode_value(Point(1))
print("msgspec" in sys.modules)
"""


def test_a_fresh_interpreter_stays_lean(tmp_path: Path) -> None:
    # The module alone (its package's __init__ files are not its to keep lean).
    (tmp_path / "lean_wire.py").symlink_to(lean_wire.__file__)
    path = "\x1f".join([str(tmp_path), *(os.path.abspath(p) for p in sys.path if p)])
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _FRESH, path, ",".join(sorted(HEAVY))],
        capture_output=True,
        text=True,
        env={},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    after_import, after_use, msgspec_later = map(ast.literal_eval, run.stdout.splitlines())
    assert after_import == []
    assert after_use == []
    assert msgspec_later is True

"""The isolate's half of the control wire, importing next to nothing.

An isolate is a fresh ``python -I -S`` that must reach READY as fast as it can, so this
module imports only builtins and tiny C modules (``os``, ``_socket``, ``_struct``,
``_pickle``): no msgspec, typing, socket.py, re... The parent's end stays a real
``isolates.channels.Channel`` typed by ``wire.Control``; this module speaks its format.

- ``pack``: a small msgpack encoder for plain data (None, bool, int, float, str, bytes,
  bytearray, list, tuple, dict with str or int keys), exact types only. Anything else
  raises :class:`Unsupported`; ``encode_value`` then hands the value to msgspec, imported
  only then, so Structs, dataclasses, enums, datetimes and sets encode as they always did.
- ``record_frames``: a payload cut into records exactly as ``channels/_codec.py`` frames
  it: one record when it fits in ``RECORD_SIZE`` bytes, else a head record (``0xC1``, the
  length as 4 little-endian bytes, the first piece) and the rest in records of at most
  ``RECORD_SIZE`` bytes. No batches: every message is sent alone.
- ``send`` (child -> parent, a dict packed as msgpack) and ``send_pickled`` (parent ->
  child, a pickle) send those records, descriptors (SCM_RIGHTS) on the first one;
  ``recv_pickled`` reads what ``send_pickled`` sent. Pickle only ever flows to the child.
"""

from __future__ import annotations

import _pickle
import _socket
import _struct
import os
import sys

TYPE_CHECKING = False  # mypy treats this name as True; at run time typing stays unloaded
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Final

    # (largest value, type byte, struct writing both) per width, narrowest first.
    _Codes = tuple[tuple[int, int, _struct.Struct], ...]

#: The largest record; the same as ``channels._codec.RECORD_SIZE`` (a test holds them to it).
RECORD_SIZE: Final = 64 * 1024
#: The parent's default max_frame (``channels._codec.DEFAULT_MAX_FRAME``): the largest payload.
MAX_FRAME: Final = 16 * 1024 * 1024
#: First byte of a frame's head record (msgpack never uses it); the codec's FRAME_MARK.
FRAME_MARK: Final = 0xC1
#: Containers ``pack`` nests; deeper data goes to msgspec (and never overflows our stack).
MAX_DEPTH: Final = 64
#: Descriptors one message may carry: the parent's control channel accepts this many.
MAX_FDS: Final = 64
SEND_FLAGS: Final = _socket.MSG_NOSIGNAL  # EPIPE, never SIGPIPE, whatever the disposition

_HEAD: Final = _struct.Struct("<BI")  # a frame head: the mark, the payload's length
_INT_SIZE: Final = _struct.calcsize("i")  # one descriptor in SCM_RIGHTS data
_ANC_SIZE: Final = _socket.CMSG_SPACE(MAX_FDS * _INT_SIZE)
_TRUNCATED: Final = _socket.MSG_TRUNC | _socket.MSG_CTRUNC


class Unsupported(TypeError):
    """A value ``pack`` does not encode: not one of its exact types, an int out of
    msgpack's range, a lone surrogate, or nesting deeper than MAX_DEPTH."""


# -- pack: plain data to msgpack -------------------------------------------------------------


def pack(obj: object) -> bytes:
    """``obj`` as msgpack, in the smallest form for each item (as msgspec writes it)."""
    out = bytearray()
    try:
        _pack_into(out, obj, MAX_DEPTH)
    except RecursionError:  # called with the stack nearly full already: still ours to say
        raise Unsupported("pack() ran out of stack") from None
    return bytes(out)


def _pack_into(out: bytearray, obj: object, depth: int) -> None:
    # A lookup on the exact type: subclasses (IntEnum, a str subclass...) are msgspec's.
    packer = _PACKERS.get(type(obj))
    if packer is not None:
        packer(out, obj, depth)
    elif isinstance(obj, tuple):  # a named tuple: an array, as msgspec writes it
        _pack_array(out, obj, depth)
    elif _is_enum(obj):  # its value, as msgspec writes it (only int and str values)
        _pack_into(out, _enum_value(obj), depth)
    else:
        raise Unsupported(f"pack() does not encode {type(obj).__name__}")


def _is_enum(obj: object) -> bool:
    # Without importing enum: a value can only be a member if its module is loaded.
    enum = sys.modules.get("enum")
    return enum is not None and isinstance(obj, enum.Enum)


def _enum_value(member: Any) -> int | str:
    value = member.value
    if type(value) is not int and type(value) is not str:
        raise Unsupported(f"pack() encodes enums of int or str values, not {member!r}")
    return value


def _pack_none(out: bytearray, obj: None, depth: int) -> None:
    out.append(0xC0)


def _pack_bool(out: bytearray, obj: bool, depth: int) -> None:
    out.append(0xC3 if obj else 0xC2)


def _pack_float(out: bytearray, obj: float, depth: int) -> None:
    out += _FLOAT64.pack(0xCB, obj)  # always float64: a float32 could lose precision


def _pack_int(out: bytearray, obj: int, depth: int) -> None:
    if -32 <= obj <= 0x7F:  # a fixint: the byte itself (two's complement when negative)
        out.append(obj & 0xFF)
        return
    # The narrowest width that holds it: unsigned forms for positives, signed for
    # negatives (whose bounds are kept as magnitudes: -128 fits int8, -129 does not).
    magnitude, forms = (obj, _UINTS) if obj > 0 else (-obj, _SINTS)
    for bound, code, form in forms:
        if magnitude <= bound:
            out += form.pack(code, obj)
            return
    raise Unsupported(f"pack() encodes ints from -2**63 to 2**64-1, not {obj}")


def _pack_str(out: bytearray, obj: str, depth: int) -> None:
    try:
        data = obj.encode()
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form
        raise Unsupported("pack() cannot encode a str holding a lone surrogate") from None
    _put_size(out, len(data), 0xA0, 31, _STR_CODES)
    out += data


def _pack_bin(out: bytearray, obj: bytes | bytearray, depth: int) -> None:
    _put_size(out, len(obj), 0, -1, _BIN_CODES)  # bin has no fix form
    out += obj


def _pack_array(out: bytearray, obj: list[Any] | tuple[Any, ...] | set[Any], depth: int) -> None:
    _enter(depth)
    _put_size(out, len(obj), 0x90, 15, _ARRAY_CODES)
    for item in obj:
        _pack_into(out, item, depth - 1)


def _pack_map(out: bytearray, obj: dict[Any, Any], depth: int) -> None:
    _enter(depth)
    _put_size(out, len(obj), 0x80, 15, _MAP_CODES)
    for key, value in obj.items():
        if type(key) is not str and type(key) is not int:  # what every decoder can key by
            raise Unsupported(f"pack() encodes dict keys of str or int, not {type(key).__name__}")
        _pack_into(out, key, depth - 1)
        _pack_into(out, value, depth - 1)


def _enter(depth: int) -> None:
    # Checked before a container is written, so a cycle ends here too, not in RecursionError.
    if depth <= 0:
        raise Unsupported(f"pack() nests containers at most {MAX_DEPTH} deep")


def _put_size(out: bytearray, size: int, fixed: int, most_fixed: int, codes: _Codes) -> None:
    """A length prefix in its smallest form: the fix form (``fixed | size``, up to
    ``most_fixed``), else 8, 16 or 32 bits (``codes``; 0: the type has no such form)."""
    if size <= most_fixed:
        out.append(fixed | size)
        return
    for bound, code, form in codes:
        if code and size <= bound:
            out += form.pack(code, size)
            return
    raise Unsupported(f"pack() encodes at most 2**32-1 items or bytes, not {size}")


_FLOAT64: Final = _struct.Struct(">Bd")
_U8, _U16, _U32 = _struct.Struct(">BB"), _struct.Struct(">BH"), _struct.Struct(">BI")
_UINTS: Final[_Codes] = (
    (0xFF, 0xCC, _U8),
    (0xFFFF, 0xCD, _U16),
    (0xFFFFFFFF, 0xCE, _U32),
    (2**64 - 1, 0xCF, _struct.Struct(">BQ")),
)
_SINTS: Final[_Codes] = (
    (2**7, 0xD0, _struct.Struct(">Bb")),
    (2**15, 0xD1, _struct.Struct(">Bh")),
    (2**31, 0xD2, _struct.Struct(">Bi")),
    (2**63, 0xD3, _struct.Struct(">Bq")),
)
_STR_CODES: Final[_Codes] = ((0xFF, 0xD9, _U8), (0xFFFF, 0xDA, _U16), (0xFFFFFFFF, 0xDB, _U32))
_BIN_CODES: Final[_Codes] = ((0xFF, 0xC4, _U8), (0xFFFF, 0xC5, _U16), (0xFFFFFFFF, 0xC6, _U32))
_ARRAY_CODES: Final[_Codes] = ((0xFF, 0, _U8), (0xFFFF, 0xDC, _U16), (0xFFFFFFFF, 0xDD, _U32))
_MAP_CODES: Final[_Codes] = ((0xFF, 0, _U8), (0xFFFF, 0xDE, _U16), (0xFFFFFFFF, 0xDF, _U32))

_PACKERS: Final[dict[type, Callable[[bytearray, Any, int], None]]] = {
    type(None): _pack_none,
    bool: _pack_bool,
    int: _pack_int,
    float: _pack_float,
    str: _pack_str,
    bytes: _pack_bin,
    bytearray: _pack_bin,
    list: _pack_array,
    tuple: _pack_array,
    set: _pack_array,  # as msgspec does: an array, in iteration order
    frozenset: _pack_array,
    dict: _pack_map,
}


def encode_value(value: object) -> bytes:
    """A return value as msgpack: ``pack`` for plain data (no msgspec import), msgspec
    for everything else (Structs, dataclasses, enums, datetimes, sets...), as before."""
    try:
        return pack(value)
    except Unsupported:
        pass
    import msgspec  # only a value pack() refused pays for this import

    return msgspec.msgpack.Encoder().encode(value)


# -- records: the channel codec's framing ----------------------------------------------------


def record_frames(payload: bytes) -> list[bytes]:
    """The records that carry one message ``payload``, as ``channels._codec`` frames it."""
    size = len(payload)
    if not 0 < size <= MAX_FRAME:  # the codec refuses an empty message, and one over max_frame
        raise ValueError(f"a {size}-byte message; the channel carries 1 to {MAX_FRAME} bytes")
    if size <= RECORD_SIZE:
        return [payload]
    first = RECORD_SIZE - _HEAD.size  # payload bytes riding in the head record
    records = [_HEAD.pack(FRAME_MARK, size) + payload[:first]]
    records += [payload[at : at + RECORD_SIZE] for at in range(first, size, RECORD_SIZE)]
    return records


def send(sock: _socket.socket, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """Send ``msg`` (a wire.Control message as a dict, e.g. ``{"type": "idle"}``) to the
    parent's Channel, with copies of ``fds`` (ints, which stay the caller's)."""
    _send_records(sock, record_frames(pack(msg)), fds)


def send_pickled(sock: _socket.socket, obj: object, fds: Sequence[int] = ()) -> None:
    """The parent's side: send ``obj`` as one pickle, for ``recv_pickled`` in the child."""
    _send_records(sock, record_frames(_pickle.dumps(obj, protocol=-1)), fds)


def _send_records(sock: _socket.socket, records: list[bytes], fds: Sequence[int]) -> None:
    # SOCK_SEQPACKET sends each record whole or not at all, so no partial-send loop.
    if fds:
        sock.sendmsg((records[0],), [_rights(fds)], SEND_FLAGS)  # descriptors: first record
    else:
        sock.send(records[0], SEND_FLAGS)
    for record in records[1:]:
        sock.send(record, SEND_FLAGS)


def _rights(fds: Sequence[int]) -> tuple[int, int, bytes]:
    """The SCM_RIGHTS ancillary item passing ``fds``."""
    if len(fds) > MAX_FDS:  # the receiver's control buffer holds no more: refuse here
        raise ValueError(f"a message carries at most {MAX_FDS} descriptors, not {len(fds)}")
    data = _struct.pack(f"{len(fds)}i", *fds)
    return (_socket.SOL_SOCKET, _socket.SCM_RIGHTS, data)


# -- receiving a pickle ----------------------------------------------------------------------


def recv_pickled(sock: _socket.socket, max_size: int) -> tuple[object, list[int]]:
    """The next message from ``send_pickled``, unpickled, and the descriptors that came
    with it (close-on-exec, the caller's to close). EOFError once the peer has closed;
    ValueError for a message over ``max_size`` bytes or records out of format."""
    first, fds = _recv_first(sock)
    try:
        return _pickle.loads(_reassemble(sock, first, max_size)), fds
    except BaseException:  # nobody else will ever see these descriptors
        _close_all(fds)
        raise


def _recv_first(sock: _socket.socket) -> tuple[bytes, list[int]]:
    """A message's first record and its descriptors (installed close-on-exec)."""
    data, ancdata, flags, _ = sock.recvmsg(RECORD_SIZE, _ANC_SIZE, _socket.MSG_CMSG_CLOEXEC)
    fds = _fds_in(ancdata)
    if not data or flags & _TRUNCATED:
        _close_all(fds)
        if not data:  # the codec never sends an empty message: this is the peer's close
            raise EOFError("the peer closed the socket")
        raise ValueError("a record over RECORD_SIZE bytes, or over MAX_FDS descriptors")
    return data, fds


def _fds_in(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in SCM_RIGHTS items (whole ints only)."""
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            count = len(data) // _INT_SIZE
            fds += _struct.unpack(f"{count}i", data[: count * _INT_SIZE])
    return fds


def _reassemble(sock: _socket.socket, first: bytes, max_size: int) -> bytes | bytearray:
    """The whole payload that ``first`` starts: itself, or a frame read into one buffer
    of the announced size (checked against ``max_size`` before it is allocated)."""
    if first[0] != FRAME_MARK:
        _check_size(len(first), max_size)
        return first
    if len(first) < _HEAD.size:
        raise ValueError(f"a {len(first)}-byte frame head")
    size = _HEAD.unpack_from(first)[1]
    _check_size(size, max_size)  # 0 too: a batch, which send_pickled never sends
    piece = memoryview(first)[_HEAD.size :]
    if len(piece) > size:
        raise ValueError(f"a frame head carrying more than the {size} bytes it announces")
    frame = bytearray(size)
    frame[: len(piece)] = piece
    _recv_rest(sock, memoryview(frame), len(piece))
    return frame


def _check_size(size: int, max_size: int) -> None:
    # An empty message is never sent; a large one is refused before anything is allocated.
    if not 0 < size <= max_size:
        raise ValueError(f"a {size}-byte message; this socket accepts 1 to {max_size} bytes")


def _recv_rest(sock: _socket.socket, frame: memoryview, got: int) -> None:
    """Fill ``frame`` from ``got`` on, one record at a time; a record that would run past
    its end comes back truncated (MSG_TRUNC): the peer sent more than it announced."""
    while got < len(frame):
        room = frame[got : got + RECORD_SIZE]
        # No control buffer: descriptors on a later record are discarded by the kernel.
        count, _, flags, _ = sock.recvmsg_into((room,), 0)
        if not count:
            raise EOFError(f"the peer closed the socket mid-message ({got} of {len(frame)} bytes)")
        if flags & _TRUNCATED:
            raise ValueError("a record past the frame's announced length, or with descriptors")
        got += count


def drain(sock: _socket.socket) -> None:
    """Read records until the peer closes (or the socket fails), closing every
    descriptor that comes with them: nothing the peer sends is kept."""
    while True:
        try:
            data, ancdata, _, _ = sock.recvmsg(RECORD_SIZE, _ANC_SIZE, _socket.MSG_CMSG_CLOEXEC)
        except OSError:
            return
        _close_all(_fds_in(ancdata))
        if not data:
            return


def _close_all(fds: list[int]) -> None:
    """Close each descriptor, ignoring ones already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass

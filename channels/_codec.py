"""The codec: typed messages to msgpack records and back, without I/O (like h11).

The transports carry *records* (SOCK_SEQPACKET: the kernel keeps each write whole and
returns it whole from one read), so most messages need no framing of their own:

- a message whose msgpack payload fits in ``record_size`` bytes is one record holding
  exactly that payload;
- a longer one is a *frame* spread over consecutive records: a head record starting with
  the byte ``0xC1`` (which msgpack never uses, so it cannot be mistaken for a payload) and
  the payload length as 4 little-endian bytes, then the payload, cut into records of at
  most ``record_size`` bytes (the first piece rides in the head record).

A *batch* (``encode_many``) packs several small messages into one record: a frame head
announcing 0 bytes (never a frame: an empty message is refused), the message count as 4
little-endian bytes, then each message as its 4-byte length and its payload. The count and
every length are checked against the bytes the record really holds before anything is
decoded or allocated for them, and each payload goes through ``Codec.decode`` like any
other; a batch carries no descriptors.

A frame's length is checked against ``max_frame`` as soon as its head arrives, before
anything is allocated for it, and the bytes held for a frame never exceed its claimed
length: the codec holds at most ``max_frame`` bytes. Descriptors (SCM_RIGHTS) travel with
a message's first record, so ``feed_with_fds(record, fds)`` gives them to the message that
record starts. The codec never closes a descriptor: those it will not deliver are handed
back by ``drain_fds()`` for the caller to close.

Every payload is decoded by one function, ``Codec.decode`` (unknown fields refused first
for types whose own decoder would drop them); ``feed`` turns whatever it raises (msgspec's
errors, RecursionError for data nested too deep) into RemoteChannelError, and the
transports' fast paths call the same function, so no receive path skips a check.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any, Final, Generic, NoReturn, TypeAlias, TypeVar

import msgspec

from ._errors import ChannelClosed, LocalChannelError, RemoteChannelError
from ._types import check_message_type, describe, strict_twin, struct_classes

T = TypeVar("T")
Bytes: TypeAlias = bytes | bytearray | memoryview

#: First byte of a frame's head record; msgpack assigns it no meaning ("never used").
FRAME_MARK: Final = 0xC1
HEAD: Final = struct.Struct("<BI")
#: The default largest message (payload bytes) a channel sends or accepts: 16 MiB.
DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
MAX_FRAME_LIMIT: Final = 2**32 - 1
#: A batch record's prefix: a frame head announcing 0 bytes, then the message count.
BATCH_HEAD: Final = HEAD.pack(FRAME_MARK, 0)
LENGTH: Final = struct.Struct("<I")
BATCH_PREFIX: Final = HEAD.size + LENGTH.size
#: The default largest record; far below the default socket buffer (212992 bytes),
#: which bounds a SOCK_SEQPACKET record.
RECORD_SIZE: Final = 64 * 1024
_NO_FDS: Final[list[int]] = []  # shared and never mutated: most messages carry none


_Decoders: TypeAlias = (
    "tuple[msgspec.msgpack.Decoder[Any], msgspec.msgpack.Decoder[Any] | None, tuple[type, ...]]"
)
#: Checked message types and their decoders (stateless, so shared): checking a type and
#: building its strict twin costs milliseconds, and every isolate's control channel, for
#: one, has the same type. Bounded: past the limit, types are checked anew each time.
_CHECKED: dict[Any, _Decoders] = {}
_MAX_CHECKED: Final = 256


def _decoders_for(type: Any, name: str) -> _Decoders:
    """The message type checked (LocalChannelError naming ``name`` otherwise), with its
    decoder, its strict twin's decoder and the classes a message must be."""
    try:
        known = _CHECKED.get(type)
    except TypeError:  # an unhashable type: nothing to remember it by
        known = None
    if known is not None:
        return known
    check_message_type(type, name=name)
    twin = strict_twin(type)
    validator = msgspec.msgpack.Decoder(twin) if twin is not None else None
    found = (msgspec.msgpack.Decoder(type), validator, struct_classes(type) or ())
    if len(_CHECKED) < _MAX_CHECKED:
        try:
            _CHECKED[type] = found
        except TypeError:
            pass
    return found


class Codec(Generic[T]):
    """Encode messages of one type into records, and decode the records fed to it.

    ``Codec(Ping | Pong, max_frame=1 << 20, name="web->db")``. ``encode`` raises
    :class:`LocalChannelError` for a message of the wrong type or over ``max_frame``;
    ``feed`` raises :class:`RemoteChannelError` for anything wrong in a record. After a
    remote error the codec is dead: every later call raises the same error.
    """

    __slots__ = (
        "_frame",
        "_need",
        "_orphans",
        "_pending",
        "classes",
        "decode",
        "decoder",
        "encoder",
        "error",
        "max_frame",
        "name",
        "record_size",
        "type",
        "validator",
    )

    def __init__(
        self,
        type: Any,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        record_size: int = RECORD_SIZE,
        name: str = "channel",
    ) -> None:
        if not isinstance(max_frame, int) or not 0 < max_frame <= MAX_FRAME_LIMIT:
            raise LocalChannelError(
                f"channel {name!r}: max_frame={max_frame!r}; use 1 to {MAX_FRAME_LIMIT} bytes"
            )
        if not isinstance(record_size, int) or record_size <= HEAD.size:
            raise LocalChannelError(f"channel {name!r}: record_size={record_size!r} is too small")
        decoder, validator, classes = _decoders_for(type, name)
        self.name = name
        self.type = type
        self.max_frame = max_frame
        self.record_size = record_size
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = decoder
        #: Refuses unknown fields first, for types whose own decoder would drop them.
        self.validator = validator
        #: The one decode of a whole payload, every check included (unknown fields too):
        #: ``feed`` runs it, and so do the transports' fast paths. It raises msgspec's own
        #: errors (or RecursionError); on any of them a transport hands the record to
        #: ``feed_with_fds``, which says what is wrong as a RemoteChannelError.
        self.decode: Callable[[Bytes], T] = (
            self.decoder.decode
            if self.validator is None
            else _checked(self.validator.decode, self.decoder.decode)
        )
        #: Classes a message must be an instance of; empty when only decoding can tell.
        self.classes: tuple[type, ...] = classes
        self._frame: bytearray | None = None  # the frame being joined, never over _need
        self._need = 0
        self._pending: list[int] = []  # descriptors of the frame being joined
        self._orphans: list[int] = []  # descriptors no message will deliver
        #: The RemoteChannelError that killed this codec, or None while it is alive.
        self.error: RemoteChannelError | None = None

    # -- sending -----------------------------------------------------------------------

    def encode(self, msg: T) -> bytes:
        """The bytes to send for ``msg``: one record's payload when it fits in
        ``record_size``, else a frame to be cut into records of ``record_size``."""
        payload = self._payload(msg)
        size = len(payload)
        if size > self.max_frame:
            raise LocalChannelError(
                f"channel {self.name!r}: a {type(msg).__name__} of {size} bytes is over this "
                f"channel's max_frame of {self.max_frame}; raise max_frame on both ends or "
                "send the data in pieces"
            )
        if size <= self.record_size:
            return payload
        return HEAD.pack(FRAME_MARK, size) + payload

    def encode_many(self, msgs: Iterable[T]) -> list[bytes]:
        """The records (and frames) to send for ``msgs``, in order: consecutive small
        messages share batch records of at most ``record_size`` bytes; one too large to
        share goes alone, as ``encode`` makes it. Every message is checked (type,
        ``max_frame``) before anything is returned, so a bad one means nothing is sent."""
        out: list[bytes] = []
        group: list[bytes] = []
        room = self.record_size - BATCH_PREFIX  # bytes left in the batch being filled
        for msg in msgs:
            frame = self.encode(msg)
            need = LENGTH.size + len(frame)
            if need > room:
                _flush(group, out)
                room = self.record_size - BATCH_PREFIX
                if need > room:  # too large to share a record with anything
                    out.append(frame)
                    continue
            group.append(frame)
            room -= need
        _flush(group, out)
        return out

    def _payload(self, msg: T) -> bytes:
        try:
            if self.classes:
                if not isinstance(msg, self.classes):
                    raise self._wrong_type(msg, None)
                return self.encoder.encode(msg)
            payload = self.encoder.encode(msg)
            self.decoder.decode(payload)  # plain types: the peer's own check, run here first
            return payload
        except msgspec.ValidationError as exc:
            raise self._wrong_type(msg, exc) from None
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            why = f"channel {self.name!r}: cannot encode {type(msg).__name__}: {exc}"
            raise LocalChannelError(why) from None

    def _wrong_type(self, msg: object, exc: Exception | None) -> LocalChannelError:
        why = f": {exc}" if exc is not None else ""
        return LocalChannelError(
            f"channel {self.name!r} carries {describe(self.type)}, not {type(msg).__name__}{why}"
        )

    # -- receiving ---------------------------------------------------------------------

    def feed(self, record: Bytes) -> list[T]:
        """The messages completed by ``record``: none (a frame still arriving), one, or
        a batch's several."""
        if self._pending:
            raise LocalChannelError(
                f"channel {self.name!r}: the frame being received carries descriptors; "
                "keep calling feed_with_fds() once you have passed it some"
            )
        return [msg for msg, _ in self.feed_with_fds(record)]

    def feed_with_fds(self, record: Bytes, fds: list[int] = _NO_FDS) -> list[tuple[T, list[int]]]:
        """Like ``feed``, with the descriptors that arrived with ``record``; returns the
        message with its descriptors, which the caller then owns."""
        if self.error is not None:
            self._orphans += fds
            raise self.error
        if self._frame is not None:
            if fds:
                self._orphans += fds
                self._die("descriptors arrived in the middle of a message")
            return self._continue(record)
        if record and record[0] == FRAME_MARK:
            return self._start(record, fds)
        try:
            msg = self._decode(record)
        except RemoteChannelError:
            self._orphans += fds
            raise
        return [(msg, list(fds))]

    def _start(self, record: Bytes, fds: list[int]) -> list[tuple[T, list[int]]]:
        size = HEAD.unpack_from(record)[1] if len(record) >= HEAD.size else -1
        if size == 0 and len(record) > HEAD.size:
            return self._split(memoryview(record), fds)
        if not 0 <= size <= self.max_frame:
            self._orphans += fds
            self._die(
                f"the peer announced a {size}-byte message; this channel accepts at most "
                f"{self.max_frame} (max_frame)"
                if size >= 0
                else f"the peer sent a {len(record)}-byte frame head"
            )
        self._frame, self._need, self._pending = bytearray(), size, list(fds)
        return self._continue(memoryview(record)[HEAD.size :])

    def _split(self, record: memoryview, fds: list[int]) -> list[tuple[T, list[int]]]:
        """The messages of a batch record, each decoded by ``Codec.decode``; the count
        and every length are checked against the record's real size first."""
        if fds:
            self._orphans += fds
            self._die("descriptors arrived with a batch of messages; a batch carries none")
        count = LENGTH.unpack_from(record, HEAD.size)[0] if len(record) >= BATCH_PREFIX else 0
        most = (len(record) - BATCH_PREFIX) // (LENGTH.size + 1)
        if not 2 <= count <= most:
            self._die(
                f"the peer announced a batch of {count} messages in a {len(record)}-byte record"
            )
        out: list[tuple[T, list[int]]] = []
        at = BATCH_PREFIX
        for _ in range(count):
            size = LENGTH.unpack_from(record, at)[0] if at + LENGTH.size <= len(record) else -1
            at += LENGTH.size
            if not 0 <= size <= len(record) - at:
                self._die(f"a message in the peer's {len(record)}-byte batch runs past its end")
            out.append((self._decode(record[at : at + size]), []))
            at += size
        if at != len(record):
            self._die(f"the peer's batch has {len(record) - at} bytes after its last message")
        return out

    def _continue(self, piece: Bytes) -> list[tuple[T, list[int]]]:
        frame = self._frame
        assert frame is not None
        if len(frame) + len(piece) > self._need:
            self._die(f"the peer sent more than the {self._need} bytes it announced")
        frame += piece
        if len(frame) < self._need:
            return []
        msg, self._frame, mine, self._pending = self._decode(frame), None, self._pending, []
        return [(msg, mine)]

    def _decode(self, payload: Bytes) -> T:
        if not payload:
            self._die("the peer sent an empty message")
        if len(payload) > self.max_frame:
            self._die(
                f"the peer sent a {len(payload)}-byte message; this channel accepts at "
                f"most {self.max_frame} (max_frame)"
            )
        try:
            msg: T = self.decode(payload)
        except Exception as exc:  # the peer's bytes, whatever msgspec (or RecursionError)
            self._die(f"the peer sent something that is not a {describe(self.type)}: {exc}")
        return msg

    def feed_eof(self) -> NoReturn:
        """The peer closed: raise :class:`ChannelClosed` (``truncated`` mid-message)."""
        if self.error is None:
            text = f"channel {self.name!r}: the peer closed it"
            if self._frame is not None:
                got, need = len(self._frame), self._need
                text += f" in the middle of a message ({got} of {need} bytes received)"
            self.error = ChannelClosed(text, truncated=self._frame is not None)
            self._frame = None
        raise self.error

    @property
    def idle(self) -> bool:
        """True when alive and not in the middle of a multi-record message: the next
        record is a message of its own (what the transports' fast path relies on)."""
        return self._frame is None and self.error is None

    @property
    def buffered(self) -> int:
        """Bytes held for a message being joined (never more than ``max_frame``)."""
        return 0 if self._frame is None else len(self._frame)

    def drain_fds(self) -> list[int]:
        """Descriptors the codec holds but will never deliver: the caller closes them."""
        out, self._orphans = self._orphans, []
        if self.error is not None:
            out += self._pending
            self._pending = []
        return out

    def close(self) -> list[int]:
        """Drop any partial message and return every descriptor held, for closing."""
        out = self._orphans + self._pending
        self._orphans, self._pending, self._frame = [], [], None
        return out

    def _die(self, why: str) -> NoReturn:
        self.error = RemoteChannelError(f"channel {self.name!r}: {why}")
        self._frame = None
        raise self.error


def _flush(group: list[bytes], out: list[bytes]) -> None:
    """Move the payloads in ``group`` to ``out``: alone as itself, several as a batch."""
    if len(group) == 1:
        out.append(group[0])
    elif group:
        parts = [BATCH_HEAD, LENGTH.pack(len(group))]
        for payload in group:
            parts += (LENGTH.pack(len(payload)), payload)
        out.append(b"".join(parts))
    group.clear()


def _checked(
    validate: Callable[[Bytes], object], decode: Callable[[Bytes], T]
) -> Callable[[Bytes], T]:
    """``decode`` for a type whose own decoder would drop unknown fields: its strict twin
    refuses them first."""

    def decode_checked(payload: Bytes) -> T:
        validate(payload)
        return decode(payload)

    return decode_checked

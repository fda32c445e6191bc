"""What the blocking and the async endpoint share: one end of a unix SOCK_SEQPACKET
socketpair, its codec, the messages received but not yet taken, and the channel's fate.

A message up to ``RECORD_SIZE`` bytes is one record, sent and received whole by one
syscall; a longer one is a frame over several records, which the codec joins again.
Descriptors ride on a message's first record. The transports differ only in how they
wait; what a received record does (descriptor checks, decoding, marking the channel
dead) happens here.

The fast path. Most records are a whole message on a healthy channel, and each transport
decodes those inline with the codec's ``decode`` (``_fast_recv``): the very function
``feed`` runs, so the fast path makes every check the codec makes (unknown fields too);
a record it refuses goes to ``feed_with_fds``, which raises the RemoteChannelError. Each
transport also encodes and sends a small Struct inline (``_fast_send``); anything else
(frame heads, errors, EOF, descriptors, timeouts) goes through the codec. ``_refresh()``
recomputes both flags whenever the state they depend on changes.
"""

from __future__ import annotations

import errno
import socket
from collections import deque
from typing import Any, Final, Generic, TypeVar

from ._codec import DEFAULT_MAX_FRAME, RECORD_SIZE, Codec
from ._errors import ChannelClosed, LocalChannelError, RemoteChannelError
from ._scm import SCM_MAX_FD, ancillary_size, close_all, received_fds

T = TypeVar("T")

SOCK_TYPE: Final = socket.SOCK_SEQPACKET
# Plain ints: IntFlag arithmetic costs a Python call per message.
RECV_FLAGS: Final = int(socket.MSG_CMSG_CLOEXEC | socket.MSG_TRUNC)
TRUNC: Final = int(socket.MSG_TRUNC)
CTRUNC: Final = int(socket.MSG_CTRUNC)
SEND_FLAGS: Final = int(socket.MSG_NOSIGNAL)  # EPIPE, never SIGPIPE, whatever the disposition
DONTWAIT: Final = int(socket.MSG_DONTWAIT)


def peer_gone(exc: OSError) -> bool:
    """True for the errors a send or a read gets once the peer has closed its end."""
    return exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)


class Endpoint(Generic[T]):
    """One end of a channel. Not for concurrent use: one task or thread sends and one
    receives at a time, as with a socket."""

    _sock: socket.socket | None

    def __init__(
        self,
        sock: socket.socket,
        type: Any,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_fds: int = 0,
        name: str = "channel",
    ) -> None:
        _check_socket(sock, name)
        if not isinstance(max_fds, int) or not 0 <= max_fds <= SCM_MAX_FD:
            raise LocalChannelError(f"channel {name!r}: max_fds={max_fds!r}; use 0 to {SCM_MAX_FD}")
        self._codec: Codec[T] = Codec(type, max_frame=max_frame, name=name)
        self._sock = sock
        self.name = name
        self.max_fds = max_fds
        self._inbox: deque[tuple[T, list[int]]] = deque()
        self._rbuf = bytearray(RECORD_SIZE)
        self._rview = memoryview(self._rbuf)
        self._ancsize = ancillary_size(max_fds)
        self._error: RemoteChannelError | None = None
        self._broken: str | None = None
        # The fast path's view of the codec (see the module docstring).
        codec = self._codec
        self._encode = codec.encoder.encode
        self._decode = codec.decode  # the codec's own entry point: every check included
        self._classes = codec.classes
        self._limit = min(RECORD_SIZE, codec.max_frame)
        self._fast_send = self._fast_recv = False
        self._refresh()

    def _refresh(self) -> None:
        healthy = self._sock is not None and self._error is None
        self._fast_send = healthy and self._broken is None
        self._fast_recv = healthy and self._ancsize == 0 and self._codec.idle

    @property
    def type(self) -> Any:
        """The message type this channel carries."""
        return self._codec.type

    @property
    def max_frame(self) -> int:
        return self._codec.max_frame

    @property
    def closed(self) -> bool:
        return self._sock is None

    def fileno(self) -> int:
        """The socket's descriptor (still owned by this endpoint)."""
        if self._sock is None:
            raise LocalChannelError(f"channel {self.name!r} is closed on this side")
        return self._sock.fileno()

    def _open(self) -> socket.socket:
        sock = self._sock
        if sock is None:
            raise LocalChannelError(f"channel {self.name!r} is closed on this side")
        if self._error is not None:
            raise self._error
        return sock

    def _open_for_send(self) -> socket.socket:
        sock = self._open()
        if self._broken is not None:
            raise LocalChannelError(self._broken)
        return sock

    # -- what a received record does ---------------------------------------------------

    def _read_record(self, sock: socket.socket, extra: int = 0) -> None:
        """Read and absorb one record; BlockingIOError when none is there (non-blocking,
        or ``extra=DONTWAIT``)."""
        try:
            if self._ancsize:
                anc_size, flags = self._ancsize, RECV_FLAGS | extra
                n, anc, flags, _ = sock.recvmsg_into((self._rview,), anc_size, flags)
                return self._absorb_msg(n, anc, flags)
            n = sock.recv_into(self._rbuf, 0, TRUNC | extra)
        except BlockingIOError:
            raise
        except OSError as exc:
            n = self._read_failed(exc)
        return self._absorb(n)

    def _absorb(self, nbytes: int) -> None:
        """Decode one record read with recv (on a channel without descriptors the kernel
        discards any a peer attaches: they are never installed here)."""
        codec = self._codec
        try:
            if nbytes > RECORD_SIZE:
                self._oversized_record(nbytes)
            if nbytes:
                self._inbox.extend(codec.feed_with_fds(self._rview[:nbytes]))
            else:
                codec.feed_eof()  # an empty record reads as EOF too: a peer's way to quit
        except RemoteChannelError as exc:
            self._die(exc)
            raise
        self._refresh()  # a frame head or an error ends the fast path

    def _absorb_msg(self, nbytes: int, ancdata: list[tuple[int, int, bytes]], flags: int) -> None:
        """Decode one record read with recvmsg, with the descriptors that came with it."""
        if not (ancdata or flags & (CTRUNC | TRUNC)):
            return self._absorb(nbytes)
        try:
            fds = received_fds(ancdata, flags, max_fds=self.max_fds, name=self.name)
            if flags & TRUNC:
                close_all(fds)
                self._oversized_record(nbytes)
            self._inbox.extend(self._codec.feed_with_fds(self._rview[:nbytes], fds))
        except RemoteChannelError as exc:
            self._die(exc)
            raise
        return None

    # -- batches -----------------------------------------------------------------------

    def _take_ready(self, max_count: int) -> None:
        """Read records that are already there, without waiting, until ``max_count``
        messages are waiting. An error stops it quietly once a message is waiting: the
        channel is dead and the next call raises it, after these have been taken."""
        sock = self._sock
        while len(self._inbox) < max_count and sock is not None and self._error is None:
            try:
                self._read_record(sock, DONTWAIT)
            except BlockingIOError:
                return
            except RemoteChannelError:
                if not self._inbox:
                    raise
                return

    def _pop_many(self, max_count: int) -> list[T]:
        """Up to ``max_count`` waiting messages; descriptors that came with them are closed."""
        inbox, out = self._inbox, []
        for _ in range(min(max_count, len(inbox))):
            msg, fds = inbox.popleft()
            if fds:
                close_all(fds)
            out.append(msg)
        return out

    def _oversized_record(self, nbytes: int) -> None:
        raise RemoteChannelError(
            f"channel {self.name!r}: the peer sent a record of {nbytes} bytes or more; "
            f"records are at most {RECORD_SIZE}"
        )

    def _die(self, exc: RemoteChannelError) -> None:
        self._error = exc
        self._refresh()
        close_all(self._codec.drain_fds())

    @staticmethod
    def _read_failed(exc: OSError) -> int:
        """A reset is the peer going away: read it as EOF (0 bytes); raise anything else."""
        if peer_gone(exc):
            return 0
        raise exc

    def _send_failed(self, exc: OSError) -> OSError | ChannelClosed:
        """What to raise for a send the kernel refused."""
        if peer_gone(exc):
            return ChannelClosed(f"channel {self.name!r}: the peer closed it")
        return exc

    def _mark_broken(self, sent: int, total: int) -> None:
        self._broken = (
            f"channel {self.name!r}: an earlier send was interrupted after {sent} of "
            f"{total} bytes; the peer would misread anything sent after it"
        )
        self._refresh()

    # -- handing over and ending -------------------------------------------------------

    def _detach_socket(self) -> socket.socket:
        """Hand the socket over (to another endpoint or a child) with nothing pending."""
        sock = self._sock
        if sock is None:
            raise LocalChannelError(f"channel {self.name!r} is closed on this side")
        if self._inbox or self._codec.buffered:
            raise LocalChannelError(
                f"channel {self.name!r} holds received data; take every message before "
                "handing the endpoint over"
            )
        self._sock = None
        self._refresh()
        return sock

    def _release(self) -> None:
        """Forget everything received and close the descriptors that came with it."""
        self._refresh()
        while self._inbox:
            close_all(self._inbox.popleft()[1])
        close_all(self._codec.close())

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else f"fd={self._sock.fileno()}"
        return f"<{type(self).__name__} {self.name!r} {self._codec.type!r} {state}>"


def check_count(max_count: object, name: str) -> None:
    """Refuse a ``max_count`` that is not a positive int (bool included)."""
    if type(max_count) is not int or max_count < 1:
        raise LocalChannelError(f"channel {name!r}: max_count={max_count!r}; use an int >= 1")


def adopt_fd(fd: int, name: str) -> socket.socket:
    """A socket object owning ``fd``, which must be one end of a channel."""
    try:
        sock = socket.socket(fileno=fd)  # asks the kernel for family and type
    except OSError as exc:
        raise LocalChannelError(
            f"channel {name!r}: descriptor {fd} is not an open socket ({exc.strerror}); pass "
            "the endpoint's fileno() in pass_fds and reopen that number"
        ) from None
    try:
        _check_socket(sock, name)
    except LocalChannelError:
        sock.detach()  # still the caller's
        raise
    return sock


def _check_socket(sock: socket.socket, name: str) -> None:
    if sock.family != socket.AF_UNIX or sock.type != SOCK_TYPE:
        raise LocalChannelError(
            f"channel {name!r}: descriptor {sock.fileno()} is a {sock.family.name} "
            f"{sock.type.name} socket, not one end of a channel (AF_UNIX SOCK_SEQPACKET)"
        )


def socketpair() -> tuple[socket.socket, socket.socket]:
    """Two connected channel sockets (close-on-exec, as Python makes every socket)."""
    return socket.socketpair(socket.AF_UNIX, SOCK_TYPE)

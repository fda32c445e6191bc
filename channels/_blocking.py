"""The blocking endpoint: ``Channel``, and ``open_pair`` to make two connected ones."""

from __future__ import annotations

import math
import select
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from ._codec import DEFAULT_MAX_FRAME, RECORD_SIZE
from ._endpoint import SEND_FLAGS, TRUNC, Endpoint, adopt_fd, check_count, socketpair
from ._errors import ChannelClosed
from ._rules_lazy import rules_of
from ._scm import FdLike, close_all, rights

if TYPE_CHECKING:
    from ._rules import ChannelRules

T = TypeVar("T")
U = TypeVar("U")


class Channel(Endpoint[T]):
    """A blocking endpoint of a typed channel over a unix stream socket.

    ``send(msg, fds=())`` blocks while the socket is full (backpressure, never an
    unbounded buffer); ``recv(timeout=None)`` returns the next message; iterating yields
    messages until the peer closes. ``recv_with_fds()`` also returns the descriptors that
    came with the message (close-on-exec, yours to close); ``recv()`` closes them.

    Get one from :func:`open_pair`, or reopen an inherited descriptor with
    :meth:`Channel.from_fd`. One thread sends and one receives at a time.

    ``send_many(msgs)`` and ``recv_many(max_count, timeout=None)`` batch small messages:
    several share one record, so a stream of them costs fewer syscalls (no descriptors).

    ``Channel.RULES`` is the RuleSet of the syscalls a reopened blocking endpoint makes
    (sendto, recvfrom, sendmsg, recvmsg, poll), for a worker's policy.
    """

    if TYPE_CHECKING:
        RULES: ClassVar[ChannelRules]
    else:
        RULES = rules_of("BLOCKING_RULES")  # built on first use: see _rules.rules_of
    _poller: select.poll | None = None

    def __init__(self, sock: socket.socket, type: Any, **options: Any) -> None:
        super().__init__(sock, type, **options)
        if sock.gettimeout() is not None:
            sock.settimeout(None)  # a Channel blocks; recv(timeout=...) polls instead

    @overload
    @classmethod
    def from_fd(
        cls, fd: int, type: type[U], *, max_frame: int = ..., max_fds: int = ..., name: str = ...
    ) -> Channel[U]: ...
    @overload
    @classmethod
    def from_fd(
        cls, fd: int, type: Any, *, max_frame: int = ..., max_fds: int = ..., name: str = ...
    ) -> Channel[Any]: ...
    @classmethod
    def from_fd(
        cls,
        fd: int,
        type: Any,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_fds: int = 0,
        name: str = "channel",
    ) -> Channel[Any]:
        """Reopen an endpoint inherited by descriptor number (``pass_fds``) in a child.

        Both ends must agree on ``type``, ``max_frame`` and ``max_fds``. Reopen before
        the process loads its policy: checking the descriptor uses getsockopt.
        """
        sock = adopt_fd(fd, name)
        try:
            channel = cls(sock, type, max_frame=max_frame, max_fds=max_fds, name=name)
        except BaseException:
            sock.detach()  # the descriptor stays the caller's
            raise
        sock.setblocking(True)
        return channel

    # -- sending -----------------------------------------------------------------------

    def send(self, msg: T, fds: Sequence[FdLike] = ()) -> None:
        """Send ``msg`` (and copies of ``fds``, which stay yours); blocks while full."""
        if self._fast_send and not fds and isinstance(msg, self._classes):
            try:
                payload = self._encode(msg)
                if len(payload) <= self._limit:
                    self._sock.send(payload, SEND_FLAGS)  # type: ignore[union-attr]
                    return
            except OSError as exc:
                raise self._send_failed(exc) from None
            except Exception:  # the codec below says what is wrong with msg
                pass
        self._send_slow(msg, fds)

    def _send_slow(self, msg: T, fds: Sequence[FdLike]) -> None:
        sock = self._open_for_send()
        frame = self._codec.encode(msg)
        try:
            if fds or len(frame) > RECORD_SIZE:
                self._send_records(sock, frame, fds)
            else:
                sock.send(frame, SEND_FLAGS)  # one record: all or nothing
        except OSError as exc:
            raise self._send_failed(exc) from None

    def _send_records(self, sock: socket.socket, frame: bytes, fds: Sequence[FdLike]) -> None:
        """A frame with descriptors (on its first record), or one that needs several."""
        view = memoryview(frame)
        first = view[:RECORD_SIZE]
        if fds:
            sock.sendmsg((first,), rights(fds, max_fds=self.max_fds, name=self.name), SEND_FLAGS)
        else:
            sock.send(first, SEND_FLAGS)
        sent = len(first)
        try:
            while sent < len(view):
                sent += sock.send(view[sent : sent + RECORD_SIZE], SEND_FLAGS)
        except BaseException:  # Ctrl-C or EPIPE half-way: the stream is misaligned now
            self._mark_broken(sent, len(view))
            raise

    def send_many(self, msgs: Iterable[T]) -> None:
        """Send ``msgs`` in order, small ones packed several to a record; blocks while
        full. Every message is checked first: a bad one raises LocalChannelError and
        nothing is sent. A batch carries no descriptors (use ``send`` for those). If
        interrupted, the messages before some point have been sent, whole, and the
        channel stays usable."""
        sock = self._open_for_send()
        records = self._codec.encode_many(msgs)
        try:
            for record in records:
                if len(record) > RECORD_SIZE:
                    self._send_records(sock, record, ())
                else:
                    sock.send(record, SEND_FLAGS)
        except OSError as exc:
            raise self._send_failed(exc) from None

    # -- receiving ---------------------------------------------------------------------

    def recv_many(self, max_count: int, timeout: float | None = None) -> list[T]:
        """Between 1 and ``max_count`` messages, in order: waits (at most ``timeout``
        seconds, ``TimeoutError``) for the first, then adds only those already received
        or readable without waiting. Errors as ``recv``; descriptors are closed."""
        check_count(max_count, self.name)
        if not self._inbox:
            self._fill(timeout)
        self._take_ready(max_count)
        return self._pop_many(max_count)

    def recv(self, timeout: float | None = None) -> T:
        """The next message; waits at most ``timeout`` seconds (``TimeoutError``).

        Raises :class:`ChannelClosed` once the peer has closed and every message it sent
        has been taken. Descriptors that came with the message are closed.
        """
        if self._fast_recv and timeout is None and not self._inbox:
            try:
                n = self._sock.recv_into(self._rbuf, 0, TRUNC)  # type: ignore[union-attr]
            except OSError as exc:
                n = self._read_failed(exc)
            if 0 < n <= self._limit:
                try:
                    return self._decode(self._rview[:n])
                except Exception:  # the codec below says what is wrong with it
                    pass
            self._absorb(n)
        if not self._inbox:
            self._fill(timeout)
        msg, fds = self._inbox.popleft()
        if fds:
            close_all(fds)
        return msg

    def recv_with_fds(self, timeout: float | None = None) -> tuple[T, list[int]]:
        """The next message and the descriptors that came with it (yours to close)."""
        if self._fast_recv and timeout is None and not self._inbox:
            return self.recv(), []  # no descriptors on this channel: recv's fast path
        if not self._inbox:
            self._fill(timeout)
        return self._inbox.popleft()

    def _fill(self, timeout: float | None) -> None:
        """Read records until at least one message is waiting."""
        sock = self._open()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._inbox:
            if deadline is not None:
                self._wait_readable(sock, deadline, timeout)
            self._read_record(sock)

    def _wait_readable(self, sock: socket.socket, deadline: float, timeout: float | None) -> None:
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)
        ms = math.ceil(max(0.0, deadline - time.monotonic()) * 1000)
        if not self._poller.poll(ms):
            raise TimeoutError(f"channel {self.name!r}: no message within {timeout} s")

    def __iter__(self) -> Iterator[T]:
        """Messages until the peer closes (a close mid-message raises ChannelClosed)."""
        recv = self.recv
        while True:
            try:
                msg = recv()
            except ChannelClosed as exc:
                if exc.truncated:
                    raise
                return
            yield msg

    # -- ending ------------------------------------------------------------------------

    def close(self) -> None:
        """Close this end (idempotent); the peer sees EOF once it has read what was sent.

        Messages received but not taken are dropped, and their descriptors closed.
        """
        sock, self._sock = self._sock, None
        if sock is not None:
            self._release()
            sock.close()

    def detach(self) -> int:
        """Give up the descriptor without closing it (to hand it to a child process).
        Refused while received messages are waiting: they would be lost."""
        return self._detach_socket().detach()

    def __enter__(self) -> Channel[T]:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@overload
def open_pair(
    type: type[T], *, max_frame: int = ..., max_fds: int = ..., name: str = ...
) -> tuple[Channel[T], Channel[T]]: ...
@overload
def open_pair(
    type: Any, *, max_frame: int = ..., max_fds: int = ..., name: str = ...
) -> tuple[Channel[Any], Channel[Any]]: ...
def open_pair(
    type: Any, *, max_frame: int = DEFAULT_MAX_FRAME, max_fds: int = 0, name: str = "channel"
) -> tuple[Channel[Any], Channel[Any]]:
    """Two connected blocking endpoints carrying ``type`` (a msgspec Struct, a tagged
    union of Structs, or a plain type such as ``bytes``).

    ``max_frame`` caps one encoded message (16 MiB by default); ``max_fds`` is how many
    descriptors one message may carry (0: none). ``name`` appears in every error.
    """
    a, b = socketpair()
    try:
        return (
            Channel(a, type, max_frame=max_frame, max_fds=max_fds, name=name),
            Channel(b, type, max_frame=max_frame, max_fds=max_fds, name=name),
        )
    except BaseException:
        a.close()
        b.close()
        raise

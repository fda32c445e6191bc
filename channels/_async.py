"""The anyio endpoint: ``AsyncChannel``, on asyncio and trio alike.

It is not built on anyio's socket streams (about 60 us a message here) but on the raw
non-blocking socket: try the syscall, and only when the kernel says EAGAIN wait for it
(``anyio.wait_writable``, and for reading ``_readable.Readable``: trio's own wait, or on
asyncio a reader kept registered across receives). An operation that completes at once does not
yield to the event loop, except every ``YIELD_EVERY``-th one, which passes through
``anyio.lowlevel.checkpoint()``: a busy channel cannot starve other tasks, cancellation
reaches a task within that many messages, and a message costs no loop round-trip.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Final, TypeVar, overload

import anyio
import anyio.lowlevel
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from ._blocking import Channel
from ._codec import DEFAULT_MAX_FRAME, RECORD_SIZE
from ._endpoint import SEND_FLAGS, TRUNC, Endpoint, adopt_fd, check_count, socketpair
from ._errors import ChannelClosed, LocalChannelError
from ._readable import Readable
from ._rules import ASYNC_RULES, ChannelRules
from ._scm import FdLike, close_all, rights

T = TypeVar("T")
U = TypeVar("U")

#: Operations that complete without waiting between two forced checkpoints.
YIELD_EVERY: Final = 64


class AsyncChannel(Endpoint[T], ObjectSendStream[T], ObjectReceiveStream[T]):
    """An async endpoint of a typed channel (an anyio object stream).

    ``await send(msg, fds=())``, ``await receive()``, ``async for msg in channel``,
    ``await aclose()``; ``receive_with_fds()`` also returns the descriptors that came with
    a message. Make one with :func:`open_async_pair`, :meth:`from_channel` or
    :meth:`from_fd`. One task sends and one receives at a time. ``send_many(msgs)`` and
    ``receive_many(max_count)`` batch small messages as ``Channel`` does.

    ``AsyncChannel.RULES`` is the RuleSet of the syscalls it makes on an asyncio or trio
    loop started before the policy was applied (sends, receives, epoll_wait, epoll_ctl);
    add ``ChannelRules.nothing().allow_loop_startup()`` to start the loop afterwards.
    """

    RULES: ClassVar[ChannelRules] = ASYNC_RULES

    def __init__(self, sock: socket.socket, type: Any, **options: Any) -> None:
        super().__init__(sock, type, **options)
        sock.setblocking(False)
        self._budget = YIELD_EVERY
        self._readable = Readable()

    @overload
    @classmethod
    def from_fd(
        cls, fd: int, type: type[U], *, max_frame: int = ..., max_fds: int = ..., name: str = ...
    ) -> AsyncChannel[U]: ...
    @overload
    @classmethod
    def from_fd(
        cls, fd: int, type: Any, *, max_frame: int = ..., max_fds: int = ..., name: str = ...
    ) -> AsyncChannel[Any]: ...
    @classmethod
    def from_fd(
        cls,
        fd: int,
        type: Any,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_fds: int = 0,
        name: str = "channel",
    ) -> AsyncChannel[Any]:
        """Reopen an endpoint inherited by descriptor number (see ``Channel.from_fd``)."""
        sock = adopt_fd(fd, name)
        try:
            return cls(sock, type, max_frame=max_frame, max_fds=max_fds, name=name)
        except BaseException:
            sock.detach()  # the descriptor stays the caller's
            raise

    @classmethod
    def from_channel(cls, channel: Channel[U]) -> AsyncChannel[U]:
        """Take over a blocking endpoint, which is closed (detached) by this."""
        options = {"max_frame": channel.max_frame, "max_fds": channel.max_fds}
        sock = channel._detach_socket()
        return AsyncChannel(sock, channel.type, name=channel.name, **options)

    # -- sending -----------------------------------------------------------------------

    async def send(self, msg: T, fds: Sequence[FdLike] = ()) -> None:
        """Send ``msg`` (and copies of ``fds``); waits while the socket is full."""
        if self._fast_send and not fds and isinstance(msg, self._classes):
            try:
                payload = self._encode(msg)
            except Exception:  # the codec below says what is wrong with msg
                payload = None
            if payload is not None and len(payload) <= self._limit:
                try:
                    self._sock.send(payload, SEND_FLAGS)  # type: ignore[union-attr]
                except BlockingIOError:
                    return await self._send_frame(payload, ())
                except OSError as exc:
                    raise self._send_failed(exc) from None
                await self._count_without_waiting()
                return None
        self._open_for_send()
        await self._send_frame(self._codec.encode(msg), fds)
        return None

    async def _send_frame(self, frame: bytes, fds: Sequence[FdLike]) -> None:
        """Send ``frame`` record by record, descriptors on the first, waiting when full."""
        anc = rights(fds, max_fds=self.max_fds, name=self.name) if fds else None
        view, sent, waited = memoryview(frame), 0, False
        try:
            while sent < len(view):
                sock = self._open()
                record = view[sent : sent + RECORD_SIZE]
                try:
                    if anc is not None and not sent:
                        sent += sock.sendmsg((record,), anc, SEND_FLAGS)
                    else:
                        sent += sock.send(record, SEND_FLAGS)
                except BlockingIOError:
                    await self._wait(anyio.wait_writable, sock)
                    waited = True
        except OSError as exc:
            self._interrupted(sent, len(view))
            raise self._send_failed(exc) from None
        except BaseException:  # cancelled half-way
            self._interrupted(sent, len(view))
            raise
        if not waited:
            await self._count_without_waiting()

    async def send_many(self, msgs: Iterable[T]) -> None:
        """Send ``msgs`` in order, small ones packed several to a record (see
        ``Channel.send_many``); waits while the socket is full. Cancelled, the messages
        before some point have been sent, whole, and the channel stays usable."""
        self._open_for_send()
        for record in self._codec.encode_many(msgs):
            await self._send_frame(record, ())

    def _interrupted(self, sent: int, total: int) -> None:
        if 0 < sent < total:
            self._mark_broken(sent, total)

    # -- receiving ---------------------------------------------------------------------

    async def receive(self) -> T:
        """The next message (its descriptors, if any, are closed).

        Raises :class:`ChannelClosed` once the peer has closed and every message it sent
        has been taken.
        """
        waited = False
        while self._fast_recv and not self._inbox:
            try:
                n = self._sock.recv_into(self._rbuf, 0, TRUNC)  # type: ignore[union-attr]
            except BlockingIOError:
                await self._wait(self._readable.wait, self._sock)  # type: ignore[arg-type]
                waited = True
                continue
            except OSError as exc:
                n = self._read_failed(exc)
            if 0 < n <= self._limit:
                try:
                    msg: T = self._decode(self._rview[:n])
                except Exception:  # the codec below says what is wrong with it
                    self._absorb(n)
                    break
                if not waited:
                    await self._count_without_waiting()
                return msg
            self._absorb(n)  # a frame head, EOF or an oversized record: the codec decides
            break
        msg, fds = await self._next(waited)
        if fds:
            close_all(fds)
        return msg

    async def receive_many(self, max_count: int) -> list[T]:
        """Between 1 and ``max_count`` messages, in order: waits for the first, then adds
        only those already received or readable without waiting (time it out with
        ``anyio.fail_after``). Errors as ``receive``; descriptors are closed."""
        check_count(max_count, self.name)
        waited = await self._fill()
        self._take_ready(max_count)
        if not waited:
            await self._count_without_waiting()
        return self._pop_many(max_count)

    async def receive_with_fds(self) -> tuple[T, list[int]]:
        """The next message and the descriptors that came with it (yours to close)."""
        return await self._next(False)

    async def _fill(self) -> bool:
        """Read until a message is in the inbox; whether that meant waiting."""
        waited = False
        while not self._inbox:
            sock = self._open()
            try:
                self._read_record(sock)
            except BlockingIOError:
                await self._wait(self._readable.wait, sock)
                waited = True
        return waited

    async def _next(self, waited: bool) -> tuple[T, list[int]]:
        waited = await self._fill() or waited
        if not waited:
            await self._count_without_waiting()
        return self._inbox.popleft()

    def __aiter__(self) -> AsyncChannel[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except ChannelClosed as exc:
            if exc.truncated:
                raise
            raise StopAsyncIteration from None

    # -- waiting -----------------------------------------------------------------------

    async def _wait(self, wait: Any, sock: socket.socket) -> None:
        try:
            await wait(sock)
        except anyio.ClosedResourceError:
            raise LocalChannelError(f"channel {self.name!r} was closed while waiting") from None
        self._budget = YIELD_EVERY

    async def _count_without_waiting(self) -> None:
        """Count an operation that did not wait; every YIELD_EVERY-th one checkpoints."""
        self._budget -= 1
        if self._budget <= 0:
            self._budget = YIELD_EVERY
            await anyio.lowlevel.checkpoint()

    # -- ending ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this end (idempotent), waking any task waiting on it; the peer sees EOF
        once it has read what was sent. Messages not taken are dropped."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._readable.close(sock)
            self._release()
            sock.close()
        await anyio.lowlevel.checkpoint()

    def detach(self) -> int:
        """Give up the descriptor without closing it (see ``Channel.detach``)."""
        sock = self._detach_socket()
        self._readable.close(sock)
        return sock.detach()


@overload
def open_async_pair(
    type: type[T], *, max_frame: int = ..., max_fds: int = ..., name: str = ...
) -> tuple[AsyncChannel[T], AsyncChannel[T]]: ...
@overload
def open_async_pair(
    type: Any, *, max_frame: int = ..., max_fds: int = ..., name: str = ...
) -> tuple[AsyncChannel[Any], AsyncChannel[Any]]: ...
def open_async_pair(
    type: Any, *, max_frame: int = DEFAULT_MAX_FRAME, max_fds: int = 0, name: str = "channel"
) -> tuple[AsyncChannel[Any], AsyncChannel[Any]]:
    """Two connected async endpoints (see :func:`open_pair` for the options)."""
    a, b = socketpair()
    try:
        return (
            AsyncChannel(a, type, max_frame=max_frame, max_fds=max_fds, name=name),
            AsyncChannel(b, type, max_frame=max_frame, max_fds=max_fds, name=name),
        )
    except BaseException:
        a.close()
        b.close()
        raise

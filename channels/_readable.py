"""Waiting until a channel's socket is readable, as cheaply as each event loop allows.

On trio, ``anyio.wait_readable`` is trio's own (one epoll_ctl per wait). On asyncio it
registers a reader, creates a future and removes the reader again on every wait: two
epoll_ctl calls and a good deal of bookkeeping per message, about 20 us here. A channel
that receives in a loop waits again almost at once, so ``AsyncioReader`` keeps its reader
registered across waits. The loop reports the socket readable once more before the woken
task gets to read it; that one report is expected, and only a second one with nobody
waiting (a task that stopped receiving) unregisters the reader, so an idle channel never
makes the loop spin.
"""

from __future__ import annotations

import asyncio
import socket

import anyio


class AsyncioReader:
    """A reader kept registered on one asyncio loop for one socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self._waiter: asyncio.Future[None] | None = None
        self._registered = False
        self._unwanted = 0  # readiness reports with nobody waiting, in a row

    def _ready(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            self._unwanted += 1
            if self._unwanted > 1:
                self._unregister()
            return
        self._unwanted = 0
        if not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        if not self._registered:
            self.loop.add_reader(self.fd, self._ready)
            self._registered, self._unwanted = True, 0
        self._waiter = waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            if not self.loop.is_closed():
                self.loop.remove_reader(self.fd)

    def close(self) -> None:
        """Unregister, and fail a waiting task with ClosedResourceError."""
        self._unregister()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(anyio.ClosedResourceError())


class Readable:
    """``await readable.wait(sock)``: wait for ``sock`` on whatever loop is running."""

    def __init__(self) -> None:
        self._asyncio: AsyncioReader | None = None

    async def wait(self, sock: socket.socket) -> None:
        if _asyncio_task() is None:
            await anyio.wait_readable(sock)
            return
        reader, loop = self._asyncio, asyncio.get_running_loop()
        if reader is None or reader.loop is not loop:
            if reader is not None:
                reader.close()
            reader = self._asyncio = AsyncioReader(loop, sock.fileno())
        await reader.wait()

    def close(self, sock: socket.socket) -> None:
        """Before ``sock`` is closed: wake every waiter (ClosedResourceError)."""
        if self._asyncio is not None:
            self._asyncio.close()
            self._asyncio = None
        try:
            anyio.notify_closing(sock)
        except RuntimeError:  # no loop running: nobody can be waiting through anyio
            pass


def _asyncio_task() -> asyncio.Task[object] | None:
    """The asyncio task running this code, or None under trio (even trio guest mode on
    an asyncio loop, whose tasks are not asyncio tasks)."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None

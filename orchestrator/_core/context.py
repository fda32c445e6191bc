"""What a worker sees: its name, its channels, a logger, and its own enforcement status.

The isolate's main builds it (before confinement) from the channel ends that came with
the boot message; the worker's function gets it as its first argument.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from isolates.channels import Channel, ChannelClosed
from isolates.channels import close_fds as close_all

from .wire import MAX_FDS, Control, Log, PeerRestarted, Stop

if TYPE_CHECKING:
    import logging

    from isolates.sandbox import Status

    from .._namespaces.options import NamespaceStatus


class WorkerContext:
    """Passed as the first argument to a Supervisor worker's function.

    ``name``; ``channel(name)`` (a blocking Channel) or ``async_channel(name)`` (the anyio
    endpoint); ``log`` (a Logger whose records reach the supervisor's logging, tagged with
    the worker's name); ``status`` (what seccomp and Landlock enforce here) and
    ``namespaces``; ``stopping`` (True once the supervisor asked this worker to stop).
    """

    def __init__(
        self,
        name: str,
        control: Channel[Any],
        channels: dict[str, Channel[Any]],
        types: dict[str, Any],
    ) -> None:
        self.name = name
        self.status: Status | None = None
        self.namespaces: NamespaceStatus | None = None
        self._control = control
        self._channels = channels
        self._types = types
        self._send_lock = threading.Lock()
        self._stopping = False
        self.log = _worker_logger(self)

    @classmethod
    def open(
        cls, name: str, fds: dict[str, int], types: dict[str, Any], control: Channel[Any]
    ) -> WorkerContext:
        """Open the channel ends that came with the boot message (before confinement)."""
        channels = {
            channel: Channel.from_fd(fd, types[channel], max_fds=MAX_FDS, name=channel)
            for channel, fd in fds.items()
        }
        return cls(name, control, channels, types)

    def channel(self, name: str) -> Channel[Any]:
        """The blocking endpoint of channel ``name`` (the current one, if renewed)."""
        self._poll_control()
        try:
            return self._channels[name]
        except KeyError:
            known = ", ".join(sorted(self._channels)) or "none"
            raise KeyError(
                f"worker {self.name!r} has no channel {name!r} (it has: {known})"
            ) from None

    @property
    def stopping(self) -> bool:
        """Whether the supervisor asked this worker to stop (checks without blocking)."""
        self._poll_control()
        return self._stopping

    def reconnect(self, name: str, timeout: float | None = None) -> Channel[Any]:
        """Wait until the peer on channel ``name`` was restarted; its new endpoint.

        A restarted worker gets fresh channels: its peers see EOF on the old endpoint,
        then call ``reconnect`` (``channel(name)`` also picks up a new endpoint that
        already arrived).
        """
        self.channel(name)  # the name must exist
        old = self._channels[name]
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._channels[name] is old and not self._stopping:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"worker {self.name!r}: channel {name!r} was not renewed")
            self._poll_control(left)
        return self.channel(name)

    def _poll_control(self, timeout: float | None = 0) -> None:
        """Handle control messages: Stop, and new endpoints for renewed channels."""
        while not self._stopping:
            try:
                msg, fds = self._control.recv_with_fds(timeout=timeout)
            except TimeoutError:
                return
            except ChannelClosed:
                self._stopping = True
                return
            timeout = 0
            if isinstance(msg, Stop):
                self._stopping = True
            elif isinstance(msg, PeerRestarted) and fds and msg.channel in self._types:
                self._channels[msg.channel].close()
                self._channels[msg.channel] = Channel.from_fd(
                    fds.pop(0), self._types[msg.channel], max_fds=MAX_FDS, name=msg.channel
                )
            close_all(fds)  # none but a renewed channel's end is due on a control message

    def send_control(self, msg: Control, fds: tuple[int, ...] = ()) -> None:
        with self._send_lock:
            self._control.send(msg, fds=fds)


def _worker_logger(ctx: WorkerContext) -> logging.Logger:
    """A logger whose records go to the supervisor over the control channel. (logging is
    imported here, before confinement, and only by supervised workers.)"""
    import logging

    class ToSupervisor(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                msg = Log(record.levelno, record.name, self.format(record), record.created)
                ctx.send_control(msg)
            except Exception:
                self.handleError(record)

    log = logging.getLogger(f"isolates.worker.{ctx.name}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(ToSupervisor())
    return log

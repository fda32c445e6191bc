"""What a worker sees: its name, its channels, a logger, and its own enforcement status."""

from __future__ import annotations

import inspect
import logging
import pickle
import select
import threading
from collections.abc import Callable
from typing import Any, Final

from isolates.channels import Channel, ChannelClosed

from ._messages import Boot, Control, Log, PeerRestarted, Stop
from ._namespaces import NamespaceStatus

#: Descriptors one message on a worker channel may carry.
MAX_FDS: Final = 16


class WorkerContext:
    """Passed as the first argument to a Supervisor worker's function.

    ``name``; ``channel(name)`` (a blocking Channel) or ``async_channel(name)`` (the anyio
    endpoint); ``log`` (a Logger whose records reach the supervisor's logging, tagged with
    the worker's name); ``status`` (what seccomp and Landlock enforce here) and
    ``namespaces``; ``stopping`` (True once the supervisor asked this worker to stop).
    """

    def __init__(self, name: str, control: Channel[Any], channels: dict[str, Channel[Any]]):
        self.name = name
        self.status: Any = None
        self.namespaces: NamespaceStatus | None = None
        self._control = control
        self._channels = channels
        self._send_lock = threading.Lock()
        self._stopping = False
        self.log = logging.getLogger(f"isolates.worker.{name}")
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)
        self.log.addHandler(_ToSupervisor(self))

    @classmethod
    def open(cls, boot: Boot, fds: list[int], control: Channel[Any]) -> WorkerContext:
        """Open the channel ends that came with the boot message (before confinement)."""
        types = pickle.loads(boot.channel_types)
        channels = {
            name: Channel.from_fd(fd, types[name], max_fds=MAX_FDS, name=name)
            for name, fd in zip(boot.channels, fds, strict=True)
        }
        return cls(boot.name, control, channels)

    def channel(self, name: str) -> Channel[Any]:
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

    def _poll_control(self) -> None:
        while not self._stopping and select.select([self._control], [], [], 0)[0]:
            try:
                msg = self._control.recv()
            except ChannelClosed:
                self._stopping = True
                return
            if isinstance(msg, Stop):
                self._stopping = True
            elif isinstance(msg, PeerRestarted):
                pass  # the channel object is replaced when its new end arrives

    def send_control(self, msg: Control) -> None:
        with self._send_lock:
            self._control.send(msg)


class _ToSupervisor(logging.Handler):
    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__()
        self._ctx = ctx

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = Log(record.levelno, record.name, self.format(record), record.created)
            self._ctx.send_control(msg)
        except Exception:
            self.handleError(record)


def call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any) -> Any:
    """Run the worker's function (with its context first, if it takes one)."""
    full = (ctx, *args) if ctx is not None else args
    if inspect.iscoroutinefunction(fn):
        import anyio

        return anyio.run(lambda: fn(*full, **kwargs))
    return fn(*full, **kwargs)


def preload_async() -> None:
    """Import anyio and its asyncio backend now: imports fail once the policy is loaded."""
    import anyio
    import anyio._backends._asyncio

    anyio.get_all_backends()

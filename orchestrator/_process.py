"""One isolate interpreter as its parent sees it: boot, ready, go, result, exit."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from isolates.channels import Channel, ChannelClosed, ChannelError, open_pair
from isolates.sandbox._kernel import Notification
from isolates.sandbox._syscalls import name_of

from ._errors import IsolateViolation, WorkerFailed
from ._messages import MAX_BOOT_FDS, Boot, Control, Failure, Go, Idle, Log, Ready, Result, Stop
from ._monitor import MONITOR
from ._spawn import SPAWNER, popen

_LIVE: set[IsolateProcess] = set()
_LIVE_LOCK = threading.Lock()


class IsolateProcess:
    """A fresh interpreter waiting for its boot message, then a worker, then gone."""

    def __init__(self, proc: subprocess.Popen[bytes], control: Channel[Any]) -> None:
        self.proc = proc
        self.control = control
        # Signals go through a pidfd: it names this process and no other, even after it
        # exits, and a confined supervisor may use it without being able to kill(2).
        self.pidfd = os.pidfd_open(proc.pid)
        self.listener: int | None = None
        self._send_lock = threading.Lock()
        self.name = f"isolate-{proc.pid}"
        self.violation: IsolateViolation | None = None
        self.ready: Ready | None = None
        with _LIVE_LOCK:
            _LIVE.add(self)

    @classmethod
    def spawn(cls) -> IsolateProcess:
        """Start an interpreter that waits for a Boot (runs the fork on the spawner thread)."""
        ours, theirs = open_pair(Control, max_fds=MAX_BOOT_FDS, name="control")
        try:
            proc = SPAWNER.run(lambda: popen(theirs.fileno(), ()))
        finally:
            theirs.close()
        return cls(proc, ours)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the interpreter has imported its boot code (a pool keeps only
        these: a call then pays for no start-up at all). False if it did not."""
        try:
            msg = self.control.recv(timeout=timeout)
        except (TimeoutError, ChannelError):
            return False
        return isinstance(msg, Idle)

    def boot(self, boot: Boot, fds: Sequence[int] = ()) -> None:
        self.name = boot.name
        try:
            self.send(boot, fds)
        except ChannelError:
            raise self.failure("died before it could boot") from None

    def wait_ready(self, deadline: float | None) -> Ready:
        msg, fds = self._next(deadline, "boot")
        if isinstance(msg, Failure):
            from ._encode import rebuild

            raise rebuild(msg, self.name)
        if not isinstance(msg, Ready):
            raise self._protocol(msg, "READY")
        if fds:
            self.listener = fds[0]
            MONITOR.watch(self.listener, self._violated)
        self.ready = msg
        return msg

    def send(self, msg: Control, fds: Sequence[int] = ()) -> None:
        """Send on the control channel (several threads may: a restart tells peers)."""
        with self._send_lock:
            self.control.send(msg, fds=fds)

    def go(self) -> None:
        self.send(Go())

    def stop(self) -> None:
        """Ask politely (a Stop message); the worker may be past reading it, or reaped."""
        try:
            self.send(Stop())
        except (ChannelError, OSError):
            pass

    def wait_outcome(self, deadline: float | None) -> Result | Failure:
        msg, _ = self._next(deadline, "run")
        if not isinstance(msg, Result | Failure):
            raise self._protocol(msg, "a result")
        return msg

    def _next(self, deadline: float | None, stage: str) -> tuple[Any, list[int]]:
        """The next message that is not a log record; the isolate's death as WorkerFailed."""
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                msg, fds = self.control.recv_with_fds(timeout=timeout)
            except TimeoutError:
                self.kill()
                raise self.failure(f"timed out during {stage}") from None
            except ChannelClosed:
                raise self.failure(f"exited during {stage}") from None
            except ChannelError as exc:
                self.kill()
                raise self.failure(f"broke its control channel: {exc}") from None
            if isinstance(msg, Log):
                _log(self.name, msg)
            elif not isinstance(msg, Idle):
                return msg, fds

    def _protocol(self, msg: object, expected: str) -> WorkerFailed:
        self.kill()
        return self.failure(f"sent {type(msg).__name__} where {expected} was due")

    def _violated(self, n: Notification) -> None:
        self.violation = IsolateViolation(self.name, name_of(n.nr), n.nr, n.args)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the isolate (a pid-1 child it forked dies with it: PDEATHSIG)."""
        self.signal(signal.SIGKILL)

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None and self.pidfd >= 0:
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except (ProcessLookupError, OSError):  # exited, or reaped meanwhile
                pass

    def reap(self, timeout: float | None = 5.0) -> int:
        """Wait for the process to exit (killing it past ``timeout``); its status."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait()
        # reap may race a waiter thread, stop() and atexit: close once, never mid-send.
        with _LIVE_LOCK, self._send_lock:
            self.control.close()
            if self.pidfd >= 0:
                os.close(self.pidfd)
                self.pidfd = -1
            if self.listener is not None:
                MONITOR.release(self.listener)
                self.listener = None
            _LIVE.discard(self)
        return code

    def failure(self, what: str) -> WorkerFailed:
        """Reap, then describe how the isolate ended: a violation, a signal, an exit code."""
        code = self.reap()
        if self.violation is not None:
            return self.violation
        if code < 0:
            sig = signal.Signals(-code)
            return WorkerFailed(self.name, f"{what}: killed by {sig.name}", signal=-code)
        return WorkerFailed(self.name, f"{what}: exit code {code}", exitcode=code)


def _log(worker: str, msg: Log) -> None:
    logger = logging.getLogger(msg.logger)
    record = logger.makeRecord(msg.logger, msg.level, "(isolate)", 0, msg.message, (), None)
    record.created = msg.created
    record.worker = worker
    logger.handle(record)


def stop_all() -> None:
    """Kill and reap every isolate still alive (atexit, Ctrl-C)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for iso in live:
        iso.kill()
    for iso in live:
        iso.reap(1.0)


def _forget_after_fork() -> None:
    # A forked child must never kill or reap its parent's isolates.
    global _LIVE_LOCK
    _LIVE.clear()
    _LIVE_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)

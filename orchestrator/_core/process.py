"""One isolate interpreter as its parent sees it: boot, ready, go, result, exit.

``runtime.spawn_isolate()`` starts one; ``runtime.LIVE`` is every one not yet reaped.

Safety argument (signals and the reap):

- Every signal to the isolate goes through its pidfd, opened right after the spawn
  while it is our unreaped child: it names that process and no other, and once the
  process is reaped it signals nothing, so a reused pid is never hit.
- Killing an isolate that may fork ends its process tree (``orphans.kill_tree``, whose
  own safety argument covers the pidfds of descendants and ``kill(-pgid)``). That needs
  the isolate unreaped: ``kill``/``signal`` and the reap's ``wait`` hold one lock, and
  both check ``returncode`` under it, so no group signal follows the reap.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

from isolates.channels import Channel, ChannelClosed, ChannelError
from isolates.channels import close_fds as close_all
from isolates.sandbox import Status
from isolates.sandbox.lowlevel import Notification, deny_notification
from isolates.sandbox.lowlevel import syscall_name as name_of

from .._namespaces.options import NamespaceStatus
from .answers import Answers
from .boot_message import for_the_isolate
from .coverage import merge as merge_coverage
from .denials import described
from .encode import rebuild
from .errors import IsolateViolation, WorkerFailed
from .fork_server import ForkedChild, ForkServer
from .lean_wire import send_pickled
from .logs import IsolateLog
from .monitor import Monitor
from .orphans import kill_tree
from .process_count import ProcessCount
from .spawn import Spawner, popen
from .wire import (
    MAX_BOOT_FDS,
    Boot,
    Control,
    Coverage,
    Failure,
    Go,
    Idle,
    Log,
    Ready,
    Result,
    Stage,
    Stop,
    converted,
)

#: A notification id no parked call has (a listener's ids count up from a random start).
_NO_SUCH_NOTIFICATION: Final = 2**64 - 1


class LiveIsolates:
    """Every isolate of this process not yet reaped (its one instance: ``runtime.LIVE``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.isolates: set[IsolateProcess] = set()

    def stop_all(self) -> None:
        """Kill and reap every isolate still alive (atexit, Ctrl-C)."""
        with self.lock:
            live = list(self.isolates)
        for iso in live:
            iso.kill()
        for iso in live:
            iso.reap(1.0)

    def after_fork_in_child(self) -> None:
        """A forked child must never kill or reap its parent's isolates."""
        self.isolates = set()
        self.lock = threading.Lock()


class IsolateProcess:
    """A fresh interpreter waiting for its boot message, then a worker, then gone."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes] | ForkedChild,
        control: Channel[Any],
        monitor: Monitor,
        live: LiveIsolates,
        pidfd: int | None = None,
    ) -> None:
        self.proc = proc
        self.control = control
        self._monitor = monitor  # watches the seccomp listener READY brings
        self._live = live
        # Signals go through a pidfd: it names this process and no other, even after it
        # exits, and a confined supervisor may use it without being able to kill(2).
        # (A forked isolate's pidfd comes from the fork server, whose child it is.)
        self.pidfd = os.pidfd_open(proc.pid) if pidfd is None else pidfd
        self.listener: int | None = None
        self._send_lock = threading.Lock()
        self.name = f"isolate-{proc.pid}"
        self.violation: IsolateViolation | None = None
        self.answers: Answers | None = None  # how its parked calls are answered
        self.logs = IsolateLog()  # its log records, bounded (see _logs)
        self._idle = False  # IDLE seen: the one message it may send before Boot
        # Booted with a policy that may fork: it waits after its result, and ending it
        # means ending its process tree (orphans.py).
        self.reaping = False
        # Orders signals (above all, to its process group) before the reap, which frees
        # its pid; one reaper at a time, so the pidfd it polls stays open meanwhile.
        self._signal_lock = threading.Lock()
        self._reap_lock = threading.Lock()
        with live.lock:
            live.isolates.add(self)

    @classmethod
    def spawn(cls, spawner: Spawner, monitor: Monitor, live: LiveIsolates) -> IsolateProcess:
        """Start an interpreter that waits for a Boot (the fork runs on the spawner thread)."""
        # The interpreter first, our typed end after: building its codec takes
        # milliseconds the first time, which then overlap the child's start-up.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = spawner.run(lambda: popen(theirs.fileno(), ()))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        control: Channel[Any] = Channel(ours, Control, max_fds=MAX_BOOT_FDS, name="control")
        return cls(proc, control, monitor, live)

    @classmethod
    def forked(cls, server: ForkServer, monitor: Monitor, live: LiveIsolates) -> IsolateProcess:
        """A fresh isolate forked by the fork server, waiting for a Boot."""
        child, pidfd, sock = server.new_child()
        control: Channel[Any] = Channel(sock, Control, max_fds=MAX_BOOT_FDS, name="control")
        return cls(child, control, monitor, live, pidfd=pidfd)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the interpreter has imported its boot code (a pool keeps only
        these: a call then pays for no start-up at all). False if it did not."""
        try:
            msg, _ = self._receive(timeout, None)
        except (TimeoutError, ChannelError):
            return False
        self._idle = isinstance(msg, Idle)
        return self._idle

    def boot(self, boot: Boot, fds: Sequence[int] = ()) -> None:
        """Send the boot message: plain data the isolate reads without msgspec (see
        ``boot_message.for_the_isolate``), in the channel's record format."""
        self.name = boot.name
        self.reaping = boot.reap
        message = for_the_isolate(boot)
        try:
            with self._send_lock:
                _send_raw(self.control, message, fds)
        except OSError:
            raise self.failure("died before it could boot") from None

    def wait_ready(self, deadline: float | None) -> tuple[Status, NamespaceStatus | None]:
        """READY: what the isolate enforces and the namespaces it entered (its listener
        watched from now on); or the boot's failure, raised."""
        msg, fds = self._next(deadline, Stage.BOOT)
        if isinstance(msg, Failure):
            raise rebuild(msg, self.name)
        if not isinstance(msg, Ready):
            raise self._protocol(msg, "READY")
        if fds:
            if not _is_listener(fds[0]):
                close_all(fds)
                raise self._protocol_error(
                    "sent READY with a descriptor that is no seccomp listener"
                )
            self.listener = fds[0]  # the monitor's from now on: reap() releases it
            self._monitor.watch(self.listener, self._notified)
        return self._statuses(msg)

    def _statuses(self, ready: Ready) -> tuple[Status, NamespaceStatus | None]:
        """READY's statuses as the dataclasses they are. Data that decoded but is no
        Status is the isolate's fault (WorkerFailed), not an error of whoever reads it."""
        try:
            status = converted(ready.status, Status)
            entered = ready.namespaces
            return status, None if entered is None else converted(entered, NamespaceStatus)
        except Exception as exc:  # whatever the isolate's data makes msgspec raise
            raise self._protocol_error(f"sent a READY with a malformed status: {exc}") from None

    def send(self, msg: Control, fds: Sequence[int] = ()) -> None:
        """Send on the control channel (several threads may: a restart tells peers)."""
        with self._send_lock:
            self.control.send(msg, fds=fds)

    def go(self) -> None:
        """Release the isolate (a restarted worker); its death meanwhile is WorkerFailed."""
        try:
            self.send(Go())
        except ChannelError:
            raise self.failure("exited before it was released") from None

    def stop(self) -> None:
        """Ask politely (a Stop message); the worker may be past reading it, or reaped."""
        try:
            self.send(Stop())
        except (ChannelError, OSError):
            pass

    def wait_outcome(self, deadline: float | None) -> Result | Failure:
        msg, _ = self._next(deadline, Stage.RUN)
        if not isinstance(msg, Result | Failure):
            raise self._protocol(msg, "a result")
        return msg

    def _next(self, deadline: float | None, stage: Stage) -> tuple[Any, list[int]]:
        """The next message that is not a log record; the isolate's death as WorkerFailed.

        The deadline is checked on every turn, before reading: records arriving without
        pause (a log flood) cannot keep a call past its timeout."""
        try:
            while True:
                msg, fds = self._receive_or_fail(deadline, stage)
                if isinstance(msg, Log):
                    self.logs.emit(self.name, msg)
                elif isinstance(msg, Coverage):
                    merge_coverage(msg)
                elif isinstance(msg, Idle) and not self._idle and stage is Stage.BOOT:
                    self._idle = True  # a pooled interpreter not yet seen idle
                else:
                    return msg, fds
        finally:
            self.logs.flush()

    def _receive_or_fail(self, deadline: float | None, stage: Stage) -> tuple[Any, list[int]]:
        """The next message within ``deadline``; every way of not getting one ends the
        isolate and raises WorkerFailed."""
        try:
            if deadline is None:
                return self._receive(None, stage)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            return self._receive(left, stage)
        except TimeoutError:
            self.kill()
            raise self.failure(f"timed out during {stage}") from None
        except ChannelClosed:
            raise self.failure(f"exited during {stage}") from None
        except ChannelError as exc:
            raise self._protocol_error(f"broke its control channel: {exc}") from None

    def _receive(self, timeout: float | None, stage: Stage | None) -> tuple[Any, list[int]]:
        """One control message, with the descriptors the protocol lets it carry: READY
        during boot carries one (the seccomp listener), nothing else carries any. Every
        other descriptor an isolate attaches is closed here, as soon as it arrives.
        (``stage`` None: the interpreter's start-up, before any Boot.)"""
        msg, fds = self.control.recv_with_fds(timeout=timeout)
        if fds:
            keep = 1 if stage is Stage.BOOT and isinstance(msg, Ready) else 0
            close_all(fds[keep:])
            fds = fds[:keep]
        return msg, fds

    def _protocol(self, msg: object, expected: str) -> WorkerFailed:
        return self._protocol_error(f"sent {type(msg).__name__} where {expected} was due")

    def _protocol_error(self, what: str) -> WorkerFailed:
        self.kill()
        return self.failure(what)

    def answer_by(self, answers: Answers) -> None:
        """Answer this isolate's parked calls by ``answers`` (set before READY: its
        listener comes with READY, and the kernel parks its calls until then)."""
        self.answers = answers

    @property
    def processes(self) -> ProcessCount | None:
        """Its processes count, if it has a limit."""
        return None if self.answers is None else self.answers.count

    def _notified(self, n: Notification) -> None:
        """A notification from this isolate's listener (on the monitor thread)."""
        answers, listener = self.answers, self.listener
        if answers is not None and listener is not None and answers.answer(listener, n):
            return
        self._violated(n)

    def _violated(self, n: Notification) -> None:
        call = described(self.listener, n) if self.listener is not None else None
        self.violation = IsolateViolation(self.name, name_of(n.nr), n.nr, n.args, call=call)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the isolate and, if it may fork, every process it started (a pid-1
        child it forked dies with it: PDEATHSIG)."""
        with self._signal_lock:
            if self.proc.returncode is not None or self.pidfd < 0:
                return
            if self.reaping:
                kill_tree(self.proc.pid, self.pidfd)
            else:
                _send(self.pidfd, signal.SIGKILL)

    def signal(self, sig: int) -> None:
        if sig == signal.SIGKILL:
            self.kill()
            return
        with self._signal_lock:
            if self.proc.returncode is None and self.pidfd >= 0:
                _send(self.pidfd, sig)

    def reap(self, timeout: float | None = 5.0) -> int:
        """Wait for the process to exit (killing it past ``timeout``); its status. One
        that may fork waits after its result for this: it is killed now, with its tree."""
        with self._reap_lock:
            if self.reaping:
                self.kill()
            if not self._exited(timeout):
                self.kill()
                self._exited(None)
            with self._signal_lock:
                code = self.proc.wait()
            self._release()
        return code

    def _exited(self, timeout: float | None) -> bool:
        """Wait until the process has exited, without reaping it (its pidfd turns readable)."""
        if self.proc.returncode is not None or self.pidfd < 0:
            return True
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0, round(timeout * 1000))))

    def _release(self) -> None:
        # reap may race a waiter thread, stop() and atexit: close once, never mid-send.
        with self._live.lock, self._send_lock, self._signal_lock:
            self.control.close()
            if self.pidfd >= 0:
                os.close(self.pidfd)
                self.pidfd = -1
            if self.listener is not None:
                self._monitor.release(self.listener)
                self.listener = None
            self._live.isolates.discard(self)

    def failure(self, what: str) -> WorkerFailed:
        """Reap, then describe how the isolate ended: a violation, a signal, an exit code."""
        code = self.reap()
        if self.violation is not None:
            return self.violation
        if code < 0:
            sig = signal.Signals(-code)
            return WorkerFailed(self.name, f"{what}: killed by {sig.name}", signal=-code)
        return WorkerFailed(self.name, f"{what}: exit code {code}", exitcode=code)


def _send_raw(control: Channel[Any], message: object, fds: Sequence[int]) -> None:
    """``lean_wire.send_pickled`` on the control channel's socket. The family, type and
    protocol are given so that wrapping the descriptor asks the kernel nothing (a confined
    supervisor boots restarted workers, and may not), and the wrapper is detached, not
    closed: the descriptor stays the channel's."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, fileno=control.fileno())
    try:
        send_pickled(sock, message, fds)
    finally:
        sock.detach()


def _send(pidfd: int, sig: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except OSError:  # exited, or reaped meanwhile
        pass


def _is_listener(fd: int) -> bool:
    """Whether ``fd`` is a seccomp listener: answering a notification id no call has
    makes a listener say ENOENT, and anything else (a socket, a pipe, /dev/null...)
    ENOTTY or EINVAL. A READY carrying something else would have the monitor thread
    spin on a descriptor that polls readable and never yields a notification."""
    try:
        deny_notification(fd, _NO_SUCH_NOTIFICATION, errno.EPERM)
    except OSError as exc:
        return exc.errno not in (errno.ENOTTY, errno.EINVAL, errno.EBADF)
    return True  # it answered a parked call: a listener all the same

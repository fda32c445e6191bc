"""The supervisor's side of seccomp user notification: one thread watching listeners.

An isolate whose policy would kill on a syscall is loaded with that action turned into
NOTIFY (and, under a processes limit, its clones too), and hands its listener
descriptor to its parent. When the isolate makes such a
call, the kernel parks it and tells this thread which syscall, with which arguments; the
thread records the violation and kills the isolate, so the call never runs. (If the
parent dies first, the kernel answers ENOSYS to parked calls: they still never run, and
PR_SET_PDEATHSIG ends the isolate.)

Its one instance is ``runtime.MONITOR``.

Safety argument:

- It only reads notifications (SECCOMP_IOCTL_NOTIF_RECV) from listeners its isolates
  handed over, and hands each to its isolate's handler (process.py), which never
  answers a violation: that parked call is never let run, and the kill that follows
  (through the isolate's pidfd) ends it. The one call a handler answers is a clone
  under a processes limit, by the isolate's own policy (process_count.py).
- A listener is read only after a check, under the lock, that its number is still
  registered and readable (RECV would block otherwise). Should it be released and the
  number reused in between, RECV fails on what is no listener (an OSError, ignored),
  or reads the new listener's notification, which goes to that listener's handler
  (looked up after the read). Each listener is closed in one place (``_forget``),
  once: when its isolate is reaped or every process using its filter is gone.
- The thread is restarted from the confined supervisor thread (``pause``/``resume``),
  so it carries the supervisor's Landlock domain like every other thread.
- In a forked child the listeners belong to the parent's isolates: the child closes its
  copies and starts with no thread and no handlers (``after_fork_in_child``).
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Callable

from isolates.sandbox.lowlevel import Notification, receive_notification, wake_synchronously

from .denials import described as described

OnViolation = Callable[[Notification], None]


class Monitor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[int, OnViolation] = {}
        self._poll = select.poll()
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def watch(self, listener: int, on_violation: OnViolation) -> None:
        """Take ownership of ``listener``; call ``on_violation`` for each notification."""
        wake_synchronously(listener)  # a denial reported or a clone counted: a round trip
        with self._lock:
            self._handlers[listener] = on_violation
            self._poll.register(listener, select.POLLIN)
            wake = self._start()
        wake.send(b"\0")

    def _start(self) -> socket.socket:
        """The thread and its wake-up socket, created on first use (under the lock)."""
        if self._wake is None:
            # A socketpair, not a pipe: send/recv are in every supervisor policy (its
            # channels use them), while read/write may be limited to a few descriptors.
            self._wake = socket.socketpair()
            self._wake[0].setblocking(False)
            self._poll.register(self._wake[0], select.POLLIN)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="isolates-monitor", daemon=True)
            self._thread.start()
        return self._wake[1]

    def pause(self) -> None:
        """Stop the thread (the listeners stay registered); ``resume`` starts a new one.
        A supervisor does this around confining itself, so that the monitor thread is
        created anew by a confined thread and inherits its Landlock domain."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping = thread is not None
            wake = self._wake[1] if self._wake is not None else None
        if thread is not None and wake is not None:
            wake.send(b"\0")
            thread.join()

    def resume(self) -> None:
        with self._lock:
            self._stopping = False
            if self._handlers:
                self._start()

    def _loop(self) -> None:
        while not self._stopping:
            for fd, events in self._poll.poll():
                if self._wake is not None and fd == self._wake[0].fileno():
                    self._wake[0].recv(4096)
                elif events & select.POLLIN:
                    self._notified(fd)
                elif events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    self._forget(fd)  # every process using the filter is gone

    def _notified(self, fd: int) -> None:
        # The number may have been released and reused since poll() returned: only read
        # a listener we still hold, and only if it is readable now (RECV would block).
        with self._lock:
            if fd not in self._handlers or not _readable(fd):
                return
        try:
            notification = receive_notification(fd)
        except OSError:  # ENOENT: the caller died (or was killed) before we read it
            return
        with self._lock:
            handler = self._handlers.get(fd)
        if handler is not None:
            handler(notification)

    def _forget(self, fd: int) -> None:
        with self._lock:
            if self._handlers.pop(fd, None) is None:
                return  # released already (its number may belong to someone else now)
            self._poll.unregister(fd)
            os.close(fd)

    def release(self, listener: int) -> None:
        """Stop watching ``listener`` and close it (its isolate was reaped)."""
        self._forget(listener)

    def after_fork_in_child(self) -> None:
        """The listeners belong to the parent's isolates: close our copies, start afresh.
        (The lock may have been held by the monitor thread, which did not survive.)"""
        for fd in self._handlers:
            os.close(fd)
        for end in self._wake or ():
            end.close()
        self.__init__()  # type: ignore[misc]


def _readable(fd: int) -> bool:
    probe = select.poll()
    probe.register(fd, select.POLLIN)
    return any(events & select.POLLIN for _, events in probe.poll(0))

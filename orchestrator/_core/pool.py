"""A warm pool of booted but not yet sandboxed interpreters.

Starting Python costs tens of milliseconds; a pooled isolate has already started and
imported the boot machinery, and waits for its boot message. Each one still serves one
call and dies: the pool only moves the start-up off the caller's path. It refills on the
spawner thread, and is shut down at exit (the isolates see their control channel close,
and PR_SET_PDEATHSIG covers a parent that dies without running atexit). Its one
instance is ``runtime.POOL`` (public as ``isolates.orchestrator.POOL``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from .process import IsolateProcess
from .spawn import Spawner

#: How long a pooled interpreter may take to import its boot code.
IDLE_TIMEOUT = 30.0


class Pool:
    """Idle isolates, started by ``spawn`` on ``spawner``'s thread."""

    def __init__(
        self, spawner: Spawner, spawn: Callable[[], IsolateProcess], size: int = 2
    ) -> None:
        self._spawner = spawner
        self._spawn = spawn
        self._size = size
        self._idle: deque[IsolateProcess] = deque()
        self._lock = threading.Lock()
        self._refilling = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def pids(self) -> tuple[int, ...]:
        """The pids of the interpreters waiting right now."""
        with self._lock:
            return tuple(proc.pid for proc in self._idle)

    @property
    def idle(self) -> int:
        """How many interpreters wait, imports done, for a call right now."""
        return len(self._idle)

    def resize(self, size: int) -> None:
        """Keep ``size`` idle isolates ready (0 disables the pool)."""
        if size < 0:
            raise ValueError(f"pool size must be >= 0, not {size}")
        self._size = size
        self._trim()
        self._schedule_refill()

    def take(self) -> IsolateProcess:
        """An idle isolate if one is alive, else a freshly spawned one. Call
        ``replenish()`` once the call is done: starting an interpreter takes a core,
        which the call should have while it runs."""
        while True:
            with self._lock:
                proc = self._idle.popleft() if self._idle else None
            if proc is None:
                break
            if proc.proc.poll() is None:
                return proc
            proc.reap(0)
        return self._spawn()

    def replenish(self) -> None:
        """Refill the pool in the background."""
        self._schedule_refill()

    def warm(self) -> None:
        """Fill the pool now (blocking), e.g. before the first latency-sensitive call."""
        self._spawner.run(self._refill)

    def _schedule_refill(self) -> None:
        with self._lock:
            if self._refilling or len(self._idle) >= self._size:
                return
            self._refilling = True
        self._spawner.submit(self._refill)

    def _refill(self) -> None:
        try:
            while len(self._idle) < self._size:
                proc = self._spawn()
                if not proc.wait_idle(IDLE_TIMEOUT):
                    proc.kill()
                    proc.reap()
                    return  # cannot start interpreters now: callers spawn their own
                with self._lock:
                    self._idle.append(proc)
        finally:
            with self._lock:
                self._refilling = False

    def _trim(self) -> None:
        with self._lock:
            extra = [self._idle.pop() for _ in range(max(0, len(self._idle) - self._size))]
        for proc in extra:
            proc.control.close()  # the isolate sees EOF and exits
            proc.reap(1.0)

    def shutdown(self) -> None:
        self._size = 0
        self._trim()

    def after_fork_in_child(self) -> None:
        """In a forked child the idle isolates belong to our parent: drop our copies."""
        for proc in self._idle:
            proc.control.close()
        self._idle.clear()
        self._refilling = False
        self._lock = threading.Lock()

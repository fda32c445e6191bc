"""Run a function in a forked child and get back what happened to it.

The child writes its result into anonymous shared memory mapped before the fork, so
reporting needs no syscall at all: it works under any policy the child loads.
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_SIZE = 1 << 20


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    signal: int | None = None
    exitcode: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.signal is None and self.exitcode == 0

    def unwrap(self) -> Any:
        """The child's return value; any other fate fails the test with the reason."""
        if self.error is not None:
            raise AssertionError(f"child raised {self.error!r}") from self.error
        assert self.signal is None, f"child killed by {signal.Signals(self.signal).name}"
        assert self.exitcode == 0, f"child exited with {self.exitcode}"
        return self.value


def in_child(fn: Callable[..., Any], *args: Any, timeout: float = 20.0) -> Outcome:
    shared = mmap.mmap(-1, _SIZE)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        _child(shared, fn, args)
    try:
        status = _wait(pid, timeout)
    finally:
        result = _read(shared)
        shared.close()
    if os.WIFSIGNALED(status):
        return Outcome(signal=os.WTERMSIG(status), **result)
    return Outcome(exitcode=os.WEXITSTATUS(status), **result)


def _child(shared: mmap.mmap, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    code = 0
    try:
        payload = {"value": fn(*args)}
    except BaseException as exc:
        payload, code = {"error": exc}, 0
    try:
        data = pickle.dumps(payload)
    except Exception as exc:
        data = pickle.dumps({"error": RuntimeError(f"unpicklable result: {exc!r}")})
    shared[: 4 + len(data)] = struct.pack("I", len(data)) + data
    os._exit(code)


def _read(shared: mmap.mmap) -> dict[str, Any]:
    (size,) = struct.unpack("I", shared[:4])
    return pickle.loads(shared[4 : 4 + size]) if size else {}


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish within {timeout}s")

"""The fork helper the Landlock tests use, and tests that it reports every fate of a child.

``in_child(fn, *args)`` forks, runs ``fn`` in the child and ships its return value (or
exception) back. The result travels through anonymous shared memory rather than a pipe:
a child confined by seccomp may be forbidden to write anywhere, but storing into memory
mapped before the fork needs no syscall at all.
"""

from __future__ import annotations

import errno
import mmap
import os
import pickle
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

_SIZE = 1 << 20


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    signal: int | None = None
    exitcode: int | None = None

    def unwrap(self) -> Any:
        """The child's return value; any other fate fails the test, saying which."""
        if self.error is not None:
            raise AssertionError(f"child raised {self.error!r}") from self.error
        assert self.signal is None, f"child killed by {signal.Signals(self.signal).name}"
        assert self.exitcode == 0, f"child exited with {self.exitcode}"
        return self.value


def in_child(fn: Callable[..., Any], *args: Any, timeout: float = 10.0) -> Outcome:
    """Run ``fn(*args)`` in a forked child; return what became of it."""
    shared = mmap.mmap(-1, _SIZE)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _child(shared, fn, args)
    try:
        status = _wait(pid, timeout)
        result = _read(shared)
    finally:
        shared.close()
    if os.WIFSIGNALED(status):
        return Outcome(signal=os.WTERMSIG(status), **result)
    return Outcome(exitcode=os.WEXITSTATUS(status), **result)


def run(fn: Callable[..., Any], *args: Any) -> Any:
    """``in_child(fn, *args).unwrap()``."""
    return in_child(fn, *args).unwrap()


def attempt(fn: Callable[..., Any], *args: Any) -> str:
    """``"ok"`` if ``fn(*args)`` succeeds, else the errno's name (``"EACCES"``)."""
    try:
        fn(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok"


def _child(shared: mmap.mmap, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        payload: dict[str, Any] = {"value": fn(*args)}
    except BaseException as exc:
        payload = {"error": exc}
    try:
        data = pickle.dumps(payload)
    except Exception as exc:
        data = pickle.dumps({"error": RuntimeError(f"unpicklable result: {exc!r}")})
    shared[: 4 + len(data)] = struct.pack("I", len(data)) + data
    os._exit(0)


def _read(shared: mmap.mmap) -> dict[str, Any]:
    (size,) = struct.unpack("I", shared[:4])
    return pickle.loads(shared[4 : 4 + size]) if size else {}


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish within {timeout}s")


def test_value_comes_back() -> None:
    assert run(lambda a, b: (a + b, os.getpid()), 2, 3)[0] == 5


def test_exception_comes_back() -> None:
    outcome = in_child(os.open, "/nonexistent/x", os.O_RDONLY)
    assert isinstance(outcome.error, FileNotFoundError)
    with pytest.raises(AssertionError, match="child raised"):
        outcome.unwrap()


def test_signal_is_reported() -> None:
    outcome = in_child(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert outcome.signal == signal.SIGKILL


def test_attempt_names_the_errno() -> None:
    assert attempt(os.stat, "/") == "ok"
    assert attempt(os.stat, "/nonexistent") == "ENOENT"

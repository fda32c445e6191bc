"""The helpers the Landlock tests use, and tests that they report every fate of a child.

``in_child`` is the harness isolates ships (isolates.orchestrator.testing): it forks,
runs ``fn`` in the child and ships its return value (or exception) back through shared
memory, so a child confined by seccomp needs no syscall to report.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from isolates.orchestrator.testing import Outcome as Outcome
from isolates.orchestrator.testing import in_child as in_child


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

"""Plain functions the IsolateExecutor tests submit (importable by reference; kept light)."""

from __future__ import annotations

import os


class ParseError(Exception):
    """A custom exception: it comes back as WorkerFailed, not as itself."""


def double(x: int) -> int:
    return x * 2


def add(x: int, y: int) -> int:
    return x + y


def fail_value() -> None:
    raise ValueError("bad input", 42)


def fail_custom() -> None:
    raise ParseError("line 3: unexpected '}'")


def uname() -> str:
    return os.uname().sysname


def spin() -> None:
    while True:
        pass


def hold(directory: str) -> int:
    """Mark this call running in ``directory``, wait for the parent to release it, and
    return the most calls seen running at once meanwhile (counted by their files). It
    polls: the default policy has no sleep."""
    mine = os.path.join(directory, f"running.{os.getpid()}")
    os.close(os.open(mine, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    most = 0
    while True:
        names = os.listdir(directory)
        most = max(most, sum(name.startswith("running.") for name in names))
        if f"release.{os.getpid()}" in names:
            break
    os.unlink(mine)
    return most


def environment() -> dict[str, str]:
    return dict(os.environ)

"""Functions the benchmarks run in other processes (importable by reference)."""

from __future__ import annotations

TYPE_CHECKING = False  # the call's own imports would count as ours: these import nothing
if TYPE_CHECKING:
    from typing import Any


def trivial(x: int) -> int:
    return x + 1


def to_queue(queue: Any, x: int) -> None:
    queue.put(x + 1)

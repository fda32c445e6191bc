"""Functions the benchmarks run in other processes (importable by reference)."""

from __future__ import annotations

from typing import Any


def trivial(x: int) -> int:
    return x + 1


def to_queue(queue: Any, x: int) -> None:
    queue.put(x + 1)

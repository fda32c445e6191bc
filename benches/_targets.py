"""Functions the benchmarks run in other processes (importable by reference)."""

from __future__ import annotations

TYPE_CHECKING = False  # the call's own imports would count as ours: these import nothing
if TYPE_CHECKING:
    from typing import Any


def trivial(x: int) -> int:
    return x + 1


def to_queue(queue: Any, x: int) -> None:
    queue.put(x + 1)


def fork_many(count: int) -> int:
    """Fork ``count`` children one after another, each exiting at once."""
    import os

    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return count


def allowed_calls(count: int) -> float:
    """Seconds for ``count`` getppid calls (the benchmark's policy allows them), timed
    inside the isolate."""
    import os
    import time

    start = time.perf_counter()
    for _ in range(count):
        os.getppid()
    return time.perf_counter() - start


def denied_calls(count: int) -> float:
    """Seconds for ``count`` uname calls the policy denies, timed inside the isolate."""
    import os
    import time

    start = time.perf_counter()
    for _ in range(count):
        try:
            os.uname()
        except OSError:
            pass
    return time.perf_counter() - start

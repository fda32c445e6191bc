"""Worker functions that try to get out; the tests in test_escapes.py run them."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from isolates.orchestrator import WorkerContext, isolate
from isolates.sandbox import Policy, SystemIO


def _try(fn: object, *args: object) -> str:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok"


def _open_mem(pid: int | str) -> None:
    os.close(os.open(f"/proc/{pid}/mem", os.O_RDWR))


def _read(path: str) -> None:
    with open(path, "rb") as f:
        f.read(16)


def memory_doors(parent: int) -> dict[str, str]:
    """What a confined process can do to its parent's memory, and to its own."""
    return {
        "parent mem": _try(_open_mem, parent),
        "parent environ": _try(_read, f"/proc/{parent}/environ"),
        "own mem": _try(_open_mem, "self"),
    }


@isolate(Policy(SystemIO.everything()), timeout=30)
def poke_parent(parent: int) -> dict[str, str]:
    return memory_doors(parent)


def poke_supervisor(ctx: WorkerContext, supervisor: int) -> dict[str, str]:
    return memory_doors(supervisor)


def plant_symlink_then_read(ctx: WorkerContext, job: str) -> str:
    """First run: swap the granted ``inputs`` for a symlink to "/" and crash. A restart
    that followed the symlink would read the host's files through the grant."""
    root = Path(job)
    if not (root / "away").exists():
        (root / "inputs").rename(root / "away")
        (root / "inputs").symlink_to("/")
        raise RuntimeError("crash, so that the supervisor restarts me")
    return (root / "inputs" / "etc" / "hostname").read_text()

"""What an isolate tries, to be denied (importable by reference)."""

import errno
import os


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def uname_then(value: int) -> int:
    """Call uname, which is denied, and go on with ``value`` if it was."""
    try:
        os.uname()
    except OSError as exc:
        return value if exc.errno in (errno.EPERM, errno.EACCES) else -1
    return -2


def open_many(count: int) -> int:
    """Try ``count`` distinct paths, each denied; fail at the end."""
    for i in range(count):
        try:
            open(f"/nonexistent/{i}")  # noqa: SIM115
        except OSError:
            pass
    raise RuntimeError("done")


def uname_errno() -> str:
    try:
        os.uname()
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]
    return "ran"


def uname_worker(ctx: object) -> None:
    os.uname()


def ptrace_then_uname() -> None:
    """ptrace (every policy's guards refuse it), then uname (a policy may allow it)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall(101, 0, 0, 0, 0)  # ptrace(PTRACE_TRACEME): EPERM from the guards
    os.uname()

"""What a learning isolate does (importable by reference)."""

import ctypes
import os


def work(inside: str, outside: str) -> str:
    """uname (the policy denies it) and two reads, one outside the policy's Landlock."""
    system = os.uname().sysname
    with open(os.path.join(inside, "a")) as a, open(os.path.join(outside, "b")) as b:
        return system + a.read() + b.read()


def unshare_and_kill_self() -> tuple[int, int]:
    """unshare(CLONE_NEWUSER) (what every policy denies), then kill(self, 0)."""
    libc = ctypes.CDLL(None, use_errno=True)
    refused = libc.syscall(272, 0x10000000)
    errno = ctypes.get_errno()
    os.kill(os.getpid(), 0)
    return refused, errno


def work_worker(ctx: object, inside: str, outside: str) -> str:
    return work(inside, outside)

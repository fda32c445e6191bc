"""What an isolate under Limits tries (importable by reference)."""

import errno
import os
import resource
import threading
import time
from typing import Any


def allocate(mib: int) -> int:
    block = bytearray(mib << 20)
    return len(block) >> 20


def spin(seconds_of_cpu: float) -> str:
    import time

    start = time.process_time()
    while time.process_time() - start < seconds_of_cpu:
        pass
    return "done"


def write(path: str, size: int) -> int:
    with open(path, "wb") as f:
        f.write(b"x" * size)
    return size


def open_many(directory: str, count: int) -> int:
    files = [open(os.path.join(directory, f"f{i}"), "w") for i in range(count)]  # noqa: SIM115
    for f in files:
        f.close()
    return count


def raise_limit() -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard + 1, hard + 1))
    except (OSError, ValueError) as exc:
        refused = type(exc).__name__
    else:
        return "raised"
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard - 1))  # lowering: allowed
    return f"refused ({refused}), lowered to {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"


def core_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_CORE)


def start_threads(count: int) -> list[str]:
    """Start ``count`` threads that wait; what each start gave ("ok" or the error)."""
    release = threading.Event()
    said, started = [], []
    for _ in range(count):
        thread = threading.Thread(target=release.wait)
        try:
            thread.start()
        except RuntimeError as exc:
            said.append(str(exc))
            continue
        started.append(thread)
        said.append("ok")
    release.set()
    for thread in started:
        thread.join()
    return said


def start_children(count: int) -> list[str]:
    """Fork ``count`` children that live half a second; "ok" or the errno of each."""
    said, pids = [], []
    for _ in range(count):
        try:
            pid = os.fork()
        except OSError as exc:
            said.append(errno.errorcode[exc.errno or 0])
            continue
        if pid == 0:
            time.sleep(0.5)
            os._exit(0)
        pids.append(pid)
        said.append("ok")
    for pid in pids:
        os.waitpid(pid, 0)
    return said


def fork_bomb(seconds: float) -> tuple[int, int]:
    """Every process forks without end for ``seconds``; (its process group, the forks
    refused in the first process)."""
    me, group = os.getpid(), os.getpgrp()
    end, refused = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        try:
            if os.fork() == 0:
                continue  # the child bombs on too
        except BlockingIOError:
            refused += 1
    if os.getpid() != me:
        os._exit(0)
    return group, refused


def group_members(group: int) -> list[int]:
    """The processes of process group ``group`` (zombies too: they hold their pid)."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group:
                members.append(int(name))
    return members


def start_one_thread() -> str:
    """Start a thread, uncaught if refused."""
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    return "started"


def forks_with_errno() -> str:
    """fork, and the errno it failed with (or "forked")."""
    try:
        pid = os.fork()
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return "forked"


def threads_of_worker(ctx: object, count: int) -> list[str]:
    return start_threads(count)


def escape_the_count() -> tuple[str, str, str]:
    """clone(CLONE_PARENT), clone3, then a plain fork: how each went."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def raw(*args: int) -> str:
        ctypes.set_errno(0)
        pid = libc.syscall(*(ctypes.c_long(a) for a in args))
        if pid == 0:
            os._exit(0)
        if pid < 0:
            return errno.errorcode[ctypes.get_errno()]
        return "started"

    clone_parent = raw(56, 0x8000 | 17, 0, 0, 0, 0)  # clone(CLONE_PARENT | SIGCHLD)
    args = (ctypes.c_uint64 * 11)(0, 0, 0, 0, 17)  # struct clone_args: exit_signal SIGCHLD
    clone3 = raw(435, ctypes.addressof(args), ctypes.sizeof(args))
    return clone_parent, clone3, forks_with_errno()


def threads_then_fail(ctx: Any, count: int) -> None:
    """Send what starting ``count`` threads gave on channel "said", then fail."""
    ctx.channel("said").send(start_threads(count))
    raise RuntimeError("fails, to be restarted")

"""Isolated functions and workers that start processes which must not outlive them.
Importable by reference (kept light: isolates only). Every process they start sleeps
60 s unless killed, so one left behind is still there when a test looks."""

from __future__ import annotations

import os
import time

from isolates.orchestrator import Namespaces, WorkerContext, isolate
from isolates.sandbox import Action, Pipes, Policy, Processes, SystemIO, Threads
from tests.orchestrator.workers import Item

SLEEP = Threads.nothing().allow_sleep()
#: fork, wait and sleep: no sessions, so every process stays in the isolate's group.
FORK = Policy(Processes.nothing().allow_fork().allow_wait(), SLEEP)
#: ... and write on stdout (how a function that never returns reports a pid).
FORK_STDOUT = Policy(Processes.nothing().allow_fork(), SLEEP, SystemIO.nothing().allow_stdout())
#: Everything about processes (sessions too, so daemons leave the group) and pipes.
DAEMONS = Policy(Processes.everything(), SLEEP, Pipes.nothing().allow_create(),
                 SystemIO.nothing().allow_read().allow_write())  # fmt: skip


def sleeper() -> int:
    """Fork a child that sleeps 60 s; its pid."""
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    return pid


def _report(pid: int) -> None:
    os.write(1, f"pid {pid}\n".encode())


@isolate(FORK)
def leave_a_child() -> int:
    return sleeper()


@isolate(FORK, namespaces=Namespaces(pid=False))
def leave_a_child_in_namespaces() -> int:
    """User, mount (an empty root), net, ipc and uts namespaces, not pid: the same pids."""
    return sleeper()


@isolate(FORK)
def leave_a_child_and_raise() -> None:
    raise ChildProcessError(sleeper())


@isolate(FORK_STDOUT, timeout=1.0)
def leave_a_child_and_hang() -> None:
    _report(sleeper())
    time.sleep(60)


@isolate(FORK_STDOUT)
def leave_a_child_and_wait() -> None:
    _report(sleeper())
    time.sleep(60)


@isolate(FORK_STDOUT)
def leave_a_child_and_exit() -> None:
    _report(sleeper())
    os._exit(3)


@isolate(FORK_STDOUT.extend(default=Action.KILL_PROCESS))
def leave_a_child_and_violate() -> None:
    _report(sleeper())
    os.uname()  # killed here


@isolate(DAEMONS)
def leave_a_daemon() -> int:
    """The classic daemon: fork, setsid, fork again, the middle process exits."""
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        _write_pid(w, sleeper())
        os._exit(0)
    os.waitpid(middle, 0)
    return _read_pids(r, 1)[0]


@isolate(DAEMONS)
def leave_a_tree(depth: int, fan: int, own_sessions: bool) -> list[int]:
    """``fan`` children, each with ``fan`` children... ``depth`` levels, all asleep (each
    in its own session with ``own_sessions``); every pid."""
    r, w = os.pipe()
    _grow(depth, fan, w, own_sessions)
    return _read_pids(r, sum(fan**level for level in range(1, depth + 1)))


def _grow(depth: int, fan: int, w: int, own_session: bool) -> None:
    for _ in range(fan):
        if os.fork() == 0:
            if own_session:
                os.setsid()
            _write_pid(w, os.getpid())
            if depth > 1:
                _grow(depth - 1, fan, w, own_session)
            time.sleep(60)
            os._exit(0)


def _write_pid(w: int, pid: int) -> None:
    os.write(w, f"{pid}\n".encode())


def _read_pids(r: int, count: int) -> list[int]:
    data = b""
    while data.count(b"\n") < count:
        data += os.read(r, 65536)
    return [int(n) for n in data.split()]


@isolate(FORK)
def wait_for_own_child(code: int) -> int:
    """The allowed neighbour: a child that runs, exits, and is waited for."""
    pid = os.fork()
    if pid == 0:
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@isolate(FORK)
def fork_and_return_in_both() -> str:
    """The child returns from the function too: only the isolate's own value counts."""
    pid = os.fork()
    if pid == 0:
        return "the child"
    os.waitpid(pid, 0)
    return "the isolate"


# -- Supervisor workers --------------------------------------------------------------------


def child_then_return(ctx: WorkerContext) -> int:
    return sleeper()


def child_then_fail_until_told(ctx: WorkerContext) -> int:
    """Send the pid of a child on 'pids', then fail unless the supervisor answers 1."""
    pids = ctx.channel("pids")
    child = sleeper()
    pids.send(Item(child))
    if pids.recv().n != 1:
        raise RuntimeError(f"failing with child {child} alive")
    return child


class BootsOnce:
    """Unpickles once; the second time (a restart's boot, before confinement) it raises."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __getstate__(self) -> str:
        return self.flag

    def __setstate__(self, flag: str) -> None:
        if os.path.exists(flag):
            raise RuntimeError("boots only once")
        open(flag, "w").close()
        self.flag = flag


def child_then_fail(ctx: WorkerContext, once: BootsOnce) -> None:
    sleeper()
    raise RuntimeError("failing with a child alive")

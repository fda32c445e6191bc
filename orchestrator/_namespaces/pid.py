"""pid 1 of a new pid namespace, and the mirror process that stays outside.

``unshare(CLONE_NEWPID)`` only moves the *children* of the caller, so ``enter`` forks:
the child is pid 1 inside and boots on; this process stays outside as its mirror, which
waits for it, forwards the signals it receives, and finally exits the way pid 1 did, so
whoever started the isolate sees an ordinary process come and go.

Safety argument:

- ``fork`` happens in the isolate before it is confined, and single-threaded (``enter``
  checks), so the child copies no lock another thread held. Every signal the mirror
  forwards is blocked across the fork, so none is lost or handled twice in between.
- pid 1 ties its life to the mirror's: PR_SET_PDEATHSIG (SIGKILL), then a check through
  a pidfd opened before the fork that the mirror is still alive; if it died first,
  pid 1 exits at once. The mirror dies with the isolate's parent the same way (the
  isolate armed PDEATHSIG at start-up), so no pid 1 outlives the tree.
- The mirror closes every descriptor but a /proc handle (``closerange``), with the
  garbage collector off so that no object owning one of them is finalised later: the
  channel ends live on in pid 1 only, and the parent sees the isolate's channels close
  exactly when pid 1 ends. It then only waits, forwards the signals in ``FORWARDED``
  to its one child (by pid: its own unreaped child, so the number cannot be reused) and
  reads that child's /proc status to see which signals it handles.
- It exits the way pid 1 did (``os._exit`` with its code, or the same signal with core
  dumps off), so the isolate's parent sees an ordinary process end.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import select
import signal
from typing import Final, NoReturn

from isolates.sandbox.lowlevel import set_parent_death_signal

#: Signals the mirror passes on to pid 1 (all terminate by default).
FORWARDED: Final = frozenset(
    {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2}
)


def fork_pid1() -> None:
    """Fork the pid namespace's first process (pid 1); only that child returns."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED | {signal.SIGCHLD})
    ignoring = signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN
    if ignoring:  # the mirror must be able to wait for its child
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    me = os.pidfd_open(os.getpid())
    proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    pid = os.fork()
    if pid:
        _mirror(pid, proc)
    os.close(proc)
    _become_pid1(me)
    if ignoring:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _become_pid1(mirror: int) -> None:
    """In the child: tie its life to the mirror's and take the signals the mirror sends."""
    _tie_to_parent(mirror)
    os.setpgid(0, 0)  # signals to the isolate's group reach the mirror, which forwards them
    while signal.sigtimedwait(FORWARDED, 0) is not None:
        pass  # ...so drop what reached us before setpgid: the mirror forwards it once


def _tie_to_parent(parent: int) -> None:
    """Die with the mirror; if it already died before PDEATHSIG was set, exit now."""
    set_parent_death_signal(signal.SIGKILL)
    gone = select.select([parent], [], [], 0)[0]  # a pidfd is readable once it exited
    os.close(parent)
    if gone:
        os._exit(1)


def _mirror(child: int, proc: int) -> NoReturn:
    """Wait for pid 1, forward signals to it, then exit the way it did."""
    gc.disable()  # objects owning the descriptors closed below must never be finalised
    os.closerange(3, proc)
    os.closerange(proc + 1, 0x7FFFFFFF)  # the channel ends live on in pid 1 only
    emulated = 0
    while True:
        sig = signal.sigwaitinfo(FORWARDED | {signal.SIGCHLD}).si_signo
        if sig != signal.SIGCHLD:
            emulated = _forward(child, signal.Signals(sig), proc) or emulated
            continue
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            _exit_like(status, emulated)


def _forward(child: int, sig: signal.Signals, proc: int) -> int:
    """Pass ``sig`` on. The kernel shields a pid namespace's init from signals it does not
    handle, so when pid 1 neither catches, ignores nor blocks ``sig`` (its default action
    is death), kill it and report ``sig`` as the cause: what a normal process would do."""
    if _default_action(child, sig, proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        return int(sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, sig)
    return 0


def _default_action(pid: int, sig: int, proc: int) -> bool:
    try:
        fd = os.open(f"{pid}/status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
    except OSError:
        return False
    try:
        lines = os.read(fd, 1 << 16).decode().splitlines()
    finally:
        os.close(fd)
    masks = [
        int(line.split()[1], 16)
        for line in lines
        if line.startswith(("SigBlk:", "SigIgn:", "SigCgt:"))
    ]
    return not any(mask >> (sig - 1) & 1 for mask in masks)


def _exit_like(status: int, emulated: int) -> NoReturn:
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status)
    if emulated and sig == signal.SIGKILL:
        sig = emulated
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the mirror's death leaves no core
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # only if ``sig`` does not kill (it always does for pid 1's deaths)

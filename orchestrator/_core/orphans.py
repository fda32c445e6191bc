"""Nothing an isolate starts outlives it: a subreaper inside, a tree kill outside.

Only isolates whose policy lets them start processes pay for this (``reaping``). Such an
isolate makes itself a child subreaper before it is confined, so every orphan among its
descendants is re-parented to it and stays in its process tree. After its result it
ignores SIGCHLD (the kernel then reaps whatever dies beneath it at once) and waits for
its parent, which ends the whole tree (``kill_tree``): it freezes the isolate's process
group, walks ``/proc/<pid>/task/*/children`` from the isolate and SIGKILLs every
descendant through a pidfd, round after round until a walk finds none, then kills the
isolate and its process group, and reaps the children of ours that shared that group.

What stays out of reach is in docs/orchestrator.md ("What a call leaves behind"); a pid
namespace (``Namespaces(pid=True)``) is the complete guarantee, and such isolates skip all
of this. (The ``children`` files need CONFIG_PROC_CHILDREN, which distributions enable;
without it a walk finds nothing and the process-group kill remains.)

Safety argument:

- ``prctl(PR_SET_CHILD_SUBREAPER, 1)`` changes only where orphans of the calling
  process's own descendants are re-parented; it grants no privilege and reaches no other
  process. The isolate makes it before confinement; nothing here is added to its policy.
- Every descendant is signalled through a pidfd, never by number: a pidfd names one
  process for its whole life and, once that process is reaped, signals nothing.
- Which process a pidfd names is checked against pid reuse before any signal: the pidfd
  is opened from a number read in ``.../children``; then ``/proc/<pid>/stat`` gives its
  parent; then the pidfd is checked to be not yet reaped (a signal 0). A process holds
  its number until it is reaped, so the stat was the pidfd's process's own. Its parent
  number must be the isolate's (our child: only we reap it, so the number is the
  isolate's until we do, and we do only after this) or that of a process verified the
  same way in this walk, checked again to be not yet reaped after the stat. So the chain
  of real parents, read while every link held its number, ends at the isolate: we signal
  only processes the isolate's tree started. (While the isolate lives as a subreaper, no
  process leaves its tree; one that was in it is one it started, even if re-parented.)
- ``kill(-pgid)`` is sent only while the isolate is not reaped (the lock in
  ``IsolateProcess`` (process.py) orders it before the reap). A group's id is its leader's pid, and
  the isolate holds that number, so the group is the one the isolate was started in;
  its members are the isolate, processes it started, and any process of our session
  that chose to join that group (and so to share its fate). The same holds for our
  children reaped here: ours, in that group, checked as above.
- A confined supervisor (``confine_to``) does no /proc reads, opens no pidfd and signals
  only the groups its policy lists, so this module never makes a call its filter denies.
- The tree kill is bounded (``MAX_ROUNDS`` walks, ``BUDGET`` seconds): a fork bomb
  outside the frozen group cannot hold the caller forever.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from isolates.sandbox import PolicyError
from isolates.sandbox.lowlevel import uapi

if TYPE_CHECKING:
    from isolates.sandbox import Policy
    from isolates.sandbox.lowlevel import Entry

    from .._namespaces.options import Namespaces

PR_SET_CHILD_SUBREAPER: Final = 36
#: How many walks, and seconds, a tree kill may take before it settles for the group kill.
MAX_ROUNDS: Final = 64
BUDGET: Final = 2.0

# clone() flags of the calls that start a process: fork() (bare and as glibc makes it:
# CHILD_SETTID | CHILD_CLEARTID | SIGCHLD) and posix_spawn / vfork (VM | VFORK | SIGCHLD).
_FORK_FLAGS: Final = (0, 17, 0x01200011, 0x4111)
_P_ALL_EXITED_NOHANG: Final = (os.P_ALL, 0, 0, os.WEXITED | os.WNOHANG)

_libc: Final = ctypes.CDLL(None, use_errno=True)

#: None: this process may read /proc and open pidfds. Else it is a confined supervisor,
#: and these are the process groups its policy lets it signal.
_confined: frozenset[int] | None = None


# -- deciding (parent, once per policy) --------------------------------------------------


def reaping(policy: Policy, namespaces: Namespaces | None) -> tuple[bool, bool]:
    """(reap, can_wait) for an isolate under ``policy``: whether it may start processes
    outside a pid namespace of its own, and whether it may collect dead children."""
    if namespaces is not None and namespaces.pid:
        return False, False  # pid 1 takes every process of the namespace with it
    if not can_fork(policy):
        return False, False
    return True, _runs(policy, "waitid", *_P_ALL_EXITED_NOHANG)


def can_fork(policy: Policy) -> bool:
    """True when ``policy`` lets a process start another process (not only threads).

    Errs towards True: any rule that lets clone run without CLONE_THREAD counts."""
    if any(_runs(policy, name) for name in ("fork", "vfork", "clone3")):
        return True
    if any(_runs(policy, "clone", flags) for flags in _FORK_FLAGS):
        return True
    clones = (e for e in policy.entries() if e.syscall == "clone" and not e.action.denies)
    return any(not _threads_only(e) for e in clones)


def _runs(policy: Policy, syscall: str, *args: int) -> bool:
    try:
        return not policy.decide(syscall, *args).denies
    except PolicyError:  # no such syscall on this architecture
        return False


def _threads_only(entry: Entry) -> bool:
    """The rule requires CLONE_THREAD in clone's flags: it starts threads, no process."""
    return any(
        c.arg == 0
        and c.op in ("==", "&==")
        and c.mask & uapi.CLONE_THREAD
        and isinstance(c.value, int)
        and c.value & uapi.CLONE_THREAD
        for c in entry.conditions
    )


# -- inside the isolate ------------------------------------------------------------------


def become_subreaper() -> None:
    """Orphans among our descendants are re-parented to us, not to init (before
    confinement: the policy never allows this prctl)."""
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def stop_waiting_for_children(can_wait: bool) -> None:
    """After the result: the kernel reaps every child (and adopted orphan) that dies from
    now on; those already dead are collected here when the policy allows waitid."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    if can_wait:
        with contextlib.suppress(OSError):  # ChildProcessError: none left
            while os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG) is not None:
                pass


# -- outside: ending the tree ------------------------------------------------------------


def confine_to(groups: Iterable[int]) -> frozenset[int] | None:
    """This process is loading a supervisor policy that lets it signal only ``groups``:
    from now on tree kills use the process group alone. Returns what was in force."""
    global _confined
    previous = _confined
    allowed = frozenset(groups)
    _confined = allowed if previous is None else previous & allowed
    return previous


def restore(previous: frozenset[int] | None) -> None:
    """Undo ``confine_to`` (the policy failed to load)."""
    global _confined
    _confined = previous


def kill_tree(root: int, root_fd: int) -> None:
    """SIGKILL the isolate ``root`` (our child, not yet reaped; ``root_fd`` its pidfd) and
    every process it started. Returns once the isolate is killed, not yet reaped."""
    confined = _confined
    group = confined is None or root in confined
    siblings: list[int] = []
    if group:
        _killpg(root, signal.SIGSTOP)  # freeze the group: nothing in it forks meanwhile
    try:
        if confined is None:
            siblings = _our_children_in_group(root)
            _kill_descendants(root)
    finally:
        _send(root_fd, signal.SIGKILL)
        if group:
            _killpg(root, signal.SIGKILL)
        _reap(siblings)


def _kill_descendants(root: int) -> None:
    deadline = time.monotonic() + BUDGET
    for _ in range(MAX_ROUNDS):
        killed = _kill_round(root)
        if not killed:
            return
        try:
            _wait_exited(killed, deadline)
        finally:
            for fd in killed:
                os.close(fd)
        if time.monotonic() >= deadline:
            return


def _kill_round(root: int) -> list[int]:
    """One walk from ``root``: SIGKILL each live descendant found, then look beneath it
    (killed first, it can start nothing more). The pidfds of the processes killed."""
    verified: dict[int, int] = {}
    stack = [root]
    try:
        while stack:
            parent = stack.pop()
            for pid in _children(parent):
                if pid == root or pid in verified:
                    continue
                fd = _open_descendant(pid, parent, root, verified)
                if fd is not None:
                    verified[pid] = fd
                    _send(fd, signal.SIGKILL)
                    stack.append(pid)
    except BaseException:
        for fd in verified.values():
            os.close(fd)
        raise
    return list(verified.values())


def _open_descendant(pid: int, parent: int, root: int, verified: dict[int, int]) -> int | None:
    """A pidfd for ``pid`` if it is a live child of ``root`` or of ``parent`` (verified in
    this walk), checked against pid reuse as the module's safety argument says; else None."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # gone already (or out of descriptors: the next walk)
        return None
    try:
        state, ppid, _ = _stat(pid)
        held = ppid == root or (ppid == parent and _alive(verified[parent]))
        if state not in "ZX" and held and _alive(fd):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _our_children_in_group(group: int) -> list[int]:
    """Pidfds of our children in the isolate's process group, but the isolate: processes
    it started with clone(CLONE_PARENT), which the kernel made our children."""
    me, found = os.getpid(), []
    for pid in _children(me):
        if pid == group:
            continue
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            _, ppid, pgrp = _stat(pid)
            if ppid == me and pgrp == group and _alive(fd):
                found.append(fd)
                continue
        except OSError:
            pass
        os.close(fd)
    return found


def _reap(fds: list[int]) -> None:
    """Collect our (killed) children named by ``fds``, then close them."""
    try:
        _wait_exited(fds, time.monotonic() + BUDGET)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
    finally:
        for fd in fds:
            os.close(fd)


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (none if it is gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            found.extend(int(n) for n in _read(f"/proc/{pid}/task/{task}/children").split())
    return found


def _stat(pid: int) -> tuple[str, int, int]:
    """(state, parent pid, process group) from /proc/<pid>/stat."""
    fields = _read(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()
    return fields[0].decode(), int(fields[1]), int(fields[2])


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _alive(fd: int) -> bool:
    """The process ``fd`` names is not yet reaped (a zombie still is) and we may signal it."""
    try:
        signal.pidfd_send_signal(fd, 0)
    except OSError:  # reaped (ESRCH), or not ours to signal (EPERM): not ours to end
        return False
    return True


def _send(fd: int, sig: int) -> None:
    with contextlib.suppress(OSError):  # exited or reaped meanwhile
        signal.pidfd_send_signal(fd, sig)


def _killpg(group: int, sig: int) -> None:
    with contextlib.suppress(OSError):  # an empty group: ESRCH
        os.killpg(group, sig)


def _wait_exited(fds: list[int], deadline: float) -> None:
    """Until every process in ``fds`` has exited (its pidfd is readable), or ``deadline``."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    pending = set(fds)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        for fd, _ in poller.poll(left * 1000):
            pending.discard(fd)
            poller.unregister(fd)

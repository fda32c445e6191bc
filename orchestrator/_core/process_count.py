"""An isolate's ``processes`` limit: its parent counts them and answers every clone.

RLIMIT_NPROC counts per user, not per isolate, and root ignores it, so the count is ours.
An isolate with the limit is loaded with ``notify_calls``: wherever its policy would let
clone, clone3, fork or vfork run, the call goes to its seccomp listener, which the
monitor thread (monitor.py) reads. ``Answers`` (answers.py) runs the isolate's own
policy on the call's registers: a call it fails keeps its errno, a call it kills is a
violation, and a call it allows comes here, to ``ProcessCount.answer``:

- the call runs (SECCOMP_USER_NOTIF_FLAG_CONTINUE) while the isolate's tree holds fewer
  tasks than the limit, and fails with EAGAIN, as Linux's own limits fail a fork, once
  it holds as many;
- and two ways out of the count are closed: clone3 fails with ENOSYS (its flags are in
  memory, which no filter reads; libc then uses clone), and clone(CLONE_PARENT) by the
  isolate itself fails with EPERM (its child would be its parent's, outside the tree).

The tree is counted from /proc: the isolate's threads (``/proc/<pid>/task``), then, for
each thread, the processes it started (``.../task/<tid>/children``), recursively; zombies
count until reaped, as a pid cgroup counts them. An isolate that may fork is a child
subreaper (orphans.py), and a pid namespace's pid 1 is its namespace's reaper, so an
orphan stays in the tree. A pid namespace's mirror (outside pid 1, ``_namespaces/pid.py``)
is not counted: it is ours, not the isolate's.

A clone let run is *pending* until its task shows in a count: a new process in the
children of the thread that asked, a new thread in the tasks of the asking thread's
process. Pending clones count as tasks, so that clones made at once by several threads
cannot all slip under the limit. A pending clone also ends when the thread that made it
calls clone again or exits (its call returned by then), or after ``PENDING_FOR``
seconds (the call failed, or its task came and went between two counts).

Safety argument:

- CONTINUE is answered only to calls the isolate's policy alone allows (answers.py says
  why that verdict holds); clone3, whose flags no filter reads, never runs under a count.
- The counting only reads /proc and never signals: a /proc entry whose number was
  reused by an unrelated process makes the count too high (a clone refused), never too
  low. The walk visits each number once, so it ends.
- The count is exact for clones one at a time; clones made at once by several threads
  are counted before they run, so the tree holds at most ``limit`` tasks but for a task
  whose count was retired early: one past ``PENDING_FOR`` (a clone that took longer
  than that to return).
"""

from __future__ import annotations

import errno
import os
import time
from typing import Final

from isolates.sandbox import PolicyError
from isolates.sandbox.lowlevel import (
    NATIVE_ARCH,
    Notification,
    continue_notification,
    deny_notification,
    syscall_name,
    syscall_number,
    uapi,
)

#: The calls that start a task, as this architecture has them.
STARTING: Final = ("clone", "clone3", "fork", "vfork")
#: Seconds a clone let run counts as a task before its task shows in a count.
PENDING_FOR: Final = 2.0


def _numbers() -> frozenset[int]:
    found = set()
    for name in STARTING:
        try:
            found.add(syscall_number(name))
        except PolicyError:  # not on this architecture (fork and vfork on arm64)
            pass
    return frozenset(found)


_NUMBERS: Final = _numbers()
COUNTED: Final = frozenset(syscall_name(nr) for nr in _NUMBERS)
_CLONE: Final = syscall_number("clone")
_CLONE3: Final = syscall_number("clone3")
_CLONE_PARENT: Final = uapi.CLONE_PARENT


class ProcessCount:
    """The tasks of the isolate rooted at ``root`` (pid), at most ``limit``. ``mirror``:
    ``root`` is a pid namespace's mirror (or ``isolates run`` itself), not counted.
    ``Answers`` (answers.py) hands it the clones the isolate's policy lets run."""

    def __init__(self, limit: int, root: int, *, mirror: bool = False) -> None:
        self.limit = limit
        self.root = root
        self.mirror = mirror
        self._pending: dict[int, float] = {}  # thread that asked -> when its clone ran
        self._seen: frozenset[int] = frozenset()  # the tasks of the last count
        #: The first clone refused, in words ("clone refused (EAGAIN) with 4 tasks live").
        self.refused: str | None = None
        self.refusals = 0

    def counts(self, n: Notification) -> bool:
        """Whether ``n`` is a call this count answers (a clone, fork, vfork or clone3)."""
        return n.arch == NATIVE_ARCH and n.nr in _NUMBERS

    def answer(self, listener: int, n: Notification) -> None:
        """Answer a clone the isolate's policy lets run: run it while there is room."""
        if n.nr == _CLONE3:  # its flags are in memory, unread: libc falls back to clone
            deny_notification(listener, n.id, errno.ENOSYS)
        elif self._leaves_the_tree(n):
            deny_notification(listener, n.id, errno.EPERM)
        elif (live := self._live(n.pid)) < self.limit:
            continue_notification(listener, n.id)
            self._pending[n.pid] = time.monotonic()
        else:
            deny_notification(listener, n.id, errno.EAGAIN)
            self._refuse(n, live)

    def _leaves_the_tree(self, n: Notification) -> bool:
        """clone(CLONE_PARENT) by the root: the child would be our sibling's, outside
        the tree counted (and outside the isolate's reaping)."""
        if n.nr != _CLONE or not n.args[0] & _CLONE_PARENT or self.mirror:
            return False
        tgid = tgid_of(n.pid)
        return tgid is None or tgid == self.root  # gone, or unreadable: refused

    def _live(self, caller: int) -> int:
        """The tasks of the tree now, pending clones included (the limit itself, so that
        the clone is refused, if /proc cannot be read here: never a count too low)."""
        try:
            tasks = tree_tasks(self.root, skip_root=self.mirror)
        except PermissionError:
            return self.limit
        self._settle(tasks, caller)
        self._seen = frozenset(tasks)
        return len(tasks) + len(self._pending)

    def _settle(self, tasks: dict[int, tuple[int, int]], caller: int) -> None:
        """Retire the pending clones this count explains: each new task ends the pending
        clone of the thread (a process) or of a thread of the process (a thread) that
        started it; a caller's own earlier clone has returned; and so have those of
        threads gone, or made ``PENDING_FOR`` ago."""
        pending = self._pending
        pending.pop(caller, None)
        for tid, (group, creator) in tasks.items():
            if tid in self._seen or not pending:
                continue
            if tid == group:  # a process, started by the thread ``creator``
                pending.pop(creator, None)
            else:  # a thread of ``group``: started by one of its threads
                asker = next((t for t in pending if tasks.get(t, (0, 0))[0] == group), None)
                if asker is not None:
                    del pending[asker]
        stale = time.monotonic() - PENDING_FOR
        for tid in [t for t, when in pending.items() if t not in tasks or when < stale]:
            del pending[tid]

    def _refuse(self, n: Notification, live: int) -> None:
        self.refusals += 1
        if self.refused is None:
            self.refused = f"{syscall_name(n.nr)} refused (EAGAIN) with {live} tasks live"


def tgid_of(tid: int) -> int | None:
    """The process (thread group) of task ``tid``, from /proc; None if it is gone or
    cannot be read."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(b"Tgid:"))
    except (OSError, StopIteration, ValueError):
        return None


def tree_tasks(
    root: int, *, skip_root: bool = False, depth: int | None = None
) -> dict[int, tuple[int, int]]:
    """Every task of the process tree at ``root`` (``depth``: its processes that many
    generations down at most): tid -> (its process, the thread that started it: for a
    process, the thread in whose ``children`` it was found; for a thread, its process).
    Tasks gone while we read are skipped; PermissionError if /proc is out of reach."""
    found: dict[int, tuple[int, int]] = {}
    stack = [(root, 0, 0)]
    visited = set()
    while stack:
        pid, creator, generation = stack.pop()
        if pid in visited:
            continue
        visited.add(pid)
        for tid in _threads(pid):
            if not (skip_root and pid == root):
                found[tid] = (pid, creator if tid == pid else pid)
            if depth is None or generation < depth:
                stack.extend((child, tid, generation + 1) for child in _children(pid, tid))
    return found


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return []


def _children(pid: int, tid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
            return [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []

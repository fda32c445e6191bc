"""``isolates run --processes N``: run counts the program's tasks and answers its clones.

The program is loaded with a seccomp listener that decides clone, clone3, fork, vfork
(process_count.py: within the limit they run, past it they fail with EAGAIN) and
execve. Its exec is the rendezvous: the filter parks it, this process finds the
listener among the program's descriptors, takes a copy (pidfd_getfd) before the exec
closes it, and lets the exec run. From then on this process answers every such call,
and, a child subreaper, sees every process of the program's tree, orphans included.
When the program ends, whatever it left behind is killed: nothing outlives the count.

Safety argument:

- This process stays unconfined and only reads /proc, answers notifications and
  signals through pidfds the processes of the program's tree (its own descendants:
  being a subreaper, no descendant leaves its tree while it lives).
- The listener is taken from the program's own descriptor table, through a pidfd of our
  unreaped child, while the child is parked in the exec that needs our answer: the
  descriptor cannot change meanwhile (the child is single-threaded and stopped), and
  only a seccomp listener reads as "anon_inode:seccomp notify".
- An execve let run (CONTINUE) runs exactly where the program's policy alone would:
  the verdict is that policy's program on the parked registers, which do not change;
  no filter reads the path, so its contents cannot matter (process_count.py argues the
  same for clones).
- A call the policy would kill is killed here: the caller's process gets SIGKILL
  before its call is answered, so the call never runs.
- If this process dies, the program dies too (PDEATHSIG, run_limits.py) and, the
  listener closed, every call it parked fails with ENOSYS.
"""

from __future__ import annotations

import os
import select
import time
from typing import Final

from isolates.sandbox import Policy
from isolates.sandbox.lowlevel import (
    Notification,
    receive_notification,
    set_child_subreaper,
    syscall,
    syscall_name,
)

from .._core.answers import Answers, Denials
from .._core.denials import guarded_by, guards_program
from .._core.process_count import COUNTED, ProcessCount, tgid_of, tree_tasks
from .run_report import allowed_by, hold_listener, kill_process, listener_of

#: What the program's listener decides: its execs (the rendezvous), and its clones
#: under a count.
RENDEZVOUS_CALLS: Final = frozenset({"execve"})
NOTIFIED: Final = COUNTED | RENDEZVOUS_CALLS
_LISTENER: Final = "anon_inode:seccomp notify"
#: How long run waits for the program to reach its exec before giving up on it.
RENDEZVOUS: Final = 30.0


def prepare() -> None:
    """Before the fork: become the subreaper of the program's tree."""
    set_child_subreaper()


class Counted:
    """The program ``pid`` (our child, through ``pidfd``): its count of ``limit``
    processes, its denials recorded with ``report``."""

    def __init__(
        self, pid: int, pidfd: int, policy: Policy, limit: int | None, report: bool
    ) -> None:
        self.pid, self.pidfd = pid, pidfd
        verdict = policy.compile(all_threads=True).bpf
        # Counted from this process, the subreaper (not counted itself): orphans of the
        # program's tree are re-parented to us, out of the program's own subtree.
        self.count = None if limit is None else ProcessCount(limit, os.getpid(), mirror=True)
        guarded = guarded_by(guards_program(policy))
        self.denials = Denials(allowed_by, guarded) if report else None
        self.answers = Answers(verdict, count=self.count, denials=self.denials)
        self.listener: int | None = None
        self.violation: str | None = None

    def take_listener(self) -> bool:
        """The program's listener, copied while its exec is parked; False if it ended
        (or never reached its exec) first."""
        deadline = time.monotonic() + RENDEZVOUS
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        while time.monotonic() < deadline:
            fd = listener_of(self.pid)
            if fd is not None:
                self.listener = hold_listener(syscall("pidfd_getfd", self.pidfd, fd, 0))
                return True
            if poller.poll(1):
                return False
        return False

    def answer(self) -> None:
        """Answer the call the listener holds (the poll said it is readable)."""
        self._answer()

    def reap(self) -> None:
        """Reap the orphans that ended (a zombie counts until it is reaped)."""
        reap_orphans(self.pid)

    def _answer(self) -> None:
        assert self.listener is not None
        try:
            n = receive_notification(self.listener)
        except OSError:  # the caller died before we read it
            return
        if not self.answers.answer(self.listener, n):
            self._kill_caller(n)

    def _kill_caller(self, n: Notification) -> None:
        """A call the program's policy kills for: its process is killed, unanswered (the
        caller may be any thread: a pidfd names the process, its thread group)."""
        self.violation = f"{syscall_name(n.nr)} is not allowed by the policy"
        tgid = tgid_of(n.pid)
        if tgid is not None:
            kill_process(tgid)

    def end_leftovers(self) -> None:
        """Kill and reap every process the program left behind (ours, as subreaper),
        when a count is kept: nothing outlives it."""
        if self.count is None:
            self._close()
            return
        me = os.getpid()
        for _ in range(64):
            left = {group for group, _ in tree_tasks(me).values() if group != me}
            left.discard(self.pid)
            if not left:
                break
            for pid in left:
                kill_process(pid)
            reap_orphans(self.pid)
        self._close()

    def _close(self) -> None:
        if self.listener is not None:
            os.close(self.listener)
            self.listener = None


def reap_orphans(program: int) -> None:
    """Reap the orphans re-parented to us that have ended (never the program itself:
    run reaps it, for its status)."""
    me = os.getpid()
    for tid in {group for group, _ in tree_tasks(me, depth=1).values()}:
        if tid not in (me, program):
            try:
                os.waitpid(tid, os.WNOHANG)
            except ChildProcessError:
                pass

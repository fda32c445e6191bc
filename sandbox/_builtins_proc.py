"""Built-in RuleSets for the process itself: the interpreter, threads, time, pipes,
child processes and signals."""

from __future__ import annotations

import termios
from typing import ClassVar, Final, Self

from ._rules import SELF_PID, Arg, Cmp, Rule
from ._ruleset import BuiltinRuleSet, RuleKind, RuleSet

# NAMESPACE_FLAGS: a builtin never allows any of them. CLONE_PARENT: the new process
# becomes a child of our parent: out of our process tree, out of reach of the cleanup
# that ends everything an isolate started.
from ._uapi import (
    CLONE_PARENT,
    CLONE_THREAD,
    CLONE_VM,
    NAMESPACE_FLAGS,
    PR_SET_NO_NEW_PRIVS,
    SECCOMP_SET_MODE_FILTER,
)


class PythonRuntime(RuleSet):
    """What a running CPython needs; part of every Policy (you never add it yourself).

    Memory (brk, mmap, munmap, mremap, mprotect, madvise), futex and its own robust list
    (get_robust_list of pid 0), rseq, signal handling (rt_sig*, sigaltstack), clocks,
    getrandom, its own ids (getpid, gettid), who it runs as (getuid, geteuid, getgid,
    getegid, getresuid, getresgid, getgroups), sched_yield, sched_getaffinity of this
    thread (pid 0), exit and exit_group, and the shutdown path: getsockname/getpeername
    (the repr of an unclosed socket) and close.

    ``ioctl(fd, TCGETS)`` is allowed too: ``open()`` calls isatty() on every file.
    It also allows what can only tighten: loading a further seccomp filter (seccomp with
    SECCOMP_SET_MODE_FILTER, prctl(PR_SET_NO_NEW_PRIVS)) and the Landlock syscalls, so a
    confined thread can always stack another policy on top of its own. These rules add
    to yours on the same syscalls (``Processes.allow_prctl_name()`` keeps them); deny the
    syscall outright to drop them. A filter that confines one thread may not reach the
    others (no TSYNC): see ``_guard``.

    Any other rule you write on one of these syscalls replaces the runtime's, so you can
    tighten it: ``Rule("mmap", Arg(2) & PROT_EXEC == 0)`` forbids executable mappings.
    """

    kind: ClassVar[str] = RuleKind.BASELINE
    SYSCALLS: ClassVar[tuple[str, ...]] = (
        "brk", "mmap", "munmap", "mremap", "mprotect", "madvise",
        "futex", "set_robust_list", "rseq",
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
        "clock_gettime", "clock_getres", "gettimeofday", "time",
        "getrandom", "getpid", "gettid",
        # Who it runs as: harmless reads (os.getuid() would otherwise answer -1).
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
        "sched_yield",
        "exit", "exit_group",
        "getsockname", "getpeername", "close",
    )  # fmt: skip

    def __init__(self, name: str | None = None) -> None:
        super().__init__(
            *self.SYSCALLS,
            # Of this process only: another pid's robust list or affinity is not ours.
            Rule("get_robust_list", Arg(0) == 0),
            Rule("sched_getaffinity", Arg(0) == 0),
            # isatty(): every open() asks, to choose its buffering; a query, nothing more.
            Rule("ioctl", Arg(1) == termios.TCGETS),
            Rule("seccomp", Arg(0) == SECCOMP_SET_MODE_FILTER, implied=True),
            Rule("prctl", Arg(0) == PR_SET_NO_NEW_PRIVS, implied=True),
            *(Rule(s, implied=True) for s in _LANDLOCK_CALLS),
            name=name,
        )


_LANDLOCK_CALLS: Final = ("landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self")
_PRIO_PROCESS: Final = 0
_SCHED_OF_PID: Final = ("sched_getparam", "sched_getscheduler", "sched_setaffinity")  # arg 0
_PRIORITY: Final = ("getpriority", "setpriority")  # arg 1, with PRIO_PROCESS


def _self(syscall: str, arg: int, *before: Cmp) -> list[Rule]:
    """``syscall`` aimed at this process only: argument ``arg`` is 0 or its own pid."""
    return [Rule(syscall, *before, Arg(arg) == who) for who in (0, SELF_PID)]


class Threads(BuiltinRuleSet):
    """Starting threads and sleeping.

    ``allow_create``: clone with CLONE_THREAD and no namespace flag (clone3 answers ENOSYS
    in every policy, so glibc falls back to clone). ``allow_sleep``: nanosleep,
    clock_nanosleep. ``allow_priority``: scheduling and nice values of this process
    only (the pid or ``who`` argument 0 or its own pid, ``PRIO_PROCESS``):
    get/setpriority, sched_getparam, sched_getscheduler, sched_setaffinity, and the
    priority ranges. Other processes' priorities are never reachable from here.
    """

    EVERYTHING: ClassVar[tuple[str, ...]] = ("allow_create", "allow_sleep", "allow_priority")

    def allow_create(self) -> Self:
        flags = Arg(0) & (CLONE_THREAD | CLONE_VM | NAMESPACE_FLAGS) == CLONE_THREAD | CLONE_VM
        return self.allow_rule("clone", flags)

    def allow_sleep(self) -> Self:
        return self.allow("nanosleep", "clock_nanosleep")

    def allow_priority(self) -> Self:
        rules = [r for s in _SCHED_OF_PID for r in _self(s, 0)]
        rules += [r for s in _PRIORITY for r in _self(s, 1, Arg(0) == _PRIO_PROCESS)]
        return self.allow("sched_get_priority_max", "sched_get_priority_min")._with(*rules)


class Time(BuiltinRuleSet):
    """Clocks and timers. Reading the clock is already in PythonRuntime.

    ``allow_sleep`` (nanosleep, clock_nanosleep), ``allow_timers`` (timerfd, POSIX
    timers, alarm, itimers), ``allow_set_time`` (settimeofday, clock_settime, adjtimex,
    clock_adjtime; the kernel still wants CAP_SYS_TIME).
    """

    EVERYTHING: ClassVar[tuple[str, ...]] = ("allow_sleep", "allow_timers", "allow_set_time")

    def allow_sleep(self) -> Self:
        return self.allow("nanosleep", "clock_nanosleep")

    def allow_timers(self) -> Self:
        return self.allow(
            "timerfd_create",
            "timerfd_settime",
            "timerfd_gettime",
            "timer_create",
            "timer_settime",
            "timer_gettime",
            "timer_getoverrun",
            "timer_delete",
            "alarm",
            "setitimer",
            "getitimer",
        )

    def allow_set_time(self) -> Self:
        return self.allow("settimeofday", "clock_settime", "adjtimex", "clock_adjtime")


class Pipes(BuiltinRuleSet):
    """``allow_create``: pipe, pipe2. ``allow_splice``: splice, tee, vmsplice."""

    EVERYTHING: ClassVar[tuple[str, ...]] = ("allow_create", "allow_splice")

    def allow_create(self) -> Self:
        return self.allow("pipe", "pipe2")

    def allow_splice(self) -> Self:
        return self.allow("splice", "tee", "vmsplice")


class Processes(BuiltinRuleSet):
    """Child processes: an explicit opt-in.

    ``allow_fork``: fork, vfork, and clone with no namespace flag and without
    CLONE_PARENT (what fork() and posix_spawn use; CLONE_PARENT would hand the child to
    our own parent, outside the tree an isolate's cleanup ends). ``allow_exec``:
    execve, execveat. ``allow_wait``: wait4, waitid.
    ``allow_sessions``: setsid, setpgid, getpgid, getsid, getpgrp (subprocess's
    ``start_new_session``). ``allow_prctl_name``: prctl(PR_SET_NAME / PR_GET_NAME).
    """

    EVERYTHING: ClassVar[tuple[str, ...]] = (
        "allow_fork",
        "allow_exec",
        "allow_wait",
        "allow_sessions",
        "allow_prctl_name",
    )

    def allow_fork(self) -> Self:
        flags = Arg(0) & (NAMESPACE_FLAGS | CLONE_PARENT) == 0
        return self.allow("fork", "vfork").allow_rule("clone", flags)

    def allow_exec(self) -> Self:
        return self.allow("execve", "execveat")

    def allow_wait(self) -> Self:
        return self.allow("wait4", "waitid")

    def allow_sessions(self) -> Self:
        return self.allow("setsid", "setpgid", "getpgid", "getsid", "getpgrp")

    def allow_prctl_name(self) -> Self:
        pr_set_name, pr_get_name = 15, 16
        return self.allow_rule("prctl", Arg(0) == pr_set_name).allow_rule(
            "prctl", Arg(0) == pr_get_name
        )


class Signals(BuiltinRuleSet):
    """Signals, limited to this process.

    ``allow_handlers``: waiting for and handling signals (rt_sigsuspend, rt_sigtimedwait,
    rt_sigpending, signalfd4, pause). ``allow_kill_self``: kill, tgkill, rt_sigqueueinfo
    and rt_tgsigqueueinfo aimed at this process (its pid, resolved when the policy is
    compiled for the process that applies it): what ``os.kill(os.getpid(), sig)`` and
    ``signal.raise_signal`` use. Not ``kill(0, sig)`` nor ``killpg``: a process group
    can hold the process that started this one. No rule here can signal another process.
    """

    EVERYTHING: ClassVar[tuple[str, ...]] = ("allow_handlers", "allow_kill_self")

    def allow_handlers(self) -> Self:
        return self.allow("rt_sigsuspend", "rt_sigtimedwait", "rt_sigpending", "signalfd4", "pause")

    def allow_kill_self(self) -> Self:
        aimed = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
        return self._with(*(Rule(s, Arg(0) == SELF_PID) for s in aimed))

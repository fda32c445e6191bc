"""``isolates run`` under limits: ``--memory``, ``--cpu-time``, ``--open-files``,
``--file-size``, ``--wall-time``, and the parent that waits to say which one stopped
the program ("isolates run: killed: cpu time limit 2 s").

Without a limit, run execs in place (run.py). With one, it forks: the child sets the
rlimits on itself, then applies the policy and execs exactly as run does without
limits; this process stays, unconfined, only to wait, forward signals, enforce the wall
time and report.

Safety argument:

- The fork happens after everything was decided (the plan, the compiled policy), in a
  process that has started no thread of ours, and the child only makes raw calls
  (PDEATHSIG, prlimit64) before ``run.execute``, whose own safety argument holds from
  there: it never returns but by ``os._exit``.
- The child arms PR_SET_PDEATHSIG (SIGKILL) and checks its parent is still us: if this
  process dies, the program dies with it, so the wall time cannot be escaped by killing
  the waiter.
- The rlimits are set with soft == hard (CPU: hard one second later, for SIGKILL if
  SIGXCPU is caught), only ever lowered, and the program keeps no CAP_SYS_RESOURCE
  (run drops every capability): it cannot lift them.
- Signals to the program go through a pidfd opened while it is our unreaped child, and
  are sent only until we have reaped it.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isolates.sandbox import Policy, PolicyError
from isolates.sandbox.lowlevel import lower_rlimits, set_parent_death_signal

from .._limits import Limits
from .command import UsageError

if TYPE_CHECKING:
    from .run_processes import Counted

#: How often, with --processes, orphans are reaped (run_processes.py).
REAP_EVERY_MS = 200

_FLAGS = (
    ("--memory", "SIZE", "memory", str, "its data and heap, e.g. 256M (RLIMIT_DATA)"),
    ("--cpu-time", "SECONDS", "cpu_time", float, "CPU seconds (SIGXCPU, then SIGKILL)"),
    ("--processes", "N", "processes", int, "processes and threads at once, itself included"),
    ("--open-files", "N", "open_files", int, "descriptors (RLIMIT_NOFILE)"),
    ("--file-size", "SIZE", "file_size", str, "the largest file it may write (RLIMIT_FSIZE)"),
    ("--wall-time", "SECONDS", "wall_time", float, "seconds before it is killed"),
)
#: What a signal that stopped the program says of the limit that sent it.
_SIGNALS = {
    signal.SIGXCPU: ("cpu_time", "cpu time limit"),
    signal.SIGXFSZ: ("file_size", "file size limit"),
}
_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    for flag, metavar, dest, kind, what in _FLAGS:
        parser.add_argument(flag, metavar=metavar, dest=f"limit_{dest}", type=kind, help=what)


def limits_of(args: argparse.Namespace) -> Limits | None:
    """The Limits the flags ask for (None: no limit flag); UsageError names a bad one."""
    given = {dest: getattr(args, f"limit_{dest}") for _, _, dest, _, _ in _FLAGS}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    try:
        return Limits(**given)
    except PolicyError as exc:
        flag = next(f for f, _, d, _, _ in _FLAGS if f"Limits.{d}" in str(exc))
        raise UsageError(f"{flag}: {exc}") from None


def run_limited(
    limits: Limits | None,
    policy: Policy,
    execute: Callable[[frozenset[str], bool], Any],
    *,
    report: str | None = None,
) -> int:
    """Fork; the child lowers its rlimits and calls ``execute`` (apply, exec: it never
    returns) with the syscalls its listener is to decide and whether its errno denials
    go to it too; we wait, answer, and report a limit that stopped it and, with
    ``report``, what its policy denied ("always", or "failure": when the program
    fails). Our exit status is the program's (128 + the signal that killed it)."""
    bounds = limits if limits is not None else Limits()
    counting = bounds.processes is not None
    reporting = report is not None
    answering = counting or reporting
    if counting:
        from .run_processes import prepare

        prepare()
    notify = _notified(counting) if answering else frozenset()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        rlimits = bounds.rlimits() if limits is not None else []
        _become_program(parent, rlimits, lambda: execute(notify, reporting))
    pidfd = os.pidfd_open(pid)
    counted: Counted | None = None
    try:
        if answering:
            counted = _counted(pid, pidfd, policy, bounds.processes, reporting)
        status, timed_out = _wait(pid, pidfd, bounds.wall_time, counted)
    finally:
        if counted is not None:
            counted.end_leftovers()
        os.close(pidfd)
    if counted is not None and counted.denials and (report == "always" or status != 0):
        from .run_report import say_denials

        say_denials(counted.denials)
    return _report(status, timed_out, bounds, counted)


def _notified(counting: bool) -> frozenset[str]:
    from .run_processes import NOTIFIED, RENDEZVOUS_CALLS

    return NOTIFIED if counting else RENDEZVOUS_CALLS


def _counted(pid: int, pidfd: int, policy: Policy, limit: int | None, report: bool) -> Counted:
    from .run_processes import Counted

    counted = Counted(pid, pidfd, policy, limit, report)
    if not counted.take_listener():  # it ended before its exec, or never got there
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    return counted


def _become_program(
    parent: int, rlimits: list[tuple[int, int, int]], execute: Callable[[], Any]
) -> None:
    try:
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        lower_rlimits(rlimits)
        execute()
    except BaseException as exc:  # never back into the parent's code
        print(f"isolates run: {exc}", file=sys.stderr)
    os._exit(126)


def _wait(
    pid: int, pidfd: int, wall_time: float | None, counted: Counted | None
) -> tuple[int, bool]:
    """The program's wait status, and whether the wall time ran out (it was killed);
    meanwhile, with ``counted``, its clones answered and its orphans reaped."""
    forward = _forwarding(pidfd)
    deadline = None if wall_time is None else time.monotonic() + wall_time
    timed_out = False
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    listener = None if counted is None else counted.listener
    if listener is not None:
        poller.register(listener, select.POLLIN)
    try:
        while True:
            ready = dict(poller.poll(_wait_ms(deadline, counted)))
            if pidfd in ready:
                return os.waitpid(pid, 0)[1], timed_out
            if counted is not None:
                if listener in ready:
                    counted.answer()
                counted.reap()
            if deadline is not None and time.monotonic() >= deadline:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                timed_out = True
                deadline = None
    finally:
        for sig, previous in forward.items():
            signal.signal(sig, previous)


def _wait_ms(deadline: float | None, counted: Counted | None) -> int | None:
    left = _ms_left(deadline)
    if counted is None:
        return left
    return REAP_EVERY_MS if left is None else min(left, REAP_EVERY_MS)


def _ms_left(deadline: float | None) -> int | None:
    if deadline is None:
        return None
    return max(0, round((deadline - time.monotonic()) * 1000))


def _forwarding(pidfd: int) -> dict[int, Any]:
    """Signals sent to us go to the program (through its pidfd, while it is unreaped),
    but the terminal's keys when we are in its foreground: they reached it already."""
    from .run_report import in_terminal_foreground

    def forward(signum: int, frame: object) -> None:
        if signum in (signal.SIGINT, signal.SIGQUIT) and in_terminal_foreground():
            return  # the terminal sent it to the program as well
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except OSError:
            pass

    return {sig: signal.signal(sig, forward) for sig in _FORWARDED}


def _report(status: int, timed_out: bool, limits: Limits, counted: Counted | None) -> int:
    code = os.waitstatus_to_exitcode(status)
    said = limits.mechanisms()
    if counted is not None and counted.violation is not None:
        _say(f"killed: {counted.violation}")
    elif timed_out:
        _say(f"killed: wall time limit {limits.wall_time:g} s")
    elif code < 0 and -code in _SIGNALS:
        field, words = _SIGNALS[signal.Signals(-code)]
        _say(f"killed: {words} ({said[field]})")
    elif code != 0 and counted is not None and counted.count and counted.count.refused:
        _say(
            f"processes limit {limits.processes}: {counted.count.refusals} clones refused, "
            f"the first: {counted.count.refused}; exit status {code}"
        )
    elif code != 0 and limits.memory is not None:
        shown = said["memory"]
        _say(
            f"exit status {code}; limits in force: {shown} (an allocation or open past them fails)"
        )
    return 128 - code if code < 0 else code


def _say(message: str) -> None:
    print(f"isolates run: {message}", file=sys.stderr)

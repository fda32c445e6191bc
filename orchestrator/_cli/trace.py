"""``isolates trace``: the syscalls a program makes, and the smallest profiles covering them.

The tracer is seccomp user notification, not ptrace: a forked child loads a filter that
hands every syscall to a listener (sandbox/_kernel_trace.py says why that is safe and how
the listener reaches us before the exec), then execs the command. We receive each call,
note it and let it run ("continue"); children and threads inherit the filter, so they are
traced too. clone3 is answered ENOSYS, as every isolates policy answers it, so the trace
shows the clone (whose flags a rule can check) that libc falls back to.

A call is kept as a ``TracedCall`` (traced.py); the covers are trace_cover.py's.

Safety argument (the tracer's fork):

- ``trace`` is meant for a process of its own (the ``isolates trace`` command, which
  has no other thread): the fork copies no lock another thread holds. The child only
  runs ``exec_traced`` (sandbox's, with its own safety argument): it loads the filter
  that notifies every syscall, hands its listener over the socketpair and execs; any
  failure before the exec ends it with ``os._exit`` and a message on that socket.
- The parent only observes: every notification is answered CONTINUE (the call runs as
  the program made it, with the program's own privileges), but clone3, answered ENOSYS
  as every isolates policy does. The program gains nothing it did not have.
- It becomes a child subreaper before the fork, so every orphan of the program is
  re-parented to it and reaped (``_reap``); the listener is closed when the last traced
  task is gone, and the handoff is bounded by a timeout (the child is killed and
  reaped if it never hands over).
- SIGINT and SIGQUIT are ignored while the program runs (the terminal sends them to the
  program too) and every handler is restored after.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final

from isolates.sandbox import SandboxError
from isolates.sandbox.lowlevel import (
    NATIVE_ARCH,
    Notification,
    continue_notification,
    deny_notification,
    exec_traced,
    notify_program,
    receive_notification,
    set_child_subreaper,
    wake_synchronously,
)

from .._core.process_count import tgid_of
from .command import CommandNotFound, Subparsers, UsageError, program_argv, resolve
from .traced import SELF, Relevance, Trace, TracedCall, answered_enosys

_HANDOFF_TIMEOUT: Final = 30.0  # only if the child hangs before the handoff (a bug)


class TraceError(Exception):
    """The tracer could not start the command (its message says why)."""


#: Which calls a trace refuses after all, and with which errno (None: let it run).
Refuse = Callable[[Notification], "int | None"]


def relevance() -> dict[int, tuple[tuple[int, ...], frozenset[int]]]:
    """For each syscall, the arguments some candidate rule compares (and which of them
    it compares to the caller's pid): all a TracedCall needs to keep. Made from every
    builtin, promise and group (``trace_cover.relevance``: 90 ms and most of isolates
    imported), it depends on isolates' code alone, so it is kept beside it
    (``run_cache.derived``) and a trace starts its program without either."""
    from .run_cache import derived

    def made() -> dict[int, tuple[tuple[int, ...], frozenset[int]]]:
        from .trace_cover import relevance as from_the_rules

        return from_the_rules()

    kept: dict[int, tuple[tuple[int, ...], frozenset[int]]] = derived("trace-relevance", made)
    return kept


def trace(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    relevant: Relevance | None = None,
    refuse: Refuse | None = None,
) -> Trace:
    """Run ``argv`` to completion under the tracer and return what it did.

    Meant for a process of its own (the ``isolates trace`` command): it becomes a child
    subreaper and reaps every child it has until the traced tasks are all gone.
    ``relevant`` defaults to ``relevance()``. ``refuse``: calls to fail rather than let
    run (``isolates run --learn``: what a profile denies whatever is learned).
    CommandNotFound if ``argv[0]`` names no executable file.
    """
    path = resolve(argv[0], env)
    environ = dict(os.environ if env is None else env)
    relevant = relevance() if relevant is None else relevant
    program = notify_program()
    set_child_subreaper()  # before the fork: no orphan of the program may escape us
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs or exits
        ours.close()
        exec_traced(theirs, program, path, list(argv), environ)
    theirs.close()
    with ours:
        listener = _receive_listener(ours, pid)
    result = Trace(list(argv))
    try:
        _serve(listener, pid, result, relevant, refuse)
    finally:
        os.close(listener)
    return result


def _receive_listener(sock: socket.socket, pid: int) -> int:
    sock.settimeout(_HANDOFF_TIMEOUT)
    try:
        message, fds, _, _ = socket.recv_fds(sock, 4096, 1)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise TraceError("the traced child never handed over its listener") from None
    if fds and message == b"L":
        os.set_inheritable(fds[0], False)
        wake_synchronously(fds[0])  # every call of the program makes the round trip
        return fds[0]
    os.waitpid(pid, 0)
    why = message[1:].decode(errors="replace") or "the child died before loading the filter"
    raise TraceError(why)


def _serve(
    listener: int, main: int, result: Trace, relevant: Relevance, refuse: Refuse | None
) -> None:
    """Answer notifications until no traced task is left (the listener hangs up), then
    collect the command's exit status."""
    with _signal_wakeups() as wakeup:
        status = _answer_all(listener, wakeup, main, result, relevant, refuse)
    # The filter lets go of a task as it exits, which can be before it is a zombie.
    status = os.waitpid(main, 0)[1] if status is None else status
    _reap(main)
    result.exit_code = _exit_code(status)


def _answer_all(
    listener: int,
    wakeup: int,
    main: int,
    result: Trace,
    relevant: Relevance,
    refuse: Refuse | None,
) -> int | None:
    """Answer notifications and reap exited children until the listener hangs up; the
    command's wait status if it was reaped meanwhile."""
    poll = select.poll()
    poll.register(listener, select.POLLIN)
    poll.register(wakeup, select.POLLIN)
    started, status = False, None
    while True:
        events = dict(poll.poll(_SIGNAL_CHECK_MS))
        _forward_signals(main if status is None else None)
        if wakeup in events:
            _drain(wakeup)
            reaped = _reap(main)
            status = status if reaped is None else reaped
        if events.get(listener, 0) & select.POLLIN:
            started = _answer(listener, main, result, relevant, started, refuse)
        elif events.get(listener, 0) & (select.POLLHUP | select.POLLERR):
            return status


#: Signals passed on to the command, and how often they are looked for (they are blocked
#: while we trace, and taken with sigtimedwait, which says who sent each).
FORWARDED: Final = frozenset({signal.SIGTERM, signal.SIGHUP, signal.SIGINT})
_SIGNAL_CHECK_MS: Final = 100
_SI_KERNEL: Final = 0x80  # si_code of a signal the kernel sent (a terminal's ^C)


@contextlib.contextmanager
def _signal_wakeups() -> Iterator[int]:
    """A pipe that becomes readable when a child exits (SIGCHLD), with SIGTERM, SIGHUP and
    SIGINT blocked meanwhile, for ``_forward_signals`` to pass on, and SIGQUIT ignored
    (the command decides whether to end, and we answer its calls until it does, so its
    report is still written); all restored after."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    handlers = {signal.SIGQUIT: signal.signal(signal.SIGQUIT, signal.SIG_IGN)}
    handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    try:
        yield wake_r
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.set_wakeup_fd(old_wakeup)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        os.close(wake_r)
        os.close(wake_w)


def _forward_signals(main: int | None) -> None:
    """Pass on to the command (our unreaped child: its pid is its own; None once it is
    reaped) each pending SIGTERM, SIGHUP and SIGINT; but a ^C from the terminal, which
    reached it already."""
    while (info := signal.sigtimedwait(FORWARDED, 0)) is not None:
        if main is None or (info.si_signo == signal.SIGINT and info.si_code == _SI_KERNEL):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(main, info.si_signo)


def _answer(
    listener: int,
    main: int,
    result: Trace,
    relevant: Relevance,
    started: bool,
    refuse: Refuse | None = None,
) -> bool:
    """Take one notification, record it, let the call run; True once the exec was seen."""
    try:
        note = receive_notification(listener)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EINTR):  # the task was killed meanwhile
            return started
        raise
    call = call_of(note, relevant)
    started = started or (note.pid == main and call.name == "execve")
    if started:  # read what it names while it is parked: before it runs
        result.resources.record(note)
    refused = refuse(note) if refuse is not None and started else None
    try:
        if answered_enosys(call):
            deny_notification(listener, note.id, errno.ENOSYS)
        elif refused is not None:
            deny_notification(listener, note.id, refused)
        else:
            continue_notification(listener, note.id)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
    if started:  # our child's own calls before its exec are not the program's
        result.calls[call] += 1
        result.tasks.add(note.pid)
    return started


def call_of(note: Notification, relevant: Relevance) -> TracedCall:
    """The TracedCall a notification is: arguments no rule compares are zeroed, and an argument
    compared to the caller's pid becomes SELF when it is the caller's pid."""
    if note.arch != NATIVE_ARCH:
        return TracedCall(note.nr, arch=note.arch)
    indices, selfs = relevant.get(note.nr, ((), frozenset()))
    tgid = (tgid_of(note.pid) or note.pid) if selfs else 0
    args = [0] * 6
    for i in indices:
        args[i] = SELF if i in selfs and note.args[i] == tgid else note.args[i]
    return TracedCall(note.nr, tuple(args))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _reap(main: int) -> int | None:
    """Reap every exited child (ours, and orphans adopted as subreaper); return the
    command's wait status if it was among them."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == main:
            found = status


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it


# -- the command line ----------------------------------------------------------------------


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="list the syscalls a program makes and the profiles that cover them",
        description="Run CMD, follow its threads and children, count their syscalls, and "
        "name the smallest builtin RuleSets, pledge promises and systemd groups that "
        "allow them all. The report goes to standard error (or --output); the exit "
        "status is CMD's.",
    )
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE")
    parser.add_argument(
        "--emit",
        metavar="FILE",
        help="write a tight policy file from the trace: run it with isolates run --profile FILE",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARG ...]")
    parser.set_defaults(command=main)


def main(args: argparse.Namespace) -> int:
    try:
        argv = program_argv(args.argv, "isolates trace -- CMD [ARG ...]")
        result = trace(argv)
    except UsageError as exc:
        print(f"isolates trace: {exc}", file=sys.stderr)
        return 2
    except CommandNotFound as exc:
        print(f"isolates trace: {exc}", file=sys.stderr)
        return exc.status
    except (TraceError, SandboxError) as exc:
        print(f"isolates trace: cannot trace {argv[0]}: {exc}", file=sys.stderr)
        return 126
    from .trace_cover import (  # after the program: its start waits for none of it
        covers,
        render,
        report,
    )
    from .trace_emit import described, emit, render_resources

    found = covers(result)
    if args.emit:
        with open(args.emit, "w") as f:
            f.write(emit(result, found[0]))
    if args.json:
        text = json.dumps({**report(result, found), **described(result.resources)}) + "\n"
    else:
        text = render(result, found) + render_resources(result.resources)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stderr.write(text)
    return result.exit_code

"""``isolates run``'s answering parent: the policy's errno denials, said when it fails.

By default ``isolates run`` does not become the program. It forks; the child confines
itself and execs exactly as run does in place (run_exec.py), but its filter hands to a
listener every call the policy fails with an errno, and its execs (the rendezvous at
which this process takes that listener). This process answers each denial with the
errno the policy gives it, records the call in words while it is parked, and when the
program fails (or always, with ``--report``) says which calls were denied and what would
allow each. ``--no-report`` execs in place instead, as before.

Lean on purpose, as run_exec.py: on the cached start it adds the listener calls and the
BPF interpreter; the words for a denial (syscall and flag names, errno names) are
imported at the first denial, so a program never denied pays a fork and a few polls.

What the program sees is what it would see with run in place:

- the same answers: a denial fails with the policy's errno; an allowed call never leaves
  the kernel (only denied calls and execs make the round trip here);
- the same exit status: its code, or the signal that killed it raised again on this
  process (a shell still says "Killed", ``subprocess`` still reads -N);
- signals sent to run (SIGTERM, SIGHUP, SIGINT, SIGQUIT) go to the program; SIGINT and
  SIGQUIT not when we are in the terminal's foreground, whose keys already sent the
  program its own;
- processes it leaves running (a daemon, ``cmd &``) keep their answers: if the filter
  still has callers when the program ends, a detached process of ours (its own session,
  stdio on /dev/null, no other descriptor) answers them until the last one ends. Their
  denials are not reported; nobody is left to read them.

Safety argument:

- The child is a fork of run's own single-threaded process and does only what run does
  in place (``exec_confined``: nothing applied before everything was decided; any
  failure exits 126). It arms PDEATHSIG first: if this process dies, the program dies.
- The listener is taken as run_processes.py takes it: from our unreaped child's table,
  through its pidfd, while the child has not passed the exec that waits for our answer
  (the listener is close-on-exec: the exec is the only place it goes away). A pipe,
  close-on-exec too, tells a child that exec'd with no listener (one was installed above
  it, under ``isolates trace``: its filter is then the policy's own program, which
  answers everything in the kernel) from one still on its way.
- Every answer is the policy's own program, without the notifying, on the parked
  registers (verdicts.py): an errno is that errno; an allow is CONTINUE (execs, which no
  filter of ours decides by memory, so what the caller rewrites meanwhile cannot change
  the verdict); a kill (the policy's kills are notified too, so that run can name the
  call) kills the caller's process before its call is answered: the call never runs.
  Nothing runs here that the policy alone would not let run.
- Once it holds the listener this process is not dumpable (``hold_listener``), before
  it answers the exec: the program, the same user and without capabilities over us,
  can neither take the listener (pidfd_getfd) nor read our memory or descriptors, with
  or without a Landlock domain of its own (which refuses that outward too) or Yama.
- If this process is killed, the listener closes: every call it would have answered
  fails with ENOSYS (still a denial), and PDEATHSIG ends the program.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C core: see run_exec.py
import os
import select
import sys

from isolates.sandbox.lowlevel import (
    NATIVE_ARCH,
    continue_notification,
    deny_notification,
    program_for_pid,
    receive_notification,
    set_not_dumpable,
    set_parent_death_signal,
    syscall,
    uapi,
    wake_synchronously,
)

from .run_exec import exec_ready

TYPE_CHECKING = False  # not typing's: this module is on the cached start's path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from isolates.sandbox.lowlevel import Notification

    from .._core.denials import Denials
    from .run_exec import Ready

_LISTENER = "anon_inode:seccomp notify"
_FORWARDED = (_signal.SIGTERM, _signal.SIGHUP, _signal.SIGINT, _signal.SIGQUIT)
_TERMINAL_KEYS = (_signal.SIGINT, _signal.SIGQUIT)
_EXECVE = uapi.syscall_number("execve")
_ACTION, _ERRNO = uapi.SECCOMP_RET_ACTION_FULL, uapi.SECCOMP_RET_ERRNO
_ALLOWS = (uapi.SECCOMP_RET_ALLOW, uapi.SECCOMP_RET_LOG)
_MAX_ERRNO = 4095  # the kernel caps a filter's errno at this


def run_ready(ready: Ready, argv: list[str], env: dict[str, str]) -> int:
    """Run the program confined by ``ready``: as our child when it reports (returns
    never: we exit with its status), else in place (returns only on failure: the exit
    status, after saying why)."""
    if ready[8] is None:
        return exec_ready(ready, argv, env)
    started = _start(ready, argv, env)
    if isinstance(started, str):  # nothing was applied here: run in place instead
        _say(f"warning: denials cannot be reported here ({started}); running in place")
        verdict, slots = ready[8][:2]
        return exec_ready((*ready[:1], verdict, *ready[2:7], slots, None), argv, env)
    _report_and_exit(*started)


def _start(
    ready: Ready, argv: list[str], env: dict[str, str]
) -> tuple[int, int, Answering, bool] | str:
    """Our child, confining itself by ``ready``; its pidfd; what answers its listener,
    which is taken before its exec; whether it reports always. A string: why it could
    not be done here (a fork, a pidfd or pidfd_getfd refused: under a policy of someone
    else's, or ptrace_scope 3), after the child, if any, was killed before its exec."""
    assert ready[8] is not None
    verdict, slots, guards, always = ready[8]
    try:
        exec_seen, exec_sign = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        pid = os.fork()
    except OSError as exc:
        return f"fork: {exc.strerror}"
    if pid == 0:
        os.close(exec_seen)
        _become_program(parent, ready, argv, env, program_for_pid(verdict, slots, os.getpid()))
    os.close(exec_sign)
    program = Answering(program_for_pid(verdict, slots, pid), guards)
    program.expect_exec()  # while the child confines itself: its exec is then answered at once
    try:
        pidfd = _calling("pidfd_open", os.pidfd_open, pid)
        for sig in _FORWARDED:  # before the wait: a Ctrl-C now ends the program, not us
            _signal.signal(sig, _forwarder(pidfd))
        try:
            program.listener = _take_listener(pid, pidfd, exec_seen)
        except OSError:
            os.close(pidfd)
            raise
    except OSError as exc:
        os.kill(pid, _signal.SIGKILL)  # parked in its exec, or not there yet: nothing ran
        os.waitpid(pid, 0)
        for sig in _FORWARDED:
            _signal.signal(sig, _signal.SIG_DFL)
        return exc.strerror or str(exc)
    finally:
        os.close(exec_seen)
    return pid, pidfd, program, always


def _calling(name: str, call: Callable[[int], int], arg: int) -> int:
    try:
        return call(arg)
    except OSError as exc:
        raise OSError(exc.errno, f"{name}: {exc.strerror}") from None


def _report_and_exit(pid: int, pidfd: int, program: Answering, always: bool) -> NoReturn:
    """Answer the program until it ends, say what it was denied, exit as it did."""
    try:
        status = _wait(pid, pidfd, program)
    finally:
        os.close(pidfd)
    if program.denials and (always or status != 0):
        say_denials(program.denials)
    if program.violation is not None:
        call, killed = program.violation
        whose = "" if killed == pid else f" (in process {killed}, of the program's tree)"
        _say(f"killed: {call} is not allowed by the policy{whose}")
        if killed == pid and os.WIFSIGNALED(status) and os.WTERMSIG(status) == _signal.SIGKILL:
            status = _signal.SIGSYS  # as the kernel's own kill would have ended it
    program.serve_leftovers()
    code = _exit_status(status)
    # Nothing of ours is left to finalize (no thread, no file of ours open for writing):
    # the interpreter's teardown would be a tenth of this start.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _become_program(
    parent: int, ready: Ready, argv: list[str], env: dict[str, str], fallback: bytes
) -> NoReturn:
    try:
        set_parent_death_signal(_signal.SIGKILL)
        if os.getppid() != parent:  # run died before the signal was armed
            os._exit(1)
        os._exit(exec_ready(ready, argv, env, listener=True, fallback=fallback))
    except BaseException as exc:  # never back into the parent's code
        print(f"isolates run: {exc}", file=sys.stderr)
    os._exit(126)


def _take_listener(pid: int, pidfd: int, exec_seen: int) -> int | None:
    """A copy of the child's listener, taken before its exec (which waits for our
    answer); None when it exec'd without one, or died first (the pipe ends)."""
    poller = select.poll()
    poller.register(exec_seen, select.POLLIN)
    while True:
        fd = listener_of(pid)
        if fd is not None:
            return hold_listener(syscall("pidfd_getfd", pidfd, fd, 0))
        if poller.poll(1):  # (looking without sleeping measured no faster)
            return None


def hold_listener(listener: int) -> int:
    """``listener``, a copy of the program's, now ours to answer: from here on no process
    of our user may take it from us (set_not_dumpable; the program cannot run before
    its exec, which waits for our answer). Without that, where Landlock is missing (its
    domain refuses ptrace-class access outward) the program could take it with
    pidfd_getfd and let its own denied calls run. Close-on-exec, as pidfd_getfd made it."""
    set_not_dumpable()
    wake_synchronously(listener)  # each denial is a round trip: make it one switch
    return listener


def listener_of(pid: int) -> int | None:
    """The number of process ``pid``'s seccomp listener descriptor, if it holds one."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == _LISTENER:
                return int(name)
        except OSError:
            continue
    return None


def kill_process(pid: int) -> None:
    """SIGKILL to process ``pid`` through a pidfd (gone already: nothing to do)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        _signal.pidfd_send_signal(fd, _signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)


class Answering:
    """The program's listener, answered by ``verdict`` (its policy without notifying);
    ``guards``: the guards alone, which say a denial no option can lift."""

    def __init__(self, verdict: bytes, guards: bytes) -> None:
        from .._core.verdicts import Verdicts  # not on the start of --no-report

        self.listener: int | None = None
        self._verdicts = Verdicts(verdict)
        self._guards = Verdicts(guards)
        self.denials: Denials | None = None
        self.violation: tuple[str, int] | None = None  # the first: the call, its process

    def expect_exec(self) -> None:
        """Evaluate the verdict on an exec now: no filter of ours reads execve's
        arguments, so the rendezvous is then answered from what is remembered."""
        if _EXECVE is not None:  # (every architecture we run on has it)
            self._verdicts.ret_of(_EXECVE, (0,) * 6)

    def answer(self, record: bool = True) -> None:
        """Answer the call the listener holds (the poll said it is readable)."""
        assert self.listener is not None
        try:
            n = receive_notification(self.listener)
        except OSError:  # the caller died before we read it
            return
        ret = self._verdicts.ret_of(n.nr, n.args) if n.arch == NATIVE_ARCH else 0
        action = ret & _ACTION
        try:
            if action == _ERRNO:
                err = min(ret & 0xFFFF, _MAX_ERRNO)
                if record:  # before the answer: its memory is as the call saw it
                    self._record(n, err)
                deny_notification(self.listener, n.id, err)
            elif action in _ALLOWS:
                continue_notification(self.listener, n.id)
            else:
                self._kill_caller(n, record)
        except OSError:  # ENOENT: the caller died while parked; nothing ran
            pass

    def _record(self, n: Notification, err: int) -> None:
        from .._core.denials import Denials, described  # the words: at a denial only

        if self.denials is None:
            self.denials = Denials(allowed_by, self._guards.refuses)
        assert self.listener is not None
        self.denials.add(described(self.listener, n), n.nr, err, n.args)

    def _kill_caller(self, n: Notification, record: bool) -> None:
        """A call the policy kills for: the caller's process is killed, unanswered (as
        isolates do: a thread-killing rule ends the process too)."""
        from .._core.process_count import tgid_of  # at a violation only

        tgid = tgid_of(n.pid)
        if record and self.violation is None:
            from .._core.denials import described

            assert self.listener is not None
            self.violation = (described(self.listener, n), tgid or n.pid)
        if tgid is not None:
            kill_process(tgid)

    def serve_leftovers(self) -> None:
        """If processes the program left still use its filter, answer them from a
        detached process until the last one ends; then close the listener."""
        if self.listener is None:
            return
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        callers_left = not any(events & select.POLLHUP for _, events in poller.poll(0))
        if callers_left and os.fork() == 0:
            self._detached(poller)
        os.close(self.listener)
        self.listener = None

    def _detached(self, poller: select.poll) -> NoReturn:
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            assert self.listener is not None
            os.closerange(3, self.listener)
            os.closerange(self.listener + 1, 1 << 16)
            while True:
                events = dict(poller.poll())
                if events.get(self.listener, 0) & select.POLLHUP:
                    break
                self.answer(record=False)
        finally:
            os._exit(0)


def allowed_by(nr: int) -> str:
    """What would allow a denied syscall, as an option of ``isolates run``."""
    from isolates.sandbox.lowlevel import syscall_name

    return f"--allow {syscall_name(nr)}"


def _wait(pid: int, pidfd: int, program: Answering) -> int:
    """The program's wait status; meanwhile its parked calls answered (the signals run
    receives are forwarded to it from its pidfd's opening on: ``_start``)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    listener = -1 if program.listener is None else program.listener
    if listener >= 0:
        poller.register(listener, select.POLLIN)
    try:
        while True:
            events = dict(poller.poll())
            if events.get(listener, 0) & select.POLLIN:
                program.answer()
            if pidfd in events:
                return os.waitpid(pid, 0)[1]
    finally:
        for sig in _FORWARDED:  # for what follows: the answerer left for leftovers
            _signal.signal(sig, _signal.SIG_DFL)


def _forwarder(pidfd: int) -> object:
    def forward(signum: int, frame: object) -> None:
        if signum in _TERMINAL_KEYS and in_terminal_foreground():
            return  # the terminal sent it to the program as well
        try:
            _signal.pidfd_send_signal(pidfd, signum)
        except OSError:  # it ended meanwhile
            pass

    return forward


def in_terminal_foreground() -> bool:
    """Whether our process group is its terminal's foreground one: the terminal's keys
    (Ctrl-C, Ctrl-\\) then reached the program as well as us."""
    for fd in (0, 1, 2):
        try:
            return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


def _exit_status(status: int) -> int:
    """The program's exit code; for a signal, that signal raised on us (no core file of
    ours), so whoever waits for run sees what it would have seen of the program."""
    if not os.WIFSIGNALED(status):
        return os.waitstatus_to_exitcode(status)
    sig = os.WTERMSIG(status)
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _signal.signal(sig, _signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), sig)
    return 128 + sig  # a signal that does not end a process (none that killed it)


def say_denials(denials: Denials) -> None:
    """The denials, as ``isolates run`` says them on its stderr."""
    listed = denials.listed()
    total = sum(d.times for d in listed) + denials.dropped
    _say(f"{total} calls denied by the policy:")
    for d in listed:
        again = f" ({d.times} times)" if d.times > 1 else ""
        print(f"  {d.call} -> {d.error}{again}; allowed by {d.allow}", file=sys.stderr)
    if denials.dropped:
        print(f"  and {denials.dropped} more", file=sys.stderr)


def _say(message: str) -> None:
    print(f"isolates run: {message}", file=sys.stderr)

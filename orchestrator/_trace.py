"""``isolates trace``: the syscalls a program makes, and the smallest profiles covering them.

The tracer is seccomp user notification, not ptrace: a forked child loads a filter that
hands every syscall to a listener (sandbox/_kernel_trace.py says why that is safe and how
the listener reaches us before the exec), then execs the command. We receive each call,
note it and let it run ("continue"); children and threads inherit the filter, so they are
traced too. clone3 is answered ENOSYS, as every isolates policy answers it, so the trace
shows the clone (whose flags a rule can check) that libc falls back to.

A call is kept as a ``Call``: the syscall and only the arguments some builtin rule,
promise or group compares (the others are zeroed), so a trace stays small and the
covers below can be checked call by call.
"""

from __future__ import annotations

import argparse
import errno
import functools
import inspect
import json
import os
import select
import shlex
import shutil
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from isolates.sandbox import (
    SELF_PID,
    Action,
    Networking,
    Pipes,
    Policy,
    PolicyError,
    Processes,
    PythonRuntime,
    Rule,
    RuleSet,
    SandboxError,
    Signals,
    SystemIO,
    Threads,
    Time,
)
from isolates.sandbox._bpf import NATIVE_ARCH
from isolates.sandbox._kernel import (
    Notification,
    continue_notification,
    deny_notification,
    receive_notification,
)
from isolates.sandbox._kernel_trace import exec_traced, notify_program, set_child_subreaper
from isolates.sandbox._merge import Entry
from isolates.sandbox._rules import Cmp
from isolates.sandbox._syscalls import name_of, number
from isolates.sandbox.profiles import groups, pledge, systemd
from isolates.sandbox.profiles._promises import BUILDERS

#: Stands for "the calling process's own pid" in a Call's arguments (never a u64 value).
SELF: Final = -1
_CLONE3: Final = number("clone3")
_HANDOFF_TIMEOUT: Final = 30.0  # only if the child hangs before the handoff (a bug)


class TraceError(Exception):
    """The tracer could not start the command (its message says why)."""


@dataclass(frozen=True)
class Call:
    """A kind of call: syscall ``nr`` of ``arch`` with the arguments rules look at."""

    nr: int
    args: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    arch: int = NATIVE_ARCH

    @property
    def name(self) -> str:
        if self.arch != NATIVE_ARCH:
            return f"arch{self.arch:#x}:{self.nr}"
        return name_of(self.nr)


@dataclass
class Trace:
    """What a traced command did: its calls (with counts), tasks seen, exit status."""

    argv: list[str]
    calls: Counter[Call] = field(default_factory=Counter)
    tasks: set[int] = field(default_factory=set)
    exit_code: int = 0

    def counts(self) -> dict[str, int]:
        """Calls per syscall name, most frequent first."""
        by_name: Counter[str] = Counter()
        for call, count in self.calls.items():
            by_name[call.name] += count
        return dict(sorted(by_name.items(), key=lambda item: (-item[1], item[0])))


def resolve(command: str, env: Mapping[str, str] | None = None) -> str:
    """The file ``command`` names, searched in $PATH as execvp would (FileNotFoundError)."""
    found = shutil.which(command, path=(env or os.environ).get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, f"{command}: command not found")
    return os.path.abspath(found)


def trace(
    argv: Sequence[str], env: Mapping[str, str] | None = None, relevant: Relevance | None = None
) -> Trace:
    """Run ``argv`` to completion under the tracer and return what it did.

    Meant for a process of its own (the ``isolates trace`` command): it becomes a child
    subreaper and reaps every child it has until the traced tasks are all gone.
    ``relevant`` defaults to ``relevance()``.
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
        _serve(listener, pid, result, relevant)
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
        return fds[0]
    os.waitpid(pid, 0)
    why = message[1:].decode(errors="replace") or "the child died before loading the filter"
    raise TraceError(why)


#: syscall number -> (argument indices rules compare, those compared to the caller's pid)
Relevance = Mapping[int, tuple[tuple[int, ...], frozenset[int]]]


def _serve(listener: int, main: int, result: Trace, relevant: Relevance) -> None:
    """Answer notifications until no traced task is left (the listener hangs up), then
    collect the command's exit status."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    poll = select.poll()
    poll.register(listener, select.POLLIN)
    poll.register(wake_r, select.POLLIN)
    started, status = False, None
    try:
        while True:
            events = dict(poll.poll())
            if wake_r in events:
                _drain(wake_r)
                reaped = _reap(main)
                status = status if reaped is None else reaped
            if events.get(listener, 0) & select.POLLIN:
                started = _answer(listener, main, result, relevant, started)
            elif events.get(listener, 0) & (select.POLLHUP | select.POLLERR):
                break
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        os.close(wake_r)
        os.close(wake_w)
    # The filter lets go of a task as it exits, which can be before it is a zombie.
    status = os.waitpid(main, 0)[1] if status is None else status
    _reap(main)
    result.exit_code = _exit_code(status)


def _answer(listener: int, main: int, result: Trace, relevant: Relevance, started: bool) -> bool:
    """Take one notification, record it, let the call run; True once the exec was seen."""
    try:
        note = receive_notification(listener)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EINTR):  # the task was killed meanwhile
            return started
        raise
    call = call_of(note, relevant)
    try:
        if note.nr == _CLONE3 and note.arch == NATIVE_ARCH:
            deny_notification(listener, note.id, errno.ENOSYS)
        else:
            continue_notification(listener, note.id)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
    started = started or (note.pid == main and call.name == "execve")
    if started:  # our child's own calls before its exec are not the program's
        result.calls[call] += 1
        result.tasks.add(note.pid)
    return started


def call_of(note: Notification, relevant: Relevance) -> Call:
    """The Call a notification is: arguments no rule compares are zeroed, and an argument
    compared to the caller's pid becomes SELF when it is the caller's pid."""
    if note.arch != NATIVE_ARCH:
        return Call(note.nr, arch=note.arch)
    indices, selfs = relevant.get(note.nr, ((), frozenset()))
    tgid = _tgid(note.pid) if selfs else 0
    args = [0] * 6
    for i in indices:
        args[i] = SELF if i in selfs and note.args[i] == tgid else note.args[i]
    return Call(note.nr, tuple(args))


def _tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Tgid:"))
    except (OSError, StopIteration, ValueError):
        return tid


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


# -- covers: the builtins, promises and groups that allow every call seen ------------------

BUILTINS: Final = (SystemIO, Networking, Threads, Time, Pipes, Processes, Signals)
#: Groups left out of the systemd cover: everything (@known), a whole service
#: (@system-service) and what every allow-list has already (@default).
_UMBRELLA: Final = frozenset({"@known", "@system-service", "@default"})


@dataclass(frozen=True)
class Cover:
    """The cover one family found for a trace (greedy, then pruned of what is redundant).

    ``chosen``: builtin methods (``"SystemIO.allow_read"``), promises or groups.
    ``always``: syscalls that what is always included covers (PythonRuntime for
    builtins and pledge, @default for systemd). ``uncovered``: syscalls with at least one
    call nothing in the family allows.
    """

    family: str
    chosen: tuple[str, ...]
    always: tuple[str, ...]
    uncovered: tuple[str, ...]

    def spelled(self) -> list[str] | str:
        """How to write it: RuleSet expressions, a promise string or a filter string."""
        if self.family == "builtins":
            return builtin_rulesets(self.chosen)
        return " ".join(self.chosen)


def covers(result: Trace) -> list[Cover]:
    """The builtin, pledge and systemd covers of every call in ``result``."""
    calls = frozenset(c for c in result.calls if not _answered_enosys(c))
    return [_builtins_cover(calls), _pledge_cover(calls), _systemd_cover(calls)]


def _answered_enosys(call: Call) -> bool:
    return call.arch == NATIVE_ARCH and call.nr == _CLONE3


def _builtins_cover(calls: frozenset[Call]) -> Cover:
    methods = builtin_methods()
    runtime = PythonRuntime().rules()

    def covered(chosen: frozenset[str]) -> frozenset[Call]:
        rules = [*runtime, *(r for m in chosen for r in methods[m])]
        return frozenset(c for c in calls if _rules_allow(rules, c))

    sizes = {m: len({r.syscall for r in rules}) for m, rules in methods.items()}
    chosen = _greedy(calls, sizes, covered)
    try:  # the merged policy decides: a method's rule replaces PythonRuntime's on a syscall
        allows = allowing(Policy(*(getattr(cls.nothing(), m)() for cls, m in _split(chosen))))
        final = frozenset(c for c in calls if allows(c))
    except PolicyError:  # methods that conflict: not after pruning, but say what they cover
        final = covered(chosen)
    return _cover("builtins", calls, _ordered(chosen, list(methods)), covered(frozenset()), final)


def _pledge_cover(calls: frozenset[Call]) -> Cover:
    promises = [p for p in BUILDERS if p != "error"]  # error changes answers, allows nothing

    @functools.cache
    def covered(chosen: frozenset[str]) -> frozenset[Call]:
        allows = allowing(pledge(" ".join(sorted(chosen))))
        return frozenset(c for c in calls if allows(c))

    sizes = {p: len(_allowed_names(pledge(p))) for p in promises}
    chosen = _greedy(calls, sizes, covered)
    return _cover("pledge", calls, _ordered(chosen, promises), covered(frozenset()),
                  covered(chosen))  # fmt: skip


def _systemd_cover(calls: frozenset[Call]) -> Cover:
    names = sorted(set(groups()) - _UMBRELLA)

    @functools.cache
    def covered(chosen: frozenset[str]) -> frozenset[Call]:
        allows = allowing(systemd(" ".join(["@default", *sorted(chosen)])))
        return frozenset(c for c in calls if allows(c))

    sizes = {g: len(groups()[g].native()) for g in names}
    chosen = _greedy(calls, sizes, covered)
    return _cover("systemd", calls, _ordered(chosen, names), covered(frozenset()),
                  covered(chosen))  # fmt: skip


def _greedy(universe: frozenset[Call], sizes: Mapping[str, int],
            covered: Callable[[frozenset[str]], frozenset[Call]]) -> frozenset[str]:  # fmt: skip
    """Greedy set cover: take the candidate covering most of what is left (the smaller on
    a tie), until nothing more can be covered; then drop any that became redundant."""
    chosen: frozenset[str] = frozenset()
    have = covered(chosen)
    while not universe <= have:
        gains = {c: len(covered(chosen | {c}) - have) for c in sorted(sizes) if c not in chosen}
        best = max(gains, key=lambda c: (gains[c], -sizes[c]), default=None)
        if best is None or gains[best] == 0:
            break
        chosen, have = chosen | {best}, covered(chosen | {best})
    for candidate in sorted(chosen, key=lambda c: -sizes[c]):
        if covered(chosen - {candidate}) >= have:
            chosen -= {candidate}
    return chosen


def _cover(family: str, calls: frozenset[Call], chosen: tuple[str, ...],
           always: frozenset[Call], final: frozenset[Call]) -> Cover:  # fmt: skip
    missing = {c.name for c in calls - final}
    base = {c.name for c in calls} - {c.name for c in calls - always}
    return Cover(family, chosen, tuple(sorted(base)), tuple(sorted(missing)))


def _ordered(chosen: frozenset[str], order: Sequence[str]) -> tuple[str, ...]:
    return tuple(c for c in order if c in chosen)


@functools.cache
def builtin_methods() -> dict[str, tuple[Rule, ...]]:
    """Every builtin ``allow_*`` method that takes no argument, with the rules it adds."""
    out: dict[str, tuple[Rule, ...]] = {}
    for cls in BUILTINS:
        for name in sorted(dir(cls)):
            method = getattr(cls, name)
            if name.startswith("allow_") and len(inspect.signature(method).parameters) == 1:
                out[f"{cls.__name__}.{name}"] = getattr(cls.nothing(), name)().rules()
    return out


def _split(labels: Iterable[str]) -> list[tuple[type[RuleSet], str]]:
    classes = {cls.__name__: cls for cls in BUILTINS}
    return [(classes[label.split(".")[0]], label.split(".")[1]) for label in labels]


def builtin_rulesets(labels: Iterable[str]) -> list[str]:
    """``["SystemIO.allow_read", "SystemIO.allow_open"]`` ->
    ``["SystemIO.nothing().allow_read().allow_open()"]``, one RuleSet per class."""
    by_class: dict[str, list[str]] = {}
    for cls, method in _split(labels):
        by_class.setdefault(cls.__name__, []).append(f".{method}()")
    return [f"{cls}.nothing(){''.join(calls)}" for cls, calls in by_class.items()]


# -- deciding a call the way a filter would, in Python --------------------------------------

_COMPARE: Final[dict[str, Callable[[int, int], bool]]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}  # fmt: skip


def _holds(cmp: Cmp, args: tuple[int, ...]) -> bool:
    value = SELF if cmp.value is SELF_PID else cmp.value
    assert isinstance(value, int)
    arg = args[cmp.arg]
    if cmp.op == "&==":
        return arg != SELF and arg & cmp.mask == value
    return _COMPARE[cmp.op](arg, value)


def _rules_allow(rules: Iterable[Rule], call: Call) -> bool:
    if call.arch != NATIVE_ARCH:
        return False
    name = call.name
    return any(
        r.syscall == name and r.action == Action.ALLOW and _all_hold(r.conditions, call.args)
        for r in rules
    )


def _all_hold(conditions: tuple[Cmp, ...], args: tuple[int, ...]) -> bool:
    return all(_holds(c, args) for c in conditions)


def allowing(policy: Policy) -> Callable[[Call], bool]:
    """Whether ``policy``'s filter lets a call run: the strictest matching entry decides,
    else the default; calls of other architectures never run."""
    by_nr: dict[int, list[Entry]] = {}
    for entry in policy.entries():
        by_nr.setdefault(entry.nr, []).append(entry)

    def allows(call: Call) -> bool:
        if call.arch != NATIVE_ARCH:
            return False
        entries = by_nr.get(call.nr, ())
        matching = [e.action for e in entries if _all_hold(e.conditions, call.args)]
        if not matching:
            return policy.default == Action.ALLOW
        return all(action == Action.ALLOW for action in matching)

    return allows


def _allowed_names(policy: Policy) -> set[str]:
    return {e.syscall for e in policy.entries() if e.action == Action.ALLOW}


@functools.cache
def relevance() -> dict[int, tuple[tuple[int, ...], frozenset[int]]]:
    """For each syscall, the arguments some candidate rule compares (and which of them
    it compares to the caller's pid): all a Call needs to keep."""
    rules: list[Rule | Entry] = [*PythonRuntime().rules()]
    rules += [r for rs in builtin_methods().values() for r in rs]
    policies = [pledge(p) for p in BUILDERS] + [pledge(" ".join(BUILDERS))]
    policies += [systemd(g) for g in groups() if g != "@known"]
    policies.append(Policy(default=Action.ALLOW))  # the guards every policy carries
    rules += [e for p in policies for e in p.entries()]
    indices: dict[str, set[int]] = {}
    selfs: dict[str, set[int]] = {}
    for rule in rules:
        for c in rule.conditions:
            indices.setdefault(rule.syscall, set()).add(c.arg)
            if c.value is SELF_PID:
                selfs.setdefault(rule.syscall, set()).add(c.arg)
    return {number(s): (tuple(sorted(i)), frozenset(selfs.get(s, ()))) for s, i in indices.items()}


# -- the report and the command line -------------------------------------------------------

_ALWAYS: Final = {"builtins": "PythonRuntime", "pledge": "CPython's needs, in every pledge",
                  "systemd": "@default"}  # fmt: skip
_NOTHING: Final = {"builtins": "no builtin", "pledge": "no promise", "systemd": "no group"}


def report(result: Trace, found: list[Cover]) -> dict[str, object]:
    """The trace and its covers as one JSON-able object (docs/cli.md lists the keys)."""
    out: dict[str, object] = {
        "command": result.argv,
        "exit_code": result.exit_code,
        "tasks": len(result.tasks),
        "calls": sum(result.calls.values()),
        "syscalls": result.counts(),
        "enosys": sorted({c.name for c in result.calls if _answered_enosys(c)}),
    }
    for cover in found:
        out[cover.family] = {
            "cover": cover.spelled(),
            "chosen": list(cover.chosen),
            "always": list(cover.always),
            "uncovered": list(cover.uncovered),
        }
    return out


def render(result: Trace, found: list[Cover]) -> str:
    """The report as text: a table of syscalls with counts, then each family's cover."""
    counts = result.counts()
    lines = [
        f"isolates trace: {shlex.join(result.argv)} exited with {result.exit_code} "
        f"({_count(len(result.tasks), 'task')}, {_count(sum(counts.values()), 'call')}, "
        f"{_count(len(counts), 'syscall')})",
        "",
        f"{'calls':>8}  syscall",
        *(f"{count:>8}  {name}" for name, count in counts.items()),
        "",
    ]
    for cover in found:
        spelled = cover.spelled()
        shown = f"Policy({', '.join(spelled)})" if isinstance(spelled, list) else repr(spelled)
        lines.append(f"{cover.family}: {shown}")
        lines.append(f"  always included ({_ALWAYS[cover.family]}): {', '.join(cover.always)}")
        lines.append(f"  {_NOTHING[cover.family]} covers: {', '.join(cover.uncovered) or '-'}")
    enosys = sorted({c.name for c in result.calls if _answered_enosys(c)})
    if enosys:
        lines.append(f"answered ENOSYS, as every isolates policy does: {', '.join(enosys)}")
    return "\n".join(lines) + "\n"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARG ...]")
    parser.set_defaults(command=main)


def main(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("isolates trace: no command given: isolates trace -- CMD [ARG ...]", file=sys.stderr)
        return 2
    try:
        result = trace(argv)
    except FileNotFoundError as exc:
        print(f"isolates trace: {exc.strerror}", file=sys.stderr)
        return 127
    except (TraceError, SandboxError) as exc:
        print(f"isolates trace: cannot trace {argv[0]}: {exc}", file=sys.stderr)
        return 126
    found = covers(result)
    text = json.dumps(report(result, found)) + "\n" if args.json else render(result, found)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stderr.write(text)
    return result.exit_code

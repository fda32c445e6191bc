"""``isolates run --learn --profile FILE [--update] -- CMD``: run CMD as its profile would
let it, but let what the profile would deny proceed, and say what that was.

The program runs under the tracer (trace.py), not under the profile: every call is let
run but those the profile's guards refuse (ptrace, mount, bpf, io_uring, TIOCSTI...:
what every policy denies whatever it names, and whatever is learned), which fail with
EPERM. Then each call and each path is held against the profile: a syscall its filter
would deny (the reference decider, with the arguments its rules compare), a path it
touched with a right no Landlock grant of the profile gives, a TCP port not granted.
Those are the would-be denials, printed at exit; ``--update`` adds exactly those to the
file: a ``rules`` RuleSet "learned" (each call with the arguments its rules compare, as
supporting rules) and a ``landlock`` one with the grants (trace_emit.py groups them).
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence

from isolates.sandbox import Policy, PolicyError
from isolates.sandbox.lowlevel import NATIVE_ARCH, Guard, Notification, deciding

from .._core.grants import beyond, grants_of
from .._core.resources import Resources
from .command import UsageError
from .trace import Refuse, relevance, trace
from .trace_emit import landlock_table
from .traced import SELF, Relevance, Trace, TracedCall, answered_enosys


def learn(profile: str, argv: Sequence[str], *, update: bool) -> int:
    """Run ``argv`` learning against ``profile``; the program's exit status."""
    try:
        policy = Policy.load(profile)
    except PolicyError as exc:
        raise UsageError(f"--profile {profile}: {exc}") from None
    relevant = _relevance(policy)
    result = trace(list(argv), None, relevant, _refusing(policy))
    calls = _denied_calls(policy, result)
    paths = beyond(policy, result.resources)
    _say(calls, paths)
    if update and (calls or paths.paths or paths.connect_tcp or paths.bind_tcp):
        with open(profile, "a") as f:
            f.write(_learned(calls, paths, relevant))
        Policy.load(profile)  # what we wrote loads
        print(f"isolates run: --update: {profile} now allows them", file=sys.stderr)
    return result.exit_code


def _relevance(policy: Policy) -> Relevance:
    """The arguments the trace keeps: those any builtin compares, and the profile's."""
    out = {nr: (set(indices), selfs) for nr, (indices, selfs) in relevance().items()}
    for entry in policy.entries():
        indices, _ = out.setdefault(entry.nr, (set(), frozenset()))
        indices.update(c.arg for c in entry.conditions)
    return {nr: (tuple(sorted(i)), s) for nr, (i, s) in out.items()}


def _refusing(policy: Policy) -> Refuse:
    """What learning never lets through: what the profile's guards refuse."""

    def refuse(note: Notification) -> int | None:
        action, decider = deciding(policy, note.nr, note.args)
        if not isinstance(decider, Guard):
            return None
        return action.errno if action.kind == "errno" else errno.EPERM

    return refuse


def _denied_calls(policy: Policy, result: Trace) -> list[TracedCall]:
    """The traced calls the profile's filter would deny by its rules or its default
    (once each); not those its guards refuse: they were refused, and are never learned."""
    denied = []
    for call in sorted(result.calls, key=lambda c: (c.name, c.args)):
        if answered_enosys(call) or call.arch != NATIVE_ARCH:
            continue
        args = tuple(0 if a is SELF else int(a) for a in call.args)
        action, decider = deciding(policy, call.nr, args)
        if action.kind not in ("allow", "log") and not isinstance(decider, Guard):
            denied.append(call)
    return denied


def _say(calls: list[TracedCall], paths: Resources) -> None:
    total = len(calls) + len(paths.paths) + len(paths.connect_tcp) + len(paths.bind_tcp)
    if not total:
        print("isolates run: --learn: the profile denied nothing this run did", file=sys.stderr)
        return
    print(f"isolates run: --learn: {total} things the profile would deny:", file=sys.stderr)
    for call in calls:
        print(f"  seccomp: {_spelled(call)}", file=sys.stderr)
    for path, rights in sorted(paths.paths.items()):
        print(f"  landlock: {path}: {', '.join(sorted(rights))}", file=sys.stderr)
    for key, ports in (("connect", paths.connect_tcp), ("bind", paths.bind_tcp)):
        for port in sorted(ports):
            print(f"  landlock: {key} TCP port {port}", file=sys.stderr)


def _spelled(call: TracedCall) -> str:
    shown = [f"arg{i} = {a}" for i, a in enumerate(call.args) if a]
    return f"{call.name}" + (f" ({', '.join(shown)})" if shown else "")


def _learned(calls: list[TracedCall], paths: Resources, relevant: Relevance) -> str:
    """The tables ``--update`` appends: exactly the would-be denials, allowed."""
    out = ["", "# learned by isolates run --learn"]
    if calls:
        rules = [_rule(call, relevant.get(call.nr, ((), frozenset()))[0]) for call in calls]
        out += ["[[ruleset]]", 'kind = "rules"', 'name = "learned"', "rules = [",
                *(f"    {r}," for r in rules), "]"]  # fmt: skip
    out += landlock_table(grants_of(paths), paths, "learned")
    return "\n".join(out) + "\n"


def _rule(call: TracedCall, compared: tuple[int, ...]) -> str:
    """The call as a supporting rule, with each argument some rule compares (``compared``)
    equal to what it was: exactly this call, and calls like it."""
    conditions = [f'{{ arg = {i}, op = "==", value = {_value(call.args[i])} }}' for i in compared]
    args = f", args = [{', '.join(conditions)}]" if conditions else ""
    return f'{{ syscall = "{call.name}"{args}, implied = true }}'


def _value(arg: object) -> str:
    return '"self_pid"' if arg is SELF else str(int(arg))  # type: ignore[call-overload]

"""The covers of a trace: the fewest builtins, pledge promises or systemd groups that allow
every call it saw, and the report that shows them.

Each family is covered greedily (``_greedy``): take the candidate allowing most of the
calls still uncovered, then drop candidates the others made redundant. Whether a policy
allows a call is decided here in Python, the way its filter would (``allowing``), from
its merged entries; tests prove that agrees with the compiled BPF.
"""

from __future__ import annotations

import enum
import functools
import inspect
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
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
    Signals,
    SystemIO,
    Threads,
    Time,
)
from isolates.sandbox.lowlevel import Entry, decide_policy, decide_rules
from isolates.sandbox.lowlevel import syscall_number as number
from isolates.sandbox.profiles import groups, pledge, systemd
from isolates.sandbox.profiles._promises import BUILDERS

from .traced import SELF, Trace, TracedCall, answered_enosys

BUILTINS: Final = (SystemIO, Networking, Threads, Time, Pipes, Processes, Signals)
#: Groups left out of the systemd cover: everything (@known), a whole service
#: (@system-service) and what every allow-list has already (@default).
_UMBRELLA: Final = frozenset({"@known", "@system-service", "@default"})


class Family(enum.StrEnum):
    """Where a cover's candidates come from (its key in the JSON report)."""

    BUILTINS = "builtins"  # the builtin RuleSets' allow_* methods
    PLEDGE = "pledge"  # OpenBSD pledge promises
    SYSTEMD = "systemd"  # systemd's syscall groups


@dataclass(frozen=True)
class Cover:
    """The cover one family found for a trace (greedy, then pruned of what is redundant).

    ``chosen``: builtin methods (``"SystemIO.allow_read"``), promises or groups.
    ``always``: syscalls that what is always included covers (PythonRuntime for
    builtins and pledge, @default for systemd). ``uncovered``: syscalls with at least one
    call nothing in the family allows.
    """

    family: Family
    chosen: tuple[str, ...]
    always: tuple[str, ...]
    uncovered: tuple[str, ...]

    def spelled(self) -> list[str] | str:
        """How to write it: RuleSet expressions, a promise string or a filter string."""
        if self.family is Family.BUILTINS:
            return builtin_rulesets(self.chosen)
        return " ".join(self.chosen)


def covers(result: Trace) -> list[Cover]:
    """The builtin, pledge and systemd covers of every call in ``result``."""
    calls = frozenset(c for c in result.calls if not answered_enosys(c))
    return [_builtins_cover(calls), _pledge_cover(calls), _systemd_cover(calls)]


def _builtins_cover(calls: frozenset[TracedCall]) -> Cover:
    methods = builtin_methods()
    runtime = PythonRuntime().rules()

    def covered(chosen: frozenset[str]) -> frozenset[TracedCall]:
        rules = [*runtime, *(r for m in chosen for r in methods[m])]
        return frozenset(c for c in calls if _rules_allow(rules, c))

    sizes = {m: len({r.syscall for r in rules}) for m, rules in methods.items()}
    # Of two methods covering as much, the one whose own syscalls the program made: a
    # TCP client's socket and connect are allow_tcp_clients, not a server's bind.
    made = {c.name for c in calls}
    unused = {
        m: len({r.syscall for r in rules if not r.implied} - made) for m, rules in methods.items()
    }
    chosen = _greedy(calls, sizes, covered, unused)
    try:  # the merged policy decides: a method's rule replaces PythonRuntime's on a syscall
        allows = allowing(Policy(*(getattr(cls.nothing(), m)() for cls, m in _split(chosen))))
        final = frozenset(c for c in calls if allows(c))
    except PolicyError:  # methods that conflict: not after pruning, but say what they cover
        final = covered(chosen)
    return _cover(
        Family.BUILTINS, calls, _ordered(chosen, list(methods)), covered(frozenset()), final
    )


def _pledge_cover(calls: frozenset[TracedCall]) -> Cover:
    promises = [p for p in BUILDERS if p != "error"]  # error changes answers, allows nothing

    @functools.cache
    def covered(chosen: frozenset[str]) -> frozenset[TracedCall]:
        allows = allowing(pledge(" ".join(sorted(chosen))))
        return frozenset(c for c in calls if allows(c))

    sizes = {p: len(_allowed_names(pledge(p))) for p in promises}
    chosen = _greedy(calls, sizes, covered)
    return _cover(
        Family.PLEDGE, calls, _ordered(chosen, promises), covered(frozenset()), covered(chosen)
    )


def _systemd_cover(calls: frozenset[TracedCall]) -> Cover:
    names = sorted(set(groups()) - _UMBRELLA)

    @functools.cache
    def covered(chosen: frozenset[str]) -> frozenset[TracedCall]:
        allows = allowing(systemd(" ".join(["@default", *sorted(chosen)])))
        return frozenset(c for c in calls if allows(c))

    sizes = {g: len(groups()[g].native()) for g in names}
    chosen = _greedy(calls, sizes, covered)
    return _cover(
        Family.SYSTEMD, calls, _ordered(chosen, names), covered(frozenset()), covered(chosen)
    )


def _greedy(
    universe: frozenset[TracedCall],
    sizes: Mapping[str, int],
    covered: Callable[[frozenset[str]], frozenset[TracedCall]],
    unused: Mapping[str, int] | None = None,
) -> frozenset[str]:
    """Greedy set cover: take the candidate covering most of what is left (on a tie, the
    one allowing fewest syscalls the program did not make, then the smaller), until
    nothing more can be covered; then drop any that became redundant."""
    spare = unused or {}
    chosen: frozenset[str] = frozenset()
    have = covered(chosen)
    while not universe <= have:
        gains = {c: len(covered(chosen | {c}) - have) for c in sorted(sizes) if c not in chosen}
        best = max(gains, key=lambda c: (gains[c], -spare.get(c, 0), -sizes[c]), default=None)
        if best is None or gains[best] == 0:
            break
        chosen, have = chosen | {best}, covered(chosen | {best})
    for candidate in sorted(chosen, key=lambda c: -sizes[c]):
        if covered(chosen - {candidate}) >= have:
            chosen -= {candidate}
    return chosen


def _cover(
    family: Family,
    calls: frozenset[TracedCall],
    chosen: tuple[str, ...],
    always: frozenset[TracedCall],
    final: frozenset[TracedCall],
) -> Cover:
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


# -- deciding a call: the sandbox's reference decider, which the compiled filter matches ----


def _rules_allow(rules: Iterable[Rule], call: TracedCall) -> bool:
    """Whether some allowing rule among ``rules`` lets the call run."""
    mine = [
        Entry(r.syscall, call.nr, r.action, r.conditions)
        for r in rules
        if r.syscall == call.name and r.action == Action.ALLOW
    ]
    denied = Action.ERRNO(1)
    answer = decide_rules(mine, (), denied, call.nr, call.args, arch=call.arch, self_pid=SELF)
    return answer == Action.ALLOW


def allowing(policy: Policy) -> Callable[[TracedCall], bool]:
    """Whether ``policy``'s filter lets a call run: its guards, then the strictest
    matching entry, else the default; calls of other architectures never run."""

    def allows(call: TracedCall) -> bool:
        answer = decide_policy(policy, call.nr, call.args, arch=call.arch, self_pid=SELF)
        return answer == Action.ALLOW

    return allows


def _allowed_names(policy: Policy) -> set[str]:
    return {e.syscall for e in policy.entries() if e.action == Action.ALLOW}


@functools.cache
def relevance() -> dict[int, tuple[tuple[int, ...], frozenset[int]]]:
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


# -- the report -----------------------------------------------------------------------------

_ALWAYS: Final = {
    Family.BUILTINS: "PythonRuntime",
    Family.PLEDGE: "CPython's needs, in every pledge",
    Family.SYSTEMD: "@default",
}
_NOTHING: Final = {
    Family.BUILTINS: "no builtin",
    Family.PLEDGE: "no promise",
    Family.SYSTEMD: "no group",
}


def report(result: Trace, found: list[Cover]) -> dict[str, object]:
    """The trace and its covers as one JSON-able object (docs/cli.md lists the keys)."""
    out: dict[str, object] = {
        "command": result.argv,
        "exit_code": result.exit_code,
        "tasks": len(result.tasks),
        "calls": sum(result.calls.values()),
        "syscalls": result.counts(),
        "enosys": _enosys(result),
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
        lines += _cover_lines(cover)
    enosys = _enosys(result)
    if enosys:
        lines.append(f"answered ENOSYS, as every isolates policy does: {', '.join(enosys)}")
    return "\n".join(lines) + "\n"


def _cover_lines(cover: Cover) -> list[str]:
    spelled = cover.spelled()
    shown = f"Policy({', '.join(spelled)})" if isinstance(spelled, list) else repr(spelled)
    return [
        f"{cover.family}: {shown}",
        f"  always included ({_ALWAYS[cover.family]}): {', '.join(cover.always)}",
        f"  {_NOTHING[cover.family]} covers: {', '.join(cover.uncovered) or '-'}",
    ]


def _enosys(result: Trace) -> list[str]:
    return sorted({c.name for c in result.calls if answered_enosys(c)})


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

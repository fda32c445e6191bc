"""Merging the rules of many RuleSets into one rule list per syscall, catching conflicts.

Each RuleSet declares its ``kind`` (a ``RuleKind``); four kinds of rule meet here:

- ``BASELINE`` (PythonRuntime): what the interpreter needs. A user rule on the same
  syscall replaces it, so a user can tighten, e.g. forbid ``mmap`` with PROT_EXEC.
- ``NORMAL`` (everything the user writes): an unconditional rule and a conditional rule
  on one syscall conflict, since the condition would be dead; so do two different
  unconditional actions.
- ``IMPLIED`` (the syscalls a Landlock's rights need, the orchestrator's own calls, and
  single rules marked ``implied=True`` such as the polling a socket needs). They add to
  the user's rules; an unconditional implied rule absorbs the user's conditions, because
  the right cannot work without it (Landlock then does the path check).
- ``SUPPORT``: the baseline's own ``implied=True`` rules (what stacking a stricter
  policy needs: seccomp, prctl(PR_SET_NO_NEW_PRIVS), landlock_*). They add to the
  user's rules on those syscalls, so ``Processes.allow_prctl_name()`` does not take
  NO_NEW_PRIVS away, and give way only to a user rule denying the syscall outright.

A conflict is a ``RuleConflict`` naming the syscall, both RuleSets and both rules.
"""

from __future__ import annotations

import errno
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import PolicyError
from ._rules import Action, Cmp, Rule
from ._ruleset import _DEFAULT, LandlockRules, RuleKind, RuleSet
from ._syscalls import exists, number

if TYPE_CHECKING:
    from ._landlock import Landlock

#: What to merge of a RuleSet (``Policy`` leaves some builtin rules out): its rules.
RulesOf = Callable[[RuleSet], tuple[Rule, ...]]


class RuleConflict(PolicyError):
    """Two rules on one syscall that cannot stand together in a policy.

    ``syscall`` is the syscall; ``rulesets`` the two RuleSets the rules come from (a
    Landlock given to the Policy: that Landlock) and ``rules`` the two rules, each pair
    in the order the policy holds them (one RuleSet twice when it holds both rules). The
    message names both; when two different RuleSets go by the same name, it says which
    argument of the Policy each one is.
    """

    def __init__(
        self,
        message: str,
        syscall: str,
        rulesets: tuple[RuleSet | Landlock, RuleSet | Landlock],
        rules: tuple[Rule, Rule],
    ) -> None:
        super().__init__(message)
        self.syscall = syscall
        self.rulesets = rulesets
        self.rules = rules

    def __reduce__(self) -> tuple[type[RuleConflict], tuple[str, str, object, object]]:
        return type(self), (str(self), self.syscall, self.rulesets, self.rules)


@dataclass(frozen=True)
class Entry:
    """One compiled line: on ``syscall`` with ``conditions`` (empty: always), do ``action``."""

    syscall: str
    nr: int
    action: Action
    conditions: tuple[Cmp, ...]


@dataclass(frozen=True)
class _Source:
    ruleset: RuleSet
    position: int  # among the policy's RuleSets (0: PythonRuntime)
    kind: RuleKind
    rule: Rule
    action: Action


def merge(
    rulesets: Sequence[RuleSet], default: Action, rules_of: RulesOf | None = None
) -> tuple[tuple[Entry, ...], frozenset[str]]:
    """The merged rule list, and the set of syscalls any rule names. ``rules_of``: the
    rules to take of each RuleSet (default: all of them, ``rs.rules()``)."""
    by_syscall: dict[str, list[_Source]] = defaultdict(list)
    for position, rs in enumerate(rulesets):
        kind = kind_of(rs)
        for rule in rs.rules() if rules_of is None else rules_of(rs):
            if not exists(rule.syscall):
                number(rule.syscall, where=f"{rs.name}: {rule!r}: ")  # raises, naming it
            action = resolve(rule.action, default)
            source = _Source(rs, position, _own_kind(kind, rule), rule, action)
            by_syscall[rule.syscall].append(source)
    entries: list[Entry] = []
    for syscall, sources in by_syscall.items():
        entries.extend(_merge_one(syscall, sources, default))
    return tuple(entries), frozenset(by_syscall)


def resolve(action: Action, default: Action) -> Action:
    """A rule's action: ``deny()`` without one means the default, or EPERM when the
    default lets calls run (a deny never allows)."""
    if action != _DEFAULT:
        return action
    return default if default.denies else Action.ERRNO(errno.EPERM)


def kind_of(rs: RuleSet) -> RuleKind:
    """The ``RuleKind`` a RuleSet declares (its ``kind``, a member or its value)."""
    try:
        return RuleKind(rs.kind)
    except ValueError:
        kinds = ", ".join(f"RuleKind.{k.name}" for k in RuleKind)
        raise PolicyError(f"{rs.name}: kind {rs.kind!r} is none of {kinds}") from None


def _own_kind(kind: RuleKind, rule: Rule) -> RuleKind:
    """A rule's kind: its RuleSet's, except ``implied=True`` rules; the baseline's
    implied rules are SUPPORT (they add to the user's rules, yet give way to a user
    rule that denies the syscall outright)."""
    if not rule.implied:
        return kind
    return RuleKind.SUPPORT if kind is RuleKind.BASELINE else RuleKind.IMPLIED


def _merge_one(syscall: str, sources: list[_Source], default: Action) -> list[Entry]:
    if len(sources) == 1:  # most syscalls: nothing to conflict or merge with
        only = sources[0]
        if only.action == default:
            return []
        return [Entry(syscall, number(syscall), only.action, only.rule.conditions)]
    normal = [s for s in sources if s.kind is RuleKind.NORMAL]
    implied = [s for s in sources if s.kind is RuleKind.IMPLIED]
    support = [s for s in sources if s.kind is RuleKind.SUPPORT]
    chosen = normal or [s for s in sources if s.kind is RuleKind.BASELINE]
    _check_conflicts(syscall, chosen)
    _check_implied(syscall, chosen, implied)
    if any(not s.rule.conditions and s.action.denies for s in normal):
        support = []  # the user forbids the syscall outright: that is their call
    merged = chosen + implied + support
    if any(not s.rule.conditions and s.action == Action.ALLOW for s in merged):
        merged = [s for s in merged if not (s.rule.conditions and s.action == Action.ALLOW)]
    nr = number(syscall)
    out: dict[tuple[Action, tuple[Cmp, ...]], Entry] = {}
    for s in merged:
        if s.action != default:  # a rule that repeats the default changes nothing
            key = (s.action, s.rule.conditions)
            out.setdefault(key, Entry(syscall, nr, s.action, s.rule.conditions))
    return list(out.values())


def _check_implied(syscall: str, chosen: list[_Source], implied: list[_Source]) -> None:
    """A right that needs ``syscall`` next to a rule denying it: one of them is wrong."""
    denies = [s for s in chosen if s.action != Action.ALLOW]
    if implied and denies:
        need, deny = implied[0], denies[0]
        who_needs, who_denies = _names(need, deny)
        message = (
            f"{syscall!r}: {who_needs} needs it ({need.rule!r}) for the rights it "
            f"grants, but {who_denies} denies it ({deny.rule!r})"
        )
        raise _conflict(message, syscall, need, deny)


def _check_conflicts(syscall: str, sources: list[_Source]) -> None:
    """Two rules the user wrote that cannot both apply: the first pair found."""
    for u in (s for s in sources if not s.rule.conditions):
        for other in sources:
            if other is u:
                continue
            if other.rule.conditions:
                raise _conflict(_dead_condition(syscall, u, other), syscall, u, other)
            if other.action != u.action:
                first, second = _names(u, other)
                message = (
                    f"{syscall!r}: {first} says {u.action!r} ({u.rule!r}) but "
                    f"{second} says {other.action!r} ({other.rule!r})"
                )
                raise _conflict(message, syscall, u, other)


def _dead_condition(syscall: str, u: _Source, other: _Source) -> str:
    """The message for an unconditional rule ``u`` beside a conditional one."""
    outright, conditional = _names(u, other)
    if u.action == other.action:
        return (
            f"{syscall!r}: {outright} allows it outright ({u.rule!r}) while "
            f"{conditional} allows it only when {other.rule!r} holds; the condition "
            "would be dead. Drop one of the two rules."
        )
    return (
        f"{syscall!r}: {outright} gives {u.action!r} for every call ({u.rule!r}) while "
        f"{conditional} has {other.rule!r}; the second rule could never apply."
    )


def _names(a: _Source, b: _Source) -> tuple[str, str]:
    """How a message names two RuleSets: by name, and by their place in the Policy when
    two different RuleSets share a name (two ``SystemIO``)."""
    if a.ruleset.name != b.ruleset.name or a.position == b.position:
        return a.ruleset.name, b.ruleset.name
    return _placed(a), _placed(b)


def _placed(s: _Source) -> str:
    if s.position == 0:
        return f"{s.ruleset.name} (the runtime's own)"
    return f"{s.ruleset.name} (Policy argument {s.position})"


def _conflict(message: str, syscall: str, a: _Source, b: _Source) -> RuleConflict:
    first, second = sorted((a, b), key=lambda s: s.position)
    rulesets = (_given(first.ruleset), _given(second.ruleset))
    return RuleConflict(message, syscall, rulesets, (first.rule, second.rule))


def _given(rs: RuleSet) -> RuleSet | Landlock:
    """What the Policy was given: a Landlock for the RuleSet that stands for one."""
    return rs.landlock() if isinstance(rs, LandlockRules) else rs

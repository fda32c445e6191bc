"""Merging the rules of many RuleSets into one rule list per syscall, catching conflicts.

Three kinds of RuleSet meet here:

- ``baseline`` (PythonRuntime): what the interpreter needs. A user rule on the same
  syscall replaces it, so a user can tighten, e.g. forbid ``mmap`` with PROT_EXEC.
- ``normal`` (everything the user writes): an unconditional rule and a conditional rule
  on one syscall conflict, since the condition would be dead; so do two different
  unconditional actions.
- ``implied`` (Landlock rights, and single rules marked ``implied=True`` such as the
  polling a socket needs): the syscalls a granted right needs. They add to the user's
  rules; an unconditional implied rule absorbs the user's conditions, because the right
  cannot work without it (Landlock then does the path check).
- ``support``: the baseline's own ``implied=True`` rules (what stacking a stricter
  policy needs: seccomp, prctl(PR_SET_NO_NEW_PRIVS), landlock_*). They add to the
  user's rules on those syscalls, so ``Processes.allow_prctl_name()`` does not take
  NO_NEW_PRIVS away, and give way only to a user rule denying the syscall outright.
"""

from __future__ import annotations

import errno
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import PolicyError
from ._rules import Action, Cmp, Rule
from ._ruleset import _DEFAULT, RuleSet
from ._syscalls import exists, number


@dataclass(frozen=True)
class Entry:
    """One compiled line: on ``syscall`` with ``conditions`` (empty: always), do ``action``."""

    syscall: str
    nr: int
    action: Action
    conditions: tuple[Cmp, ...]


@dataclass(frozen=True)
class _Source:
    ruleset: str
    kind: str
    rule: Rule
    action: Action


def merge(rulesets: Sequence[RuleSet], default: Action) -> tuple[tuple[Entry, ...], frozenset[str]]:
    """The merged rule list, and the set of syscalls any rule names."""
    by_syscall: dict[str, list[_Source]] = defaultdict(list)
    for rs in rulesets:
        kind = rule_kind(rs)
        for rule in rs.rules():
            if not exists(rule.syscall):
                number(rule.syscall, where=f"{rs.name}: {rule!r}: ")  # raises, naming it
            action = resolve(rule.action, default)
            own = _own_kind(kind, rule)
            by_syscall[rule.syscall].append(_Source(rs.name, own, rule, action))
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


def _own_kind(kind: str, rule: Rule) -> str:
    """A rule's kind: its RuleSet's, except ``implied=True`` rules; the baseline's
    implied rules are "support" (they add to the user's rules, yet give way to a user
    rule that denies the syscall outright)."""
    if not rule.implied:
        return kind
    return "support" if kind == "baseline" else "implied"


def rule_kind(rs: RuleSet) -> str:
    return getattr(rs, "kind", "normal")


def _merge_one(syscall: str, sources: list[_Source], default: Action) -> list[Entry]:
    normal = [s for s in sources if s.kind == "normal"]
    implied = [s for s in sources if s.kind == "implied"]
    support = [s for s in sources if s.kind == "support"]
    chosen = normal or [s for s in sources if s.kind == "baseline"]
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
            out.setdefault(
                (s.action, s.rule.conditions), Entry(syscall, nr, s.action, s.rule.conditions)
            )
    return list(out.values())


def _check_implied(syscall: str, chosen: list[_Source], implied: list[_Source]) -> None:
    """A right that needs ``syscall`` next to a rule denying it: one of them is wrong."""
    denies = [s for s in chosen if s.action != Action.ALLOW]
    if implied and denies:
        need, deny = implied[0], denies[0]
        raise PolicyError(
            f"{syscall!r}: {need.ruleset} needs it ({need.rule!r}) for the rights it "
            f"grants, but {deny.ruleset} denies it ({deny.rule!r})"
        )


def _check_conflicts(syscall: str, sources: list[_Source]) -> None:
    unconditional = [s for s in sources if not s.rule.conditions]
    for u in unconditional:
        for other in sources:
            if other is u:
                continue
            if other.rule.conditions:
                raise PolicyError(
                    f"{syscall!r}: {u.ruleset} allows it outright ({u.rule!r}) while "
                    f"{other.ruleset} allows it only when {other.rule!r} holds; the "
                    "condition would be dead. Drop one of the two rules."
                    if u.action == other.action
                    else f"{syscall!r}: {u.ruleset} gives {u.action!r} for every call "
                    f"({u.rule!r}) while {other.ruleset} has {other.rule!r}; "
                    "the second rule could never apply."
                )
            if other.action != u.action:
                raise PolicyError(
                    f"{syscall!r}: {u.ruleset} says {u.action!r} ({u.rule!r}) but "
                    f"{other.ruleset} says {other.action!r} ({other.rule!r})"
                )

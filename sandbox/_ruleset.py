"""RuleSet: a named, immutable bundle of syscall rules (and the Landlock rights it carries)."""

from __future__ import annotations

import copy
import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar, Self

from ._errors import PolicyError
from ._rules import Action, Cmp, Rule

if TYPE_CHECKING:
    from ._landlock import Landlock


class RuleKind(enum.StrEnum):
    """How a RuleSet's rules merge with other rules on the same syscall (see ``_merge``).

    ``NORMAL``: what a user writes (a dead or contradicting rule is a ``RuleConflict``).
    ``BASELINE``: ``PythonRuntime``'s; a user rule on the same syscall replaces it.
    ``IMPLIED``: what something else needs (a Landlock's rights, the orchestrator's own
    calls); it adds to the user's rules. ``SUPPORT``: a baseline rule marked
    ``implied=True``; it adds to the user's rules unless they deny the syscall outright.
    """

    NORMAL = "normal"
    BASELINE = "baseline"
    IMPLIED = "implied"
    SUPPORT = "support"


class RuleSet:
    """A named bundle of rules. Start from ``.nothing()`` and add with ``allow_*``.

    Builders never mutate: every ``allow_*`` returns a new RuleSet, so a RuleSet can be
    shared and reused. Subclass to group your own rules::

        class Metrics(RuleSet):
            def allow_statsd(self) -> Self:
                return self.allow_rule("sendto", Arg(0) == STATSD_FD)

    ``everything()`` applies every ``allow_*`` method listed in ``EVERYTHING`` (the simple
    mode); it never includes the syscalls every policy denies (see ``Policy``).
    """

    #: The ``allow_*`` methods (taking no arguments) that ``everything()`` applies.
    EVERYTHING: ClassVar[tuple[str, ...]] = ()
    #: How this RuleSet's rules merge (a ``RuleKind``, or its value): NORMAL unless it
    #: holds what something else needs. Your own RuleSets leave it alone.
    kind: ClassVar[str] = RuleKind.NORMAL
    #: Builtin bundles (SystemIO, Networking, ..., the pledge and systemd profiles) grant
    #: by role, never by naming a syscall on purpose: in a policy whose Landlock confines
    #: the filesystem, their rules on path-based calls Landlock cannot check (chmod,
    #: chown, utimes, setxattr, ...: see ``_landlock_rules.UNCHECKED_PATH_CALLS``) are
    #: left out. A RuleSet of your own that names such a call keeps it.
    BUILTIN: ClassVar[bool] = False

    def __init__(self, *rules: Rule | str, name: str | None = None) -> None:
        self._name = name
        self._rules: tuple[Rule, ...] = tuple(_as_rule(r) for r in rules)

    @classmethod
    def nothing(cls) -> Self:
        """An empty RuleSet of this kind: allows nothing until ``allow_*`` adds to it."""
        return cls()

    @classmethod
    def everything(cls) -> Self:
        """Everything this kind of RuleSet can allow, unconditionally where it can."""
        rs = cls.nothing()
        for method in cls.EVERYTHING:
            rs = getattr(rs, method)()
        return rs

    @property
    def name(self) -> str:
        return self._name or type(self).__name__

    def named(self, name: str) -> Self:
        """The same rules under another name (names appear in error messages)."""
        new = copy.copy(self)
        new._name = name
        return new

    def rules(self) -> tuple[Rule, ...]:
        """The syscall rules this RuleSet contributes. Override to compute them."""
        return self._rules

    def landlock(self) -> Landlock | None:
        """The Landlock rights this RuleSet carries, if any. Override to bring rights
        with the rules you write (no syscalls are implied for them: ``rules()`` says
        which calls the RuleSet allows); a Landlock given to the Policy itself brings
        the syscalls its rights need."""
        return None

    def allow(self, *syscalls: str) -> Self:
        """Allow each named syscall outright."""
        return self._with(*(Rule(s) for s in syscalls))

    def allow_rule(self, syscall: str, *conditions: Cmp) -> Self:
        """Allow ``syscall`` when every condition holds (several calls OR together)."""
        return self._with(Rule(syscall, *conditions))

    def deny(self, *syscalls: str, action: Action | None = None) -> Self:
        """Deny each named syscall with ``action`` (default: the policy's default, or
        EPERM when the default lets calls run).

        Useful under a permissive default (``Policy(..., default=Action.ALLOW)``)
        or to give one syscall its own errno.
        """
        return self._with(*(Rule(s, action=action or _DEFAULT) for s in syscalls))

    def _with(self, *rules: Rule) -> Self:
        new = copy.copy(self)
        new._rules = self._rules + rules
        return new

    def __repr__(self) -> str:
        return f"<RuleSet {self.name}: {len(self.rules())} rules>"


#: Sentinel action: "whatever the policy's default action is".
_DEFAULT = Action("default")


class BuiltinRuleSet(RuleSet):
    """A plain RuleSet marked as a builtin bundle (see ``RuleSet.BUILTIN``): profiles."""

    BUILTIN: ClassVar[bool] = True


class LandlockRules(RuleSet):
    """A ``Landlock`` as a Policy holds it among its RuleSets: under the Landlock's name,
    the syscalls its rights need (``Landlock.rules()``, merged as implied rules) and the
    rights themselves (``landlock()``)."""

    kind: ClassVar[str] = RuleKind.IMPLIED

    def __init__(self, landlock: Landlock) -> None:
        super().__init__(*landlock.rules(), name=landlock.name)
        self._landlock = landlock

    def landlock(self) -> Landlock:
        return self._landlock


def _as_rule(rule: Rule | str) -> Rule:
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, str):
        return Rule(rule)
    raise PolicyError(f"RuleSet: expected a Rule or a syscall name, got {rule!r}")


def as_ruleset(item: object) -> RuleSet:
    """Accept a RuleSet, a Rule, or a bare syscall name where a RuleSet is expected
    (``Policy`` wraps a Landlock itself, before this)."""
    if isinstance(item, RuleSet):
        return item
    if isinstance(item, str):
        return RuleSet(item, name=item)
    if isinstance(item, Rule):
        return RuleSet(item, name=repr(item))
    if isinstance(item, Iterable):
        raise PolicyError(f"Policy: got an iterable {item!r}; unpack it: Policy(*rulesets)")
    raise PolicyError(
        f"Policy: expected a RuleSet, a Landlock, a Rule or a syscall name, got {item!r}"
    )

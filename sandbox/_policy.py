"""Policy: an immutable union of RuleSets plus the options that say how to enforce them."""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

from . import _bpf
from ._builtins_proc import PythonRuntime
from ._compiled import CompiledPolicy, Status
from ._compiler import compile_filter
from ._errors import PolicyError
from ._guard import ALWAYS_DENIED as ALWAYS_DENIED
from ._guard import Guard, guards
from ._landlock import Compat, Landlock
from ._landlock_rules import descriptor_form
from ._merge import Entry, RulesOf, kind_of, merge, resolve
from ._rules import SELF_PID, Action, Rule
from ._ruleset import LandlockRules, RuleKind, RuleSet, as_ruleset
from ._syscalls import number
from ._uapi import CLONE_NAMESPACES as CLONE_NAMESPACES

T = TypeVar("T")

_EPERM: Final = Action.ERRNO(errno.EPERM)


class Policy:
    """What a thread or process may do: the union of its RuleSets, deny by default.

    ``Policy(SystemIO.nothing().allow_stdout(), Networking.nothing().allow_tcp_clients())``
    allows exactly those calls (and what CPython itself needs, ``PythonRuntime``); every
    other syscall gets ``default`` (``Action.ERRNO(EPERM)`` unless you say otherwise).

    Always denied unless a RuleSet names them, whatever the default: io_uring, ptrace,
    process_vm_*, bpf, perf_event_open, userfaultfd, kexec, module loading, keyrings,
    mount and the new mount API, pivot_root, setns, unshare, ``clone`` with a namespace
    flag; ``ioctl`` TIOCSTI/TIOCLINUX (typing into a terminal) and the ``fcntl``/``ioctl``
    commands that make a descriptor signal another process (F_SETOWN, F_SETOWN_EX,
    F_SETSIG, O_ASYNC, FIOSETOWN, SIOCSPGRP, FIOASYNC). ``clone3`` answers ENOSYS so libc
    falls back to ``clone``, whose flags a filter can check. See ``_guard`` for what
    "names" means. Every applied policy also carries a Landlock domain (a minimal one
    when it grants no path): a process in a domain cannot ptrace, or open /proc/PID/mem
    and friends of, processes outside it.

    When its Landlock confines the filesystem, builtin RuleSets and profiles give no
    path-based metadata changes Landlock cannot check (chmod, chown, utimes, setxattr
    families): only their descriptor forms. Name such a call in a RuleSet of your own to
    allow it anyway.

    A Policy is immutable; it is checked when built (``PolicyError`` names the rule) and
    compiled once, on first use. Loading is one-way: a thread or process keeps every
    filter it ever loaded, so applying a second policy *stacks* and the result is the
    intersection of the two (each syscall gets the strictest answer of all filters).
    """

    __slots__ = (
        "_compat",
        "_compiled",
        "_default",
        "_entries",
        "_guards",
        "_landlock",
        "_named",
        "_own_rules",
        "_rulesets",
        "_uses_pid",
    )
    _rulesets: tuple[RuleSet, ...]
    _default: Action
    _compat: Compat
    _entries: tuple[Entry, ...]
    _named: frozenset[str]
    _own_rules: tuple[Rule, ...]
    _guards: dict[bool, tuple[Guard, ...]]
    _uses_pid: bool
    _landlock: Landlock | None
    _compiled: dict[tuple[int | None, bool, bool, frozenset[str], bool], CompiledPolicy]

    def __init__(
        self,
        *rulesets: RuleSet | Landlock | Rule | str,
        default: Action = _EPERM,
        compat: Compat = Compat.BEST_EFFORT,
    ) -> None:
        if not isinstance(default, Action) or default.kind == "default":
            raise PolicyError(f"Policy(default={default!r}): the default must be an Action")
        if not isinstance(compat, Compat):
            raise PolicyError(f"Policy(compat={compat!r}): use Compat.BEST_EFFORT or Compat.HARD")
        sets = (PythonRuntime(), *map(_as_ruleset, rulesets))
        landlock = _merge_landlock(sets)
        set_ = object.__setattr__
        set_(self, "_rulesets", sets)
        set_(self, "_default", default)
        set_(self, "_compat", compat)
        confines_fs = landlock is not None and landlock.confines_fs
        rules_of = _descriptor_forms if confines_fs else None
        entries, named = merge(sets, default, rules_of)
        set_(self, "_entries", entries)
        set_(self, "_named", named)
        set_(self, "_own_rules", _own_rules(sets, default, rules_of))
        set_(self, "_landlock", landlock)
        set_(self, "_compiled", {})
        set_(self, "_guards", {})
        uses_pid = any(c.value is SELF_PID for e in entries for c in e.conditions)
        set_(self, "_uses_pid", uses_pid)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Policy is immutable; build a new one with Policy.extend()")

    @property
    def rulesets(self) -> tuple[RuleSet, ...]:
        """``PythonRuntime``, then what the Policy was given, in order: a Landlock stands
        there as the RuleSet that carries it (its ``landlock()``) with the syscalls its
        rights need, under its name."""
        return self._rulesets

    @property
    def default(self) -> Action:
        return self._default

    @property
    def compat(self) -> Compat:
        return self._compat

    @property
    def landlock(self) -> Landlock | None:
        """The merged Landlock rights of every Landlock and RuleSet, if any brings some."""
        return self._landlock

    def extend(
        self, *rulesets: RuleSet | Landlock | Rule | str, default: Action | None = None
    ) -> Policy:
        """A new Policy with more RuleSets or Landlocks (and optionally another default)."""
        mine = self.rulesets[1:]  # PythonRuntime is added again by the constructor
        return Policy(*mine, *rulesets, default=default or self.default, compat=self.compat)

    # -- policy files (docs/sandbox.md, "Policy files") -----------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        """The Policy in the TOML file at ``path``; PolicyError names its line and key."""
        from ._policy_file import load

        policy: Policy = load(os.fspath(path))
        return policy

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<policy>") -> Policy:
        """The Policy ``text`` (a policy file's TOML) describes."""
        from ._policy_file import from_toml

        policy: Policy = from_toml(text, source)
        return policy

    def to_toml(self) -> str:
        """This policy as a policy file: loading it gives a policy that compiles to the
        same filter and the same Landlock plan."""
        from ._policy_file import to_toml

        return to_toml(self)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled as its policy file, which loads back to the same filter and Landlock
        # plan (the round trip is property-tested), so that an @isolate'd function sent
        # by value (to a Dask worker, say) keeps its own policy.
        return (_from_toml, (self.to_toml(),))

    def allows(self, syscall: str) -> bool:
        """True when some rule allows ``syscall`` (outright or under a condition)."""
        number(syscall)
        return any(e.syscall == syscall and e.action == Action.ALLOW for e in self.entries())

    def decide(self, syscall: str, *args: int) -> Action:
        """What this policy's filter answers for ``syscall(*args)``, computed by running
        the compiled BPF program here (nothing is loaded): ``Action.ALLOW``, an
        ``Action.ERRNO(n)``, a kill... Arguments not given are 0."""
        return _bpf.action_of(_bpf.evaluate(self.compile().bpf, number(syscall), args))

    def entries(self) -> tuple[Entry, ...]:
        """The merged rules, one line per (syscall, action, conditions). The guards
        (``guards()``) come before them in the compiled filter."""
        return self._entries

    def guards(self, *, all_threads: bool = False) -> tuple[Guard, ...]:
        """What this policy denies whatever its rules say (see ``_guard``); computed once
        per scope (the reference decider asks for every call it decides)."""
        cache = self._guards
        if all_threads not in cache:
            cache[all_threads] = guards(self._own_rules, self.default, one_thread=not all_threads)
        return cache[all_threads]

    def compile(
        self,
        pid: int | None = None,
        *,
        notify_kills: bool = False,
        all_threads: bool = False,
        notify_calls: frozenset[str] = frozenset(),
        notify_errnos: bool = False,
    ) -> CompiledPolicy:
        """Compile to plain data (BPF bytes and a Landlock plan); cached per policy.

        ``pid`` is the process that will load it (default: this one, at the time of the
        call, so a policy compiled before a fork is compiled again in the child); it
        only matters for rules on ``SELF_PID`` such as ``Signals.allow_kill_self()``.
        With ``notify_kills`` every killing action becomes ``Action.NOTIFY``, so a
        supervisor holding the listener learns which syscall it was before it kills the
        process. ``all_threads``: the filter will confine the whole process (TSYNC);
        otherwise it confines one thread and forbids loading filters onto the others.
        ``notify_calls``: syscalls handed to the listener whenever no guard and no
        stricter rule answers them first (whatever the policy would answer: the
        listener decides, e.g. the orchestrator counting an isolate's processes).
        ``notify_errnos``: every errno answer becomes NOTIFY too, for a listener that
        answers it with the same errno and reports it (all but clone3's ENOSYS, which
        only tells libc to use clone).
        """
        pid = os.getpid() if pid is None else pid
        key = (pid if self._uses_pid else None, notify_kills, all_threads, notify_calls,
               notify_errnos)  # fmt: skip
        cache = self._compiled
        if key not in cache:
            notify = _Notify(notify_kills, notify_errnos, notify_calls)
            cache[key] = self._compile(pid, all_threads, notify)
        return cache[key]

    def _compile(self, pid: int, all_threads: bool, notify: _Notify) -> CompiledPolicy:
        entries, default = self.entries(), self.default
        guard = self.guards(all_threads=all_threads)
        if notify.kills or notify.errnos:
            entries = tuple(dataclasses.replace(e, action=notify.of(e.action)) for e in entries)
            guard = tuple(
                g if _compat_guard(g) else dataclasses.replace(g, action=notify.of(g.action))
                for g in guard
            )
            default = notify.of(default)
        notify_calls = notify.calls
        # An unconditional NOTIFY entry outranks every allowing (and logging) entry of
        # its syscall, and yields to the stricter ones and to the guards.
        notified = tuple(Entry(s, number(s), Action.NOTIFY, ()) for s in sorted(notify_calls))
        entries = notified + tuple(entries)
        landlock = self.landlock if self.landlock is not None else Landlock()
        # Without a listener of its own the same filter answers everything itself; a
        # count of processes has no such answer (it needs its listener): no fallback.
        plain = (notify.kills or notify.errnos) and not notify.calls
        fallback = self.compile(pid, all_threads=all_threads).bpf if plain else None
        slots: list[int] = []
        return CompiledPolicy(
            bpf=compile_filter(entries, guard, default, pid, pid_slots=slots),
            landlock=landlock.plan(self.compat),
            preload=self._preload(),
            self_pid=pid if self._uses_pid else None,
            fallback_bpf=fallback,
            pid_slots=tuple(slots),
        )

    def _preload(self) -> tuple[str, ...]:
        # Socket addresses go through the idna codec, imported on first use.
        return ("encodings.idna",) if self.allows("socket") or self.allows("connect") else ()

    def apply(self, *, all_threads: bool = False) -> Status:
        """Confine the calling thread (or, with ``all_threads``, every thread: TSYNC).

        Irreversible. Landlock is loaded first, then seccomp. Threads started later by
        a confined thread inherit its filters. Returns what was actually enforced.
        """
        return self.compile(all_threads=all_threads).apply(all_threads=all_threads)

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a new thread confined by this policy.

        Returns its value or re-raises its exception here. The calling thread stays
        unconfined. The policy is compiled here, before the thread starts.

        This confines a *thread*, not an address space: the thread shares memory with
        the rest of the process, and an object it returns or leaves behind runs its
        code (``__del__``, properties, ``__eq__``) later, unconfined, in whatever thread
        touches it. It keeps trusted code from doing what it should not; it is no
        boundary for untrusted code. Run untrusted code in its own process:
        ``isolates.orchestrator.isolate``.
        """
        compiled = self.compile()
        outcome: list[Any] = []

        def confined() -> None:
            try:
                compiled.apply()
                outcome.append((True, fn(*args, **kwargs)))
            except BaseException as exc:  # re-raised in the caller's thread
                outcome.append((False, exc))

        thread = threading.Thread(target=confined, name=f"isolates:{_name(fn)}")
        thread.start()
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return cast(T, value)

    def __repr__(self) -> str:
        names = ", ".join(rs.name for rs in self.rulesets)
        return f"Policy({names}, default={self.default!r})"


@dataclasses.dataclass(frozen=True)
class _Notify:
    """Which answers of a filter go to its listener instead (see ``Policy.compile``)."""

    kills: bool
    errnos: bool
    calls: frozenset[str]

    def of(self, action: Action) -> Action:
        killing = action.kind in ("kill_process", "kill_thread")
        if (self.kills and killing) or (self.errnos and action.kind == "errno"):
            return Action.NOTIFY
        return action


def _compat_guard(guard: Guard) -> bool:
    """clone3's ENOSYS: no denial, only libc's cue to use clone (whose flags we read)."""
    return guard.syscall == "clone3" and guard.action == Action.ERRNO(errno.ENOSYS)


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", type(fn).__name__)


def _as_ruleset(item: object) -> RuleSet:
    """A Policy argument as a RuleSet: a Landlock stands as the RuleSet that carries it."""
    return LandlockRules(item) if isinstance(item, Landlock) else as_ruleset(item)


def _descriptor_forms(rs: RuleSet) -> tuple[Rule, ...]:
    """A RuleSet's rules; a builtin's without path-based calls Landlock cannot check
    (see Policy): what a policy whose Landlock confines the filesystem merges."""
    rules = rs.rules()
    if not rs.BUILTIN:
        return rules
    return tuple(r for r in map(descriptor_form, rules) if r is not None)


def _own_rules(
    rulesets: tuple[RuleSet, ...], default: Action, rules_of: RulesOf | None
) -> tuple[Rule, ...]:
    """The rules the policy's own RuleSets write (not implied, not the runtime's), with
    their actions resolved: what may name an exception to a guard."""
    return tuple(
        Rule(rule.syscall, *rule.conditions, action=resolve(rule.action, default))
        for rs in rulesets
        if kind_of(rs) is RuleKind.NORMAL
        for rule in (rs.rules() if rules_of is None else rules_of(rs))
        if not rule.implied
    )


def _merge_landlock(rulesets: tuple[RuleSet, ...]) -> Landlock | None:
    parts = [ll for rs in rulesets if (ll := rs.landlock()) is not None]
    return Landlock.merge(parts) if parts else None


def _from_toml(text: str) -> Policy:
    """Unpickles a Policy (``Policy.__reduce__``)."""
    return Policy.from_toml(text, source="<pickled policy>")

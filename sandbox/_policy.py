"""Policy: an immutable union of RuleSets plus the options that say how to enforce them."""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast, overload

from ._builtins_proc import PythonRuntime
from ._compiled import CompiledPolicy, Status
from ._errors import PolicyError, SandboxError
from ._landlock import Compat, Landlock
from ._merge import Entry, merge
from ._rules import SELF_PID, Action, Arg, Rule
from ._ruleset import RuleSet, as_ruleset
from ._syscalls import exists, number

T = TypeVar("T")

_EPERM: Final = Action.ERRNO(errno.EPERM)

#: Denied in every policy unless a RuleSet names them explicitly, whatever the default.
ALWAYS_DENIED: Final = (
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "keyctl", "add_key", "request_key",
    "mount", "umount2", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
    "open_tree", "open_tree_attr", "mount_setattr", "pivot_root",
    "setns", "unshare",
)  # fmt: skip

#: The namespace flags clone(2) accepts (CLONE_NEWTIME is clone3/unshare only).
CLONE_NAMESPACES: Final = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}


class Policy:
    """What a thread or process may do: the union of its RuleSets, deny by default.

    ``Policy(SystemIO.nothing().allow_stdout(), Networking.nothing().allow_tcp_clients())``
    allows exactly those calls (and what CPython itself needs, ``PythonRuntime``); every
    other syscall gets ``default`` (``Action.ERRNO(EPERM)`` unless you say otherwise).

    Always denied unless a RuleSet names them: io_uring, ptrace, process_vm_*, bpf,
    perf_event_open, userfaultfd, kexec, module loading, keyrings, mount and the new mount
    API, pivot_root, setns, unshare, and ``clone`` with a namespace flag. ``clone3``
    answers ENOSYS so libc falls back to ``clone``, whose flags a filter can check.

    A Policy is immutable; it is checked when built (``PolicyError`` names the rule) and
    compiled once, on first use. Loading is one-way: a thread or process keeps every
    filter it ever loaded, so applying a second policy *stacks* and the result is the
    intersection of the two (each syscall gets the strictest answer of all filters).
    """

    __slots__ = ("_compat", "_compiled", "_default", "_entries", "_landlock", "_named",
                 "_rulesets")  # fmt: skip
    _rulesets: tuple[RuleSet, ...]
    _default: Action
    _compat: Compat
    _entries: tuple[Entry, ...]
    _named: frozenset[str]
    _landlock: Landlock | None
    _compiled: dict[tuple[int | None, bool], CompiledPolicy]

    def __init__(
        self,
        *rulesets: RuleSet | Rule | str,
        default: Action = _EPERM,
        compat: Compat = Compat.BEST_EFFORT,
    ) -> None:
        if not isinstance(default, Action) or default.kind == "default":
            raise PolicyError(f"Policy(default={default!r}): the default must be an Action")
        if not isinstance(compat, Compat):
            raise PolicyError(f"Policy(compat={compat!r}): use Compat.BEST_EFFORT or Compat.HARD")
        sets = (PythonRuntime(), *(as_ruleset(r) for r in rulesets))
        set_ = object.__setattr__
        set_(self, "_rulesets", sets)
        set_(self, "_default", default)
        set_(self, "_compat", compat)
        entries, named = merge(sets, default)
        set_(self, "_entries", entries + _guards(named, default))
        set_(self, "_named", named)
        set_(self, "_landlock", _merge_landlock(sets))
        set_(self, "_compiled", {})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Policy is immutable; build a new one with Policy.extend()")

    @property
    def rulesets(self) -> tuple[RuleSet, ...]:
        return self._rulesets

    @property
    def default(self) -> Action:
        return self._default

    @property
    def compat(self) -> Compat:
        return self._compat

    @property
    def landlock(self) -> Landlock | None:
        """The merged Landlock rights of every RuleSet, if any grants some."""
        return self._landlock

    def extend(self, *rulesets: RuleSet | Rule | str, default: Action | None = None) -> Policy:
        """A new Policy with more RuleSets (and optionally another default)."""
        mine = self.rulesets[1:]  # PythonRuntime is added again by the constructor
        return Policy(*mine, *rulesets, default=default or self.default, compat=self.compat)

    def allows(self, syscall: str) -> bool:
        """True when some rule allows ``syscall`` (outright or under a condition)."""
        number(syscall)
        return any(e.syscall == syscall and e.action == Action.ALLOW for e in self.entries())

    def decide(self, syscall: str, *args: int) -> Action:
        """What this policy's filter answers for ``syscall(*args)``, computed by running
        the compiled BPF program here (nothing is loaded): ``Action.ALLOW``, an
        ``Action.ERRNO(n)``, a kill... Arguments not given are 0."""
        from ._bpf import action_of, evaluate

        return action_of(evaluate(self.compile().bpf, number(syscall), args))

    def entries(self) -> tuple[Entry, ...]:
        """The merged rules, one line per (syscall, action, conditions)."""
        return self._entries

    def compile(self, pid: int | None = None, *, notify_kills: bool = False) -> CompiledPolicy:
        """Compile to plain data (BPF bytes and a Landlock plan); cached per policy.

        ``pid`` is the process that will load it (default: this one); it only matters
        for rules on ``SELF_PID`` such as ``Signals.allow_kill_self()``. With
        ``notify_kills`` every killing action becomes ``Action.NOTIFY``, so a supervisor
        holding the listener learns which syscall it was before it kills the process.
        """
        key = (pid if pid is not None and self._uses_pid() else None, notify_kills)
        cache = self._compiled
        if key not in cache:
            cache[key] = self._compile(os.getpid() if pid is None else pid, notify_kills)
        return cache[key]

    def _uses_pid(self) -> bool:
        return any(c.value is SELF_PID for e in self.entries() for c in e.conditions)

    def _compile(self, pid: int, notify_kills: bool) -> CompiledPolicy:
        from ._compile import to_bpf

        entries, default = self.entries(), self.default
        if notify_kills:
            entries = tuple(_notify_if_kill(e) for e in entries)
            default = _notify_if_kill(default)
        try:
            bpf = to_bpf(entries, default.seccomp_value, pid)
        except OSError as exc:
            raise SandboxError(
                exc.errno or errno.EPERM,
                f"compiling {self!r} failed ({exc}); libseccomp needs pipe2 and seccomp(2) "
                "queries, which a policy already loaded here may deny: compile every policy "
                "(policy.compile()) before applying the first one",
            ) from None
        plan = self.landlock.plan(self.compat) if self.landlock is not None else None
        return CompiledPolicy(bpf=bpf, landlock=plan, preload=self._preload())

    def _preload(self) -> tuple[str, ...]:
        # Socket addresses go through the idna codec, imported on first use.
        return ("encodings.idna",) if self.allows("socket") or self.allows("connect") else ()

    def apply(self, *, all_threads: bool = False) -> Status:
        """Confine the calling thread (or, with ``all_threads``, every thread: TSYNC).

        Irreversible. Landlock is loaded first, then seccomp. Threads started later by
        a confined thread inherit its filters. Returns what was actually enforced.
        """
        return self.compile().apply(all_threads=all_threads)

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a new thread confined by this policy.

        Returns its value or re-raises its exception here. The calling thread stays
        unconfined. The policy is compiled here, before the thread starts.
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


@overload
def _notify_if_kill(item: Entry) -> Entry: ...
@overload
def _notify_if_kill(item: Action) -> Action: ...
def _notify_if_kill(item: Entry | Action) -> Entry | Action:
    if isinstance(item, Entry):
        return dataclasses.replace(item, action=_notify_if_kill(item.action))
    return Action.NOTIFY if item.kind in ("kill_process", "kill_thread") else item


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", type(fn).__name__)


def _guards(named: frozenset[str], default: Action) -> tuple[Entry, ...]:
    """Rules every policy carries: clone3 -> ENOSYS, and under a permissive default the
    explicit denials (a denying default already covers them)."""
    out: list[Entry] = []
    enosys = Action.ERRNO(errno.ENOSYS)
    if "clone3" not in named and default != enosys:
        out.append(Entry("clone3", number("clone3"), enosys, ()))
    if default.denies:
        return tuple(out)
    deny = Action.ERRNO(errno.EPERM)
    out += [Entry(s, number(s), deny, ()) for s in ALWAYS_DENIED if s not in named and exists(s)]
    if "clone" not in named:
        out += [
            Entry("clone", number("clone"), deny, (Arg(0) & flag == flag,))
            for flag in CLONE_NAMESPACES.values()
        ]
    return tuple(out)


def _merge_landlock(rulesets: tuple[RuleSet, ...]) -> Landlock | None:
    parts = [ll for rs in rulesets if (ll := rs.landlock()) is not None]
    return Landlock.merge(parts) if parts else None

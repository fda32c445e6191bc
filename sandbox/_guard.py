"""The guard: what every policy denies unless a RuleSet names it, compiled as a BPF prefix.

Every Policy refuses some calls whatever its default and its RuleSets say: the syscalls
of ``ALWAYS_DENIED``, ``clone`` with a namespace flag, ``clone3`` (ENOSYS, so libc falls
back to ``clone``, whose flags a filter can read), and the argument values below that
reach another process or the user's terminal through a call that is otherwise harmless:

- ``ioctl`` TIOCSTI and TIOCLINUX (type into, or paste onto, a terminal the process
  inherited: CVE-2017-5226 and its kin), FIOSETOWN and SIOCSPGRP (make a descriptor
  signal another process), FIOASYNC (turn on that signalling), TIOCSIG (a pty master
  signals the foreground process group on the other side);
- ``fcntl`` F_SETOWN, F_SETOWN_EX, F_SETSIG (the same through fcntl) and F_SETFL with
  O_ASYNC;
- for a filter that confines one thread (``Policy.apply()``, ``Policy.run``):
  ``seccomp`` with SECCOMP_FILTER_FLAG_TSYNC and ``landlock_restrict_self`` with its TSYNC
  flag, which would load a filter onto the other, unconfined threads of the process;
  for every filter, ``seccomp`` with SECCOMP_FILTER_FLAG_SPEC_ALLOW (it turns off the
  speculative-store-bypass mitigation).

The compiler (_compiler.py) puts a syscall's guards before its rules, so their answers
win over any rule and any default. Argument
values are compared on their low 32 bits, as the kernel reads ``ioctl``'s and ``fcntl``'s
command (``unsigned int``): comparing 64 bits is how snap's and flatpak's TIOCSTI filters
were bypassed (CVE-2019-10063).

A guard is lifted only where a RuleSet names the exception, and then that RuleSet's rule
decides: a rule of its own on that syscall (for ``ALWAYS_DENIED``), a rule that compares
the argument with that very value (``Rule("ioctl", Arg(1) == TIOCSTI)``), or for
``clone``'s namespace flags a rule comparing the flags with a value holding namespace
flags (``Arg(0) & CLONE_NEWUSER == CLONE_NEWUSER``), or an allowing ``clone`` rule that
does not look at the flags at all (``allow("clone")``). Builtin RuleSets and profiles
never lift one by accident: their rules compare these arguments with other values, or
not at all.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from . import _uapi as uapi
from ._landlock_abi import TSYNC as _LANDLOCK_TSYNC
from ._rules import Action, Rule
from ._syscalls import exists
from ._uapi import CLONE_NAMESPACES as CLONE_NAMESPACES

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

_NS_FLAGS: Final = uapi.NAMESPACE_FLAGS
_U32: Final = 0xFFFFFFFF

#: (syscall, argument, value): calls refused when the argument's low 32 bits equal value.
GUARDED_VALUES: Final = (
    ("ioctl", 1, uapi.TIOCSTI, "TIOCSTI"),
    ("ioctl", 1, uapi.TIOCLINUX, "TIOCLINUX"),
    ("ioctl", 1, uapi.FIOSETOWN, "FIOSETOWN"),
    ("ioctl", 1, uapi.SIOCSPGRP, "SIOCSPGRP"),
    ("ioctl", 1, uapi.FIOASYNC, "FIOASYNC"),
    ("ioctl", 1, uapi.TIOCSIG, "TIOCSIG"),  # a pty master signals the other side's group
    ("fcntl", 1, uapi.F_SETOWN, "F_SETOWN"),
    ("fcntl", 1, uapi.F_SETSIG, "F_SETSIG"),
    ("fcntl", 1, uapi.F_SETOWN_EX, "F_SETOWN_EX"),
)
_F_SETFL: Final = uapi.F_SETFL
_O_ASYNC: Final = uapi.O_ASYNC
_SECCOMP_TSYNC: Final = uapi.SECCOMP_FILTER_FLAG_TSYNC
_SECCOMP_SPEC_ALLOW: Final = uapi.SECCOMP_FILTER_FLAG_SPEC_ALLOW


@dataclass(frozen=True)
class Check:
    """The low 32 bits of argument ``arg``: ``& mask == value``, or with ``value`` None,
    ``& mask != 0`` (some bit of the mask is set)."""

    arg: int
    mask: int
    value: int | None


@dataclass(frozen=True)
class Guard:
    """Refuse ``syscall`` with ``action`` when every check holds (no check: always)."""

    syscall: str
    checks: tuple[Check, ...]
    action: Action
    what: str = ""  # in words, for people: "TIOCSTI", "a namespace flag"

    def __str__(self) -> str:
        words = [
            f"Arg({c.arg}) & {c.mask:#x} " + ("!= 0" if c.value is None else f"== {c.value:#x}")
            for c in self.checks
        ]
        what = f"  ({self.what})" if self.what else ""
        return f"{self.syscall}({', '.join(words) or 'any'}) -> {self.action!r}{what}"


def guards(named: Sequence[Rule], default: Action, *, one_thread: bool) -> tuple[Guard, ...]:
    """The guards of a policy whose own (normal) rules are ``named``.

    ``default`` is the policy's default action: a guard answers with it when it denies
    (so a killing policy still reports which call it was), EPERM when it does not.
    ``one_thread``: the filter confines a thread, not a whole process.
    """
    deny = default if default.denies else Action.ERRNO(errno.EPERM)
    by_syscall: dict[str, list[Rule]] = {}
    for rule in named:
        by_syscall.setdefault(rule.syscall, []).append(rule)
    out = [Guard(s, (), deny) for s in ALWAYS_DENIED if s not in by_syscall and exists(s)]
    if "clone3" not in by_syscall:
        out.append(Guard("clone3", (), Action.ERRNO(errno.ENOSYS), "so libc uses clone"))
    flags = _NS_FLAGS & ~_lifted_clone_flags(by_syscall.get("clone", ()))
    if flags:
        out.append(Guard("clone", (Check(0, flags, None),), deny, "a namespace flag"))
    for syscall, arg, value, what in GUARDED_VALUES:
        if not _names_value(by_syscall.get(syscall, ()), arg, value):
            out.append(Guard(syscall, (Check(arg, _U32, value),), deny, what))
    if not _names_bit(by_syscall.get("fcntl", ()), 2, _O_ASYNC):
        checks = (Check(1, _U32, _F_SETFL), Check(2, _O_ASYNC, None))
        out.append(Guard("fcntl", checks, deny, "F_SETFL with O_ASYNC"))
    out += _stacking_guards(deny, one_thread)
    return tuple(out)


def _stacking_guards(deny: Action, one_thread: bool) -> list[Guard]:
    seccomp_flags = _SECCOMP_SPEC_ALLOW | (_SECCOMP_TSYNC if one_thread else 0)
    what = "SPEC_ALLOW or TSYNC" if one_thread else "SPEC_ALLOW"
    out = [Guard("seccomp", (Check(1, seccomp_flags, None),), deny, what)]
    if one_thread:
        tsync = (Check(1, _LANDLOCK_TSYNC, None),)
        out.append(Guard("landlock_restrict_self", tsync, deny, "TSYNC"))
    return out


def _lifted_clone_flags(rules: Iterable[Rule]) -> int:
    """The namespace flags clone rules name: all of them for an allowing rule that does
    not look at the flags, else those that equality comparisons of the flags ask for."""
    lifted = 0
    for rule in rules:
        on_flags = [c for c in rule.conditions if c.arg == 0]
        if not on_flags and not rule.action.denies:
            return _NS_FLAGS
        lifted |= sum(_int(c.value) & _NS_FLAGS for c in on_flags if c.op in ("==", "&=="))
    return lifted


def _names_value(rules: Iterable[Rule], arg: int, value: int) -> bool:
    return any(
        c.arg == arg and c.op in ("==", "&==") and _int(c.value) & _U32 == value
        for r in rules
        for c in r.conditions
    )


def _names_bit(rules: Iterable[Rule], arg: int, bit: int) -> bool:
    return any(
        c.arg == arg and c.op in ("==", "&==") and _int(c.value) & bit
        for r in rules
        for c in r.conditions
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0  # SELF_PID names no flag or command

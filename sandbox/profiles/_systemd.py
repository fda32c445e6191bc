"""systemd's ``SystemCallFilter=`` grammar, compiled to an isolates Policy.

``systemd("@system-service")`` allows what a systemd unit with
``SystemCallFilter=@system-service`` may call; ``systemd("@system-service",
"~@privileged @resources")`` is two ``SystemCallFilter=`` lines. The groups and their
help texts are systemd's own (src/shared/seccomp-util.c, copied in systemd_groups.json).

What is implemented, as systemd.exec(5) and systemd's parser define it:

- Each argument is one assignment. The first non-empty one decides the mode: a leading
  ``~`` makes a deny-list (everything else is allowed), otherwise an allow-list (everything
  else is denied), which starts with ``@default``. Later assignments add to or remove from
  the list: in an allow-list, plain names add and ``~`` names remove; in a deny-list,
  ``~`` names add and plain names remove. An empty assignment resets everything.
- ``name:errno`` (an errno name such as ``EPERM``, a number 1-4095, or ``kill``) gives a
  denied syscall its own answer; only ``~`` entries take one. In an allow-list, ``~name:E``
  keeps the call in the list with that errno rather than removing it.
- ``default_errno`` is ``SystemCallErrorNumber=``: what a denied call gets when it has no
  errno of its own. ``None`` (systemd's default) kills the process with SIGSYS.
- Names that are syscalls on some architecture but not this one are skipped, as systemd
  skips them; groups list the names of every architecture.

Where isolates deliberately differs:

- The syscalls every isolates policy denies (``ALWAYS_DENIED``: ptrace, io_uring,
  keyctl, setns, unshare, mount, ...), ``clone3`` (ENOSYS so libc falls back to clone)
  and the namespace flags of ``clone`` stay denied when they only come in through a
  group: ``@system-service`` includes ``@process`` (unshare, setns) and ``@keyring``
  (keyctl), which a service rarely means to grant. Such group-only syscalls answer EPERM
  (or ``default_errno``), never kill; ``clone`` is allowed without namespace flags. Name a
  syscall on its own (``"@system-service unshare"``) to allow it as systemd would.
- A name that is a syscall nowhere (a typo) raises PolicyError with a suggestion, where
  systemd logs and ignores it; so do unknown groups and malformed words.
- ``:0`` (fail with "success" without running) is not expressible: Action.ERRNO needs 1+.
- Whatever the list, CPython's own needs (PythonRuntime) stay allowed in an allow-list;
  in a deny-list, what you deny is denied, even what CPython needs.
"""

from __future__ import annotations

import errno as _errno
import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .._errors import PolicyError
from .._policy import ALWAYS_DENIED, CLONE_NAMESPACES, Policy
from .._rules import Action, Arg, Rule
from .._ruleset import BuiltinRuleSet
from .._suggest import did_you_mean
from .._syscalls import exists, table
from .._uapi import NAMESPACE_FLAGS

#: Allowed only when named on their own, never through a group (see the module docstring).
GUARDED: Final = frozenset((*ALWAYS_DENIED, "clone", "clone3"))
_KILL: Final = -1  # an entry's errno meaning "kill" (systemd: SECCOMP_ERROR_NUMBER_KILL)
_WORD: Final = re.compile(r"(?P<name>@?[A-Za-z0-9_-]+)(?::(?P<errno>[A-Za-z0-9]+))?")

# Read now, while this process may still open files: a policy built from it may forbid
# that (a plain file beside this module; importlib.resources would import zipfile, which
# maps binascii's C extension, on first use).
with open(os.path.join(os.path.dirname(__file__), "systemd_groups.json"), encoding="utf-8") as _f:
    _RAW: Final[dict[str, Any]] = json.load(_f)


@dataclass(frozen=True)
class Group:
    """One systemd syscall group: its help text and its syscalls, expanded."""

    name: str
    help: str
    includes: tuple[str, ...]
    syscalls: tuple[str, ...]  # every architecture's names; see .native()

    def native(self) -> tuple[str, ...]:
        """The syscalls of this group that exist on this architecture."""
        return tuple(s for s in self.syscalls if exists(s))


@functools.cache
def groups() -> Mapping[str, Group]:
    """Every group systemd defines, by name (``"@system-service"``), expanded."""
    raw = {name: entry for name, entry in _RAW.items() if name != "_source"}

    def expand(name: str) -> tuple[str, ...]:
        entry = raw[name]
        names = set(entry["syscalls"]).union(*(expand(g) for g in entry["includes"]))
        return tuple(sorted(names))

    return {
        name: Group(name, entry["help"], tuple(entry["includes"]), expand(name))
        for name, entry in raw.items()
    }


def systemd(*assignments: str, default_errno: int | str | None = None) -> Policy:
    """A Policy from ``SystemCallFilter=`` values, one per argument.

    ``systemd("@system-service")``, ``systemd("~@mount @swap:EPERM")``,
    ``systemd("@system-service", "~@privileged @resources", default_errno="EPERM")``.
    ``default_errno`` is ``SystemCallErrorNumber=`` (None: kill the process).
    """
    negative = _negative_action(default_errno)
    state = _Filter()
    for text in assignments:
        if not isinstance(text, str):
            raise PolicyError(f"systemd({text!r}): each assignment is a string")
        state.assign(text)
    if state.allow_list is None:
        raise PolicyError('systemd(): no filter given; e.g. systemd("@system-service")')
    label = "SystemCallFilter=" + " | ".join(a.strip() for a in assignments if a.strip())
    rules = state.rules(negative)
    if state.allow_list:
        return Policy(BuiltinRuleSet(*rules, name=label), default=negative)
    return Policy(BuiltinRuleSet(*rules, name=label), default=Action.ALLOW)


class _Filter:
    """systemd's parse state: the mode and a map of syscall -> errno (None: no errno)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.allow_list: bool | None = None
        self.entries: dict[str, int | None] = {}
        self.named: set[str] = set()  # syscalls listed on their own in an allowing word

    def assign(self, text: str) -> None:
        text = text.strip()
        if not text:
            self.reset()  # an empty assignment resets the list, as in systemd
            return
        invert = text.startswith("~")
        if invert:
            text = text[1:]
        if self.allow_list is None:
            self.allow_list = not invert
            if self.allow_list:
                self._add("@default", None)
        for word in text.split():
            self._word(word, invert)

    def _word(self, word: str, invert: bool) -> None:
        match = _WORD.fullmatch(word)
        if match is None:
            raise PolicyError(f"systemd: {word!r} is not a syscall or @group name{_fix(word)}")
        name, err = match["name"], _parse_errno(match["errno"], word)
        if err is not None and not invert:
            raise PolicyError(
                f"systemd: {word!r}: only denied entries take an errno; write "
                f"'~{word}' (deny with that errno), or drop ':{match['errno']}'"
            )
        adding = invert != self.allow_list or (invert and err is not None)
        if adding:
            self._add(name, err)
        else:
            self._remove(name)
        if not name.startswith("@") and not invert:
            self.named.add(name)

    def _add(self, name: str, err: int | None) -> None:
        for syscall in _expand(name):
            self.entries[syscall] = err

    def _remove(self, name: str) -> None:
        for syscall in _expand(name):
            self.entries.pop(syscall, None)

    def rules(self, negative: Action) -> list[Rule]:
        out: list[Rule] = []
        for syscall, err in self.entries.items():
            if err is not None:
                out.append(Rule(syscall, action=_action(err)))
            elif not self.allow_list:
                out.append(Rule(syscall, action=negative))
            else:
                out += self._allowed(syscall, negative)
        if not self.allow_list:  # re-allowed by name: keep the Policy's guards off them
            out += [Rule(s) for s in sorted(GUARDED & self.named) if s not in self.entries]
        elif "clone3" not in self.entries:  # as every Policy does; named, so never twice
            out.append(Rule("clone3", action=Action.ERRNO(_errno.ENOSYS)))
        return out

    def _allowed(self, syscall: str, negative: Action) -> list[Rule]:
        """The rules for an allowed entry; guarded syscalls stay denied unless named."""
        if syscall not in GUARDED or syscall in self.named:
            return [Rule(syscall)]
        deny = negative if negative.kind == "errno" else _EPERM  # never kill for these
        if syscall == "clone":
            flags = [Rule("clone", Arg(0) & f == f, action=deny) for f in CLONE_NAMESPACES.values()]
            return [Rule("clone", Arg(0) & NAMESPACE_FLAGS == 0), *flags]
        if syscall == "clone3":
            return [Rule("clone3", action=Action.ERRNO(_errno.ENOSYS))]
        return [Rule(syscall, action=deny)]


_EPERM: Final = Action.ERRNO(_errno.EPERM)


def _expand(name: str) -> tuple[str, ...]:
    """The native syscalls a word names: a group's members, or the syscall itself."""
    if name.startswith("@"):
        group = groups().get(name)
        if group is None:
            raise PolicyError(f"systemd: unknown group {name!r}{_suggest(name, groups())}")
        return group.native()
    if exists(name):
        return (name,)
    if name in _known_anywhere():
        return ()  # a syscall of another architecture: skipped, as systemd does
    raise PolicyError(
        f"systemd: {name!r} is not a syscall on any architecture{_suggest(name, _known_anywhere())}"
    )


@functools.cache
def _known_anywhere() -> frozenset[str]:
    return frozenset(groups()["@known"].syscalls).union(table())


def _suggest(name: str, candidates: Mapping[str, object] | frozenset[str]) -> str:
    groups = f"; the groups are {', '.join(sorted(candidates))}" if name.startswith("@") else ""
    return did_you_mean(name, candidates, otherwise=groups)


def _fix(word: str) -> str:
    if "~" in word:
        return "; '~' goes once, at the start of the whole list: '~@mount @swap'"
    if word.count(":") > 1 or word.endswith(":"):
        return "; write name:ERRNO, e.g. '~ptrace:EPERM'"
    return ""


def _parse_errno(text: str | None, word: str) -> int | None:
    """``EPERM``, ``13`` or ``kill`` -> an errno number or _KILL; None when absent."""
    if text is None:
        return None
    if text == "kill":
        return _KILL
    is_name = text.startswith("E") and text.isupper()
    value = int(text) if text.isdigit() else getattr(_errno, text, None) if is_name else None
    if not isinstance(value, int):
        raise PolicyError(f"systemd: {word!r}: {text!r} is not an errno name{_errno_hint(text)}")
    if not 1 <= value <= 4095:
        raise PolicyError(
            f"systemd: {word!r}: errno {value} cannot be expressed; use 1 to 4095 "
            "(systemd's ':0', 'succeed without running', has no isolates Action)"
        )
    return value


def _errno_hint(text: str) -> str:
    names = [n for n in dir(_errno) if n.startswith("E")]
    return did_you_mean(text.upper(), names, otherwise=" (e.g. EPERM)")


def _negative_action(default_errno: int | str | None) -> Action:
    """``SystemCallErrorNumber=``: the answer of a denied call without its own errno."""
    if default_errno is None or default_errno == "kill":
        return Action.KILL_PROCESS
    if isinstance(default_errno, str):
        err = _parse_errno(default_errno, f"default_errno={default_errno!r}")
        return _action(err if err is not None else _KILL)
    if isinstance(default_errno, bool) or not isinstance(default_errno, int):
        raise PolicyError(
            f"systemd(default_errno={default_errno!r}): give an errno number, a name such as "
            "'EPERM', or 'kill'"
        )
    return _action(_parse_errno(str(default_errno), f"default_errno={default_errno}") or _KILL)


def _action(err: int) -> Action:
    return Action.KILL_PROCESS if err == _KILL else Action.ERRNO(err)

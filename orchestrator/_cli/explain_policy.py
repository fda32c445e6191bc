"""What ``isolates explain`` says: a policy as a table, and its answer to one call.

    isolates explain app.toml
    isolates explain --pledge "stdio rpath" --read /srv
    isolates explain app.toml --check 'openat(AT_FDCWD, "/etc/shadow", O_RDONLY)'

The policy is a policy file or run's own options (run_startup's additions aside: they
depend on the command). The table lists the allowed syscalls by systemd group with
their conditions spelled by name, the denied ones with their answers, the guards, the
Landlock grants, ports and scopes. ``--check`` parses a call as a person writes it
(names of flags and constants, strings for paths, ``{AF_INET, 127.0.0.1:443}`` for an
address), runs it through the compiled filter's reference decider, names the rule that
decides, and for a path or a port asks the Landlock plan too. Exit status: 0 when every
call checked is allowed, 1 when one is denied, 2 for a mistake in the options.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from isolates.sandbox import AccessFs, AccessNet, Action, Policy, PolicyError, Rule, Scope
from isolates.sandbox.lowlevel import (
    SIGNATURE_KINDS,
    Cmp,
    Entry,
    Guard,
    deciding,
    named_values,
    spell_argument,
    syscall_number,
)

from .._core.grants import granting
from .command import UsageError

#: Constants a checked call may name, by name.
_CONSTANTS: Final[dict[str, int]] = {
    **{n: int(getattr(socket, n)) for n in dir(socket) if n.startswith("IPPROTO_")},
    **named_values(),  # the names a call is described with (lowlevel.describe_call)
}


# -- the table ----------------------------------------------------------------------------


def table(policy: Policy) -> str:
    """What ``policy`` allows, as people read it."""
    lines = [f"default: {_action(policy.default)}; Landlock compatibility: {policy.compat}"]
    allowed, denied = _by_answer(policy)
    lines.append("allowed syscalls, by group:")
    for group, entries in _grouped(allowed):
        lines.append(f"  {group}:")
        lines += [f"    {line}" for line in entries]
    if denied:
        lines.append("denied with an answer of their own:")
        lines += [f"  {line}" for line in denied]
    lines.append("refused before any rule (the guards):")
    lines += [f"  {g}" for g in policy.guards(all_threads=True)]
    lines += _landlock_lines(policy)
    return "\n".join(lines)


def _by_answer(policy: Policy) -> tuple[dict[str, list[str]], list[str]]:
    allowed: dict[str, list[str]] = {}
    denied: list[str] = []
    for entry in policy.entries():
        words = " and ".join(_condition(entry.syscall, c) for c in entry.conditions)
        if entry.action == Action.ALLOW:
            allowed.setdefault(entry.syscall, []).append(words or "always")
        else:
            when = f" when {words}" if words else ""
            denied.append(f"{entry.syscall}{when} -> {_action(entry.action)}")
    return allowed, denied


def _grouped(allowed: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """Syscalls under the first systemd group that names them (docs/profiles.md)."""
    from isolates.sandbox.profiles import groups as systemd_groups

    groups = systemd_groups()
    order = [name for name in groups if name not in ("@default", "@known", "@system-service")]
    placed: dict[str, list[str]] = {}
    for syscall, conditions in sorted(allowed.items()):
        home = next((g for g in order if syscall in groups[g].native()), "other")
        shown = "always" if "always" in conditions else "; or ".join(conditions)
        placed.setdefault(home, []).append(f"{syscall}: {shown}")
    return sorted(placed.items(), key=lambda item: (item[0] == "other", item[0]))


def _condition(syscall: str, cmp: object) -> str:
    arg, op, value, mask = (getattr(cmp, k) for k in ("arg", "op", "value", "mask"))
    shown = value if not isinstance(value, int) else _spelled(syscall, arg, value)
    if op == "&==":
        return f"arg{arg} & {_spelled(syscall, arg, mask)} == {shown}"
    return f"arg{arg} {op} {shown}"


def _spelled(syscall: str, arg: int, value: int) -> str:
    """A condition's value by name where the argument's kind has names."""
    kinds = SIGNATURE_KINDS.get(syscall, ())
    return (
        spell_argument(kinds[arg], value)
        if arg < len(kinds)
        else (hex(value) if value > 9 else str(value))
    )


_ACTIONS: Final = {
    "allow": "allowed",
    "kill_process": "kills the process",
    "kill_thread": "kills the thread",
    "trap": "SIGSYS",
    "log": "allowed, logged",
    "notify": "to the listener",
}


def _action(action: Action) -> str:
    if action.kind == "errno":
        return f"fails with {errno.errorcode.get(action.errno, action.errno)}"
    return _ACTIONS.get(action.kind, action.kind)


def _landlock_lines(policy: Policy) -> list[str]:
    ll = policy.landlock
    if ll is None:
        return ["landlock: nothing handled (every path and port as the syscalls allow)"]
    plan = ll.plan(policy.compat)
    lines = ["landlock grants (anything else handled is denied):"]
    for path, rights, missing, *_ in plan.paths:
        flags = "|".join(str(f.name) for f in AccessFs if f & rights)
        lines.append(f"  {path}: {flags}" + ("  (if it exists)" if missing else ""))
    for port, bits in plan.ports:
        lines.append(f"  TCP port {port}: " + "|".join(str(f.name) for f in AccessNet if f & bits))
    if plan.scoped:
        lines.append("  scoped: " + "|".join(str(s.name) for s in Scope if s & plan.scoped))
    handled = []
    if plan.handled_fs:
        handled.append("the filesystem")
    if plan.handled_net:
        handled.append("TCP bind and connect")
    lines.append(f"  handled: {', '.join(handled) or 'nothing but the scopes'}")
    return lines


# -- checking a call --------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """A call as written: its syscall, its arguments as numbers, its path strings and
    address by position."""

    text: str
    syscall: str
    args: tuple[int, ...]
    paths: dict[int, str]
    address: tuple[str, int] | None  # (host, port)


_CALL: Final = re.compile(r"^\s*([a-z_0-9]+)\s*\((.*)\)\s*$", re.S)


def parse_call(text: str) -> Call:
    match = _CALL.match(text)
    if match is None:
        raise UsageError(
            f"--check {text!r}: write a call, e.g. 'openat(AT_FDCWD, \"/etc/shadow\", O_RDONLY)'"
        )
    name, inside = match[1], match[2]
    try:
        syscall_number(name)
    except PolicyError as exc:
        raise UsageError(f"--check {text!r}: {exc}") from None
    args, paths, address = [], {}, None
    for i, part in enumerate(_split_args(inside)):
        if part.startswith('"'):
            paths[i] = part[1:-1]
            args.append(0)
        elif part.startswith("{"):
            address = _address(part, text)
            args.append(0)
        else:
            args.append(_number(part, text))
    if len(args) > 6:
        raise UsageError(f"--check {text!r}: a syscall has at most 6 arguments")
    return Call(text, name, tuple(args), paths, address)


def _split_args(inside: str) -> list[str]:
    parts, depth, quoted, current = [], 0, False, ""
    for char in inside:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "{}":
            depth += 1 if char == "{" else -1
        if char == "," and not quoted and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def _number(part: str, text: str) -> int:
    value = 0
    for word in (w.strip() for w in part.split("|")):
        if re.fullmatch(r"-?(0x[0-9a-fA-F]+|0o?[0-7]+|\d+)", word):
            value |= int(word, 0) if not re.fullmatch(r"0[0-7]+", word) else int(word, 8)
        elif word in _CONSTANTS:
            value |= _CONSTANTS[word]
        else:
            raise UsageError(f"--check {text!r}: {word!r} is no number or constant isolates knows")
    return value & ((1 << 64) - 1)


def _address(part: str, text: str) -> tuple[str, int]:
    match = re.fullmatch(r"\{\s*AF_INET6?\s*,\s*\[?([^\]\s]+?)\]?:(\d+)\s*\}", part)
    if match is None:
        raise UsageError(f"--check {text!r}: write an address as {{AF_INET, 127.0.0.1:443}}")
    return match[1], int(match[2])


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    text: str


def decide_call(policy: Policy, call: Call) -> Verdict:
    """The filter's answer to ``call``, the rule that gave it, and Landlock's."""
    action, decider = deciding(policy, syscall_number(call.syscall), call.args)
    lines = [call.text.strip()]
    if action != Action.ALLOW:
        lines.append(f"  seccomp: {_action(action)}, by {_decider(policy, decider)}")
        return Verdict(False, "\n".join([*lines, "  => denied"]))
    lines.append(f"  seccomp: allowed, by {_decider(policy, decider)}")
    landlock_ok, said = _landlock_check(policy, call)
    lines += [f"  landlock: {line}" for line in said]
    return Verdict(
        landlock_ok, "\n".join([*lines, "  => allowed" if landlock_ok else "  => denied"])
    )


def _decider(policy: Policy, decider: Guard | Entry | None) -> str:
    if decider is None:
        return "the default"
    if isinstance(decider, Guard):
        return f"the guard {decider}"
    syscall, conditions = decider.syscall, decider.conditions
    owners = [rs.name for rs in policy.rulesets if _names(rs.rules(), syscall, conditions)]
    words = " and ".join(_condition(syscall, c) for c in conditions) or "always"
    return f"{syscall} ({words}) of {', '.join(owners) or 'the policy'}"


def _names(rules: Iterable[Rule], syscall: str, conditions: tuple[Cmp, ...]) -> bool:
    return any(r.syscall == syscall and r.conditions == conditions for r in rules)


def _landlock_check(policy: Policy, call: Call) -> tuple[bool, list[str]]:
    ll = policy.landlock
    if ll is None:
        return True, ["nothing handled"]
    plan = ll.plan(policy.compat)
    said, ok = [], True
    for path, needed in _needs(call):
        if not plan.handled_fs:
            said.append(f"{path}: the filesystem is not handled")
            continue
        grant = granting(plan.paths, path, needed)
        names = "|".join(str(f.name) for f in AccessFs if f & needed)
        if grant is None:
            ok = False
            said.append(f"{path} needs {names}; no grant gives it (EACCES)")
        else:
            said.append(f"{path} needs {names}: granted beneath {grant}")
    if call.address is not None and call.syscall in ("connect", "bind") and plan.handled_net:
        bit = AccessNet.CONNECT_TCP if call.syscall == "connect" else AccessNet.BIND_TCP
        port = call.address[1]
        granted = any(p == port and b & bit for p, b in plan.ports)
        ok = ok and granted
        said.append(f"TCP port {port}: {'granted' if granted else 'not granted (EACCES)'}")
    return ok, said or ["nothing this call names is Landlock's"]


def _needs(call: Call) -> Iterable[tuple[str, AccessFs]]:
    """The paths of ``call`` and the rights Landlock checks on each."""
    flags = (
        call.args[2] if call.syscall == "openat" else call.args[1] if call.syscall == "open" else 0
    )
    for i, path in call.paths.items():
        full = os.path.abspath(path)
        if call.syscall in ("open", "openat", "openat2", "creat"):
            yield from _open_needs(
                full, flags if call.syscall != "creat" else os.O_CREAT | os.O_WRONLY
            )
        elif call.syscall in ("execve", "execveat"):
            yield full, AccessFs.EXECUTE | AccessFs.READ_FILE
        elif call.syscall in ("mkdir", "mkdirat"):
            yield os.path.dirname(full), AccessFs.MAKE_DIR
        elif call.syscall in ("unlink", "unlinkat"):
            yield os.path.dirname(full), AccessFs.REMOVE_FILE
        elif call.syscall == "rmdir":
            yield os.path.dirname(full), AccessFs.REMOVE_DIR
        elif call.syscall in ("symlink", "symlinkat") and i == max(call.paths):
            yield os.path.dirname(full), AccessFs.MAKE_SYM
        elif call.syscall in ("truncate",):
            yield full, AccessFs.TRUNCATE


def _open_needs(path: str, flags: int) -> Iterable[tuple[str, AccessFs]]:
    if flags & os.O_CREAT and not os.path.exists(path):
        yield os.path.dirname(path), AccessFs.MAKE_REG
    access = flags & os.O_ACCMODE
    rights = AccessFs(0)
    if access in (os.O_RDONLY, os.O_RDWR):
        rights |= AccessFs.READ_DIR if os.path.isdir(path) else AccessFs.READ_FILE
    if access in (os.O_WRONLY, os.O_RDWR):
        rights |= AccessFs.WRITE_FILE
    if flags & os.O_TRUNC:
        rights |= AccessFs.TRUNCATE
    yield path, rights

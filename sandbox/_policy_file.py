"""Policy files: a Policy as TOML, read with ``Policy.load``/``Policy.from_toml`` and
written with ``policy.to_toml()``. docs/sandbox.md ("Policy files") has every key.

Version 1. A file is its top-level keys (``version``, ``default``, ``compat``), an
optional ``[profile]`` (a pledge or systemd profile the rest is added to), then its
RuleSets in order, as ``Policy(*rulesets)`` takes them, each a ``[[ruleset]]`` of one
``kind``:

- ``builtin``: a builtin RuleSet and its ``allow_*`` calls, by name;
- ``rules``: syscalls and their argument conditions, each with an action (and
  ``kind``/``builtin`` to say how they merge: what ``to_toml`` writes of any RuleSet);
- ``landlock``: paths with rights by name, TCP ports, IPC scopes, conveniences.

``to_toml`` writes every RuleSet as ``rules`` (and its Landlock rights as ``landlock``
beside them), so that loading what it wrote compiles to the same filter and the same
Landlock plan: the file says exactly what the policy did, whatever built it.

Errors are PolicyError naming the file, the line and the key: ``app.toml:12:
ruleset[2].rules[0].syscall: unknown syscall 'opne' (did you mean 'open'?)``.
Standard library only (``tomllib`` reads; the writer is ours).
"""

from __future__ import annotations

import errno as _errno
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from ._errors import PolicyError
from ._landlock import Compat, Landlock
from ._landlock_abi import AccessFs, AccessNet, Scope
from ._rules import SELF_PID, Action, Cmp, Rule
from ._ruleset import LandlockRules, RuleKind, RuleSet
from ._suggest import did_you_mean

VERSION: Final = 1
_TOP: Final = ("version", "default", "compat", "profile", "ruleset")
_OPS: Final = ("==", "!=", "<", "<=", ">", ">=", "&==")
_SIMPLE_ACTIONS: Final = {
    "allow": Action.ALLOW, "log": Action.LOG, "trap": Action.TRAP, "notify": Action.NOTIFY,
    "kill_process": Action.KILL_PROCESS, "kill": Action.KILL_PROCESS,
    "kill_thread": Action.KILL_THREAD,
}  # fmt: skip
_DEFAULT_ACTION: Final = Action("default")  # RuleSet.deny()'s "the policy's default"
_LANDLOCK_KEYS: Final = ("kind", "name", "read", "write", "create", "delete", "list",
                         "execute", "tmp", "allow", "connect_tcp", "bind_tcp", "scope",
                         "deny_fs", "deny_tcp", "conveniences", "audit")  # fmt: skip
_CONVENIENCES: Final = ("ssl_certs", "dns", "python_runtime", "devices")
_GROUPS: Final = ("read", "write", "create", "delete", "list", "execute", "tmp")


class _Located(PolicyError):
    """A PolicyError that already names its file, line and key."""


class _Where:
    """A key's path in the file (``ruleset[2].rules[0].syscall``) and, for errors, its
    line, found in the text."""

    def __init__(self, source: str, text: str) -> None:
        self.source, self.text = source, text

    def fail(self, path: tuple[str | int, ...], message: str) -> _Located:
        key = _spelled(path)
        return _Located(f"{self.source}:{_line_of(self.text, path)}: {key}: {message}")


def _spelled(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top)"


def _line_of(text: str, path: tuple[str | int, ...]) -> int:
    """The line where ``path``'s key is written (its table's header at least): the n-th
    ``[[ruleset]]`` for ``ruleset[n]``, then the first line after it starting with the
    next string key."""
    lines = text.splitlines()
    at = 0
    parts = list(path)
    if parts and parts[0] in ("ruleset", "profile"):
        header = re.compile(rf"^\s*\[\[?\s*{parts[0]}\s*\]\]?")
        wanted = parts[1] if parts[0] == "ruleset" and len(parts) > 1 else 0
        seen = -1
        for i, line in enumerate(lines):
            if header.match(line):
                seen += 1
                if seen == wanted:
                    at = i
                    break
        parts = parts[2:] if parts[0] == "ruleset" else parts[1:]
    keys = [p for p in parts if isinstance(p, str)]
    if keys:
        pattern = re.compile(rf"^\s*\"?{re.escape(keys[0])}\"?\s*=")
        for i in range(at, len(lines)):
            if i > at and lines[i].lstrip().startswith("[") and lines[i].lstrip()[1:2] not in "{":
                break
            if pattern.match(lines[i]):
                return i + 1
    return at + 1


# -- reading -------------------------------------------------------------------------------


def from_toml(text: str, source: str = "<policy>") -> Any:
    """The Policy ``text`` describes (``source`` names it in errors)."""
    from ._policy import Policy

    where = _Where(source, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise PolicyError(f"{source}:{line[1] if line else 1}: not TOML: {exc}") from None
    _known_keys(data, _TOP, (), where)
    version = data.get("version", VERSION)
    if version != VERSION:
        raise where.fail(("version",), f"{version!r}: this isolates reads version {VERSION}")
    default = _action(data.get("default", "EPERM"), ("default",), where)
    compat = _compat(data.get("compat", "best_effort"), where)
    rulesets = [
        _ruleset(rs, ("ruleset", i), where)
        for i, rs in enumerate(_list(data, "ruleset", (), where))
    ]
    profile = data.get("profile")
    try:
        if profile is None:
            return Policy(*rulesets, default=default, compat=compat)
        base = _profile(profile, where)
        return Policy(*base.rulesets[1:], *rulesets, default=default, compat=compat)
    except _Located:
        raise
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None


def load(path: str) -> Any:
    """The Policy in the file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc.strerror}") from None
    return from_toml(text, path)


def _known_keys(
    table: Mapping[str, Any], known: tuple[str, ...], path: tuple[str | int, ...], where: _Where
) -> None:
    if not isinstance(table, Mapping):
        raise where.fail(path, "expected a table")
    for key in table:
        if key not in known:
            raise where.fail((*path, key), f"unknown key{did_you_mean(key, known)}")


def _list(
    table: Mapping[str, Any], key: str, path: tuple[str | int, ...], where: _Where
) -> list[Any]:
    value = table.get(key, [])
    if not isinstance(value, list):
        raise where.fail((*path, key), "expected a list")
    return value


def _action(value: Any, path: tuple[str | int, ...], where: _Where) -> Action:
    """ "allow", "log", "trap", "kill" (kill_process), "kill_thread", "notify",
    "default" (a rule's: the policy's default), an errno name ("EPERM") or "errno:13"."""
    if isinstance(value, str):
        if value in _SIMPLE_ACTIONS:
            return _SIMPLE_ACTIONS[value]
        if value == "default":
            return _DEFAULT_ACTION
        name = value.removeprefix("errno:")
        number = int(name) if name.isdigit() else getattr(_errno, name, None)
        if isinstance(number, int) and 0 < number < 4096:
            return Action.ERRNO(number)
    choices = [*_SIMPLE_ACTIONS, "default", "EPERM", "EACCES", "ENOSYS"]
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    raise where.fail(path, f"{value!r} is no action (allow, log, trap, kill, kill_thread, "
                           f"an errno like EPERM or errno:13){hint}")  # fmt: skip


def _compat(value: Any, where: _Where) -> Compat:
    for compat in Compat:
        if value == compat.value or value == compat.name.lower():
            return compat
    raise where.fail(("compat",), f"{value!r}: use best_effort or hard")


def _profile(table: Any, where: _Where) -> Any:
    from .profiles import pledge, systemd

    _known_keys(
        table, ("pledge", "ignore", "unveil", "systemd", "default_errno"), ("profile",), where
    )
    try:
        if "pledge" in table:
            return pledge(
                table["pledge"], None, unveil=table.get("unveil"), ignore=table.get("ignore", ())
            )
        if "systemd" in table:
            spec = table["systemd"]
            specs = [spec] if isinstance(spec, str) else list(spec)
            return systemd(*specs, default_errno=table.get("default_errno"))
    except _Located:
        raise
    except PolicyError as exc:
        raise where.fail(
            ("profile", "pledge" if "pledge" in table else "systemd"), str(exc)
        ) from None
    raise where.fail(("profile",), "name a pledge (promises) or systemd (filter lines)")


def _ruleset(table: Any, path: tuple[str | int, ...], where: _Where) -> RuleSet | Landlock:
    if not isinstance(table, Mapping):
        raise where.fail(path, "expected a table")
    kind = table.get("kind")
    readers: dict[str, Callable[..., RuleSet | Landlock]] = {
        "builtin": _builtin, "rules": _rules, "landlock": _landlock,
    }  # fmt: skip
    reader = readers.get(kind) if isinstance(kind, str) else None
    if reader is None:
        raise where.fail((*path, "kind"), f"{kind!r}: use builtin, rules or landlock"
                                          f"{did_you_mean(str(kind), list(readers))}")  # fmt: skip
    return reader(table, path, where)


def _builtin(table: Mapping[str, Any], path: tuple[str | int, ...], where: _Where) -> RuleSet:
    from . import _builtins_io, _builtins_net, _builtins_proc

    _known_keys(table, ("kind", "class", "allow", "name"), path, where)
    classes = {
        name: getattr(module, name)
        for module in (_builtins_io, _builtins_net, _builtins_proc)
        for name in dir(module)
        if isinstance(getattr(module, name), type) and issubclass(getattr(module, name), RuleSet)
        and getattr(module, name) is not RuleSet and not name.startswith("_")
    }  # fmt: skip
    cls = classes.get(table.get("class", ""))
    if cls is None:
        named = str(table.get("class"))
        hint = did_you_mean(named, classes)
        raise where.fail((*path, "class"), f"{named!r} is no builtin RuleSet{hint}")
    rs: RuleSet = cls.nothing()
    for i, method in enumerate(_list(table, "allow", path, where)):
        call = (
            getattr(rs, method, None)
            if isinstance(method, str) and method.startswith("allow_")
            else None
        )
        if call is None:
            known = [m for m in dir(cls) if m.startswith("allow_")]
            raise where.fail(
                (*path, "allow", i),
                f"{cls.__name__} has no {method!r}{did_you_mean(str(method), known)}",
            )
        try:
            rs = call()
        except TypeError:
            raise where.fail(
                (*path, "allow", i), f"{cls.__name__}.{method} takes arguments; write its rules"
            ) from None
    return rs.named(table["name"]) if "name" in table else rs


def _rules(table: Mapping[str, Any], path: tuple[str | int, ...], where: _Where) -> RuleSet:
    _known_keys(table, ("kind", "name", "rules", "merge", "builtin", "landlock"), path, where)
    merge = table.get("merge", RuleKind.NORMAL.value)
    if merge not in {k.value for k in RuleKind}:
        raise where.fail((*path, "merge"), f"{merge!r}: use normal, baseline, implied or support")
    rules = [
        _rule(r, (*path, "rules", i), where)
        for i, r in enumerate(_list(table, "rules", path, where))
    ]
    carried = (
        _landlock(table["landlock"], (*path, "landlock"), where) if "landlock" in table else None
    )
    cls = _loaded_class(merge, bool(table.get("builtin", False)), carried is not None)
    rs = cls(*rules, name=table.get("name"))
    if carried is not None:
        rs._carried = carried  # type: ignore[attr-defined]
    return rs


def _rule(value: Any, path: tuple[str | int, ...], where: _Where) -> Rule:
    if isinstance(value, str):
        value = {"syscall": value}
    _known_keys(value, ("syscall", "args", "action", "implied"), path, where)
    conditions = tuple(
        _condition(c, (*path, "args", i), where) for i, c in enumerate(value.get("args", []))
    )
    action = _action(value.get("action", "allow"), (*path, "action"), where)
    try:
        from ._syscalls import number

        number(str(value.get("syscall")))
        return Rule(
            value["syscall"], *conditions, action=action, implied=bool(value.get("implied", False))
        )
    except _Located:
        raise
    except (PolicyError, KeyError) as exc:
        raise where.fail((*path, "syscall"), str(exc)) from None


def _condition(value: Any, path: tuple[str | int, ...], where: _Where) -> Cmp:
    _known_keys(value, ("arg", "op", "value", "mask"), path, where)
    arg, op = value.get("arg"), value.get("op", "==")
    if not isinstance(arg, int) or not 0 <= arg <= 5:
        raise where.fail((*path, "arg"), f"{arg!r}: an argument index, 0 to 5")
    if op not in _OPS:
        raise where.fail((*path, "op"), f"{op!r}: one of {', '.join(_OPS)}")
    raw = value.get("value")
    target = SELF_PID if raw == "self_pid" else raw
    if not isinstance(target, int) and target is not SELF_PID:
        raise where.fail((*path, "value"), f'{raw!r}: an int, or "self_pid"')
    mask = value.get("mask", (1 << 64) - 1)
    if (op == "&==") != ("mask" in value):
        raise where.fail((*path, "op"), 'a mask goes with the op "&==", and only with it')
    if isinstance(target, int):
        target &= (1 << 64) - 1  # a negative value compares as the kernel sees it
    return Cmp(arg, op, target, mask)


def _landlock(table: Any, path: tuple[str | int, ...], where: _Where) -> Landlock:
    _known_keys(table, _LANDLOCK_KEYS, path, where)
    ll = Landlock(name=table.get("name"))
    try:
        for group in _GROUPS:
            for p in _list(table, group, path, where):
                ll = getattr(ll, group)(p, missing_ok=True)
        for i, grant in enumerate(_list(table, "allow", path, where)):
            ll = _grant(ll, grant, (*path, "allow", i), where)
        for key in ("connect_tcp", "bind_tcp"):
            for port in _list(table, key, path, where):
                ll = getattr(ll, key)(port)
        if table.get("scope"):
            ll = ll.scope(_flags(Scope, table["scope"], (*path, "scope"), where))
        if table.get("deny_fs"):
            ll = ll.deny_fs()
        if table.get("deny_tcp"):
            ll = ll.deny_tcp()
        for name in _list(table, "conveniences", path, where):
            if name not in _CONVENIENCES:
                raise where.fail(
                    (*path, "conveniences"), f"{name!r}{did_you_mean(str(name), _CONVENIENCES)}"
                )
            ll = getattr(ll, name)()
        if "audit" in table:
            ll = ll.audit(**table["audit"])
    except _Located:
        raise
    except PolicyError as exc:
        raise where.fail(path, str(exc)) from None
    return ll


def _grant(ll: Landlock, grant: Any, path: tuple[str | int, ...], where: _Where) -> Landlock:
    _known_keys(grant, ("path", "rights", "missing_ok"), path, where)
    rights = _flags(AccessFs, grant.get("rights", []), (*path, "rights"), where)
    return ll.allow(grant.get("path", ""), rights, missing_ok=bool(grant.get("missing_ok", False)))


def _flags(kind: Any, names: Any, path: tuple[str | int, ...], where: _Where) -> Any:
    out = kind(0)
    for name in names if isinstance(names, list) else [names]:
        member = kind.__members__.get(str(name).upper())
        if member is None:
            known = [m.lower() for m in kind.__members__]
            raise where.fail(
                path,
                f"{name!r} is no {kind.__name__} right{did_you_mean(str(name).lower(), known)}",
            )
        out |= member
    return out


_LOADED: dict[tuple[str, bool, bool], type[RuleSet]] = {}


def _loaded_class(merge: str, builtin: bool, carries: bool) -> type[RuleSet]:
    """The RuleSet class of a ``rules`` table: how its rules merge, and the rights it
    carries (a profile's path-bound promises)."""
    key = (merge, builtin, carries)
    if key not in _LOADED:
        body: dict[str, Any] = {"kind": merge, "BUILTIN": builtin}
        if carries:
            body["landlock"] = lambda self: self._carried
        _LOADED[key] = type(f"Loaded{merge.title()}RuleSet", (RuleSet,), body)
    return _LOADED[key]


# -- writing -------------------------------------------------------------------------------


def to_toml(policy: Any) -> str:
    """``policy`` as a version 1 file, every RuleSet as its rules: loading it compiles to
    the same filter and the same Landlock plan."""
    out = ["# an isolates policy (docs/sandbox.md, \"Policy files\")", f"version = {VERSION}",
           f"default = {_str(_action_name(policy.default))}",
           f"compat = {_str(policy.compat.value)}"]  # fmt: skip
    for rs in policy.rulesets[1:]:  # PythonRuntime: every Policy adds it again
        out += ["", "[[ruleset]]", *_ruleset_lines(rs)]
    return "\n".join(out) + "\n"


def _ruleset_lines(rs: RuleSet) -> Iterator[str]:
    if isinstance(rs, LandlockRules):
        yield 'kind = "landlock"'
        yield from _landlock_lines(rs.landlock(), "")
        return
    yield 'kind = "rules"'
    yield f"name = {_str(rs.name)}"
    kind = str(getattr(rs, "kind", RuleKind.NORMAL))
    if kind != RuleKind.NORMAL.value:
        yield f"merge = {_str(kind)}"
    if rs.BUILTIN:
        yield "builtin = true"
    yield "rules = ["
    for rule in rs.rules():
        yield f"    {_rule_inline(rule)},"
    yield "]"
    carried = rs.landlock()
    if carried is not None:
        yield ""
        yield "[ruleset.landlock]"
        yield from _landlock_lines(carried, "")


def _rule_inline(rule: Rule) -> str:
    parts = [f"syscall = {_str(rule.syscall)}"]
    if rule.conditions:
        parts.append(f"args = [{', '.join(_cmp_inline(c) for c in rule.conditions)}]")
    if rule.action != Action.ALLOW:
        parts.append(f"action = {_str(_action_name(rule.action))}")
    if rule.implied:
        parts.append("implied = true")
    return "{ " + ", ".join(parts) + " }"


def _cmp_inline(c: Cmp) -> str:
    value = _int(c.value) if isinstance(c.value, int) else '"self_pid"'
    mask = f", mask = {_int(c.mask)}" if c.op == "&==" else ""
    return f"{{ arg = {c.arg}, op = {_str(c.op)}, value = {value}{mask} }}"


def _landlock_lines(ll: Landlock, _: str) -> Iterator[str]:
    data = ll.plan()
    if ll.name != "Landlock":
        yield f"name = {_str(ll.name)}"
    grants = [_grant_inline(p, bits, missing) for p, bits, missing, *_ in data.paths]
    if grants:
        yield "allow = ["
        yield from grants
        yield "]"
    for key, bit in (("connect_tcp", AccessNet.CONNECT_TCP), ("bind_tcp", AccessNet.BIND_TCP)):
        ports = [str(port) for port, bits in data.ports if bits & bit]
        if ports:
            yield f"{key} = [{', '.join(ports)}]"
    scopes = [str(s.name).lower() for s in Scope if s & data.scoped]
    if scopes:
        yield f"scope = [{', '.join(map(_str, scopes))}]"
    if data.handled_fs and not data.paths:
        yield "deny_fs = true"
    if data.handled_net and not data.ports:
        yield "deny_tcp = true"
    if data.restrict_flags:
        yield f"audit = {_audit(data.restrict_flags)}"


def _grant_inline(path: str, bits: int, missing: bool) -> str:
    rights = ", ".join(_str(str(f.name).lower()) for f in AccessFs if f & bits)
    tail = ", missing_ok = true" if missing else ""
    return f"    {{ path = {_str(path)}, rights = [{rights}]{tail} }},"


def _audit(flags: int) -> str:
    from ._landlock_abi import LOG_NEW_EXEC_ON, LOG_SAME_EXEC_OFF, LOG_SUBDOMAINS_OFF

    same, new, sub = (
        not flags & LOG_SAME_EXEC_OFF,
        bool(flags & LOG_NEW_EXEC_ON),
        not flags & LOG_SUBDOMAINS_OFF,
    )
    return f"{{ same_exec = {_bool(same)}, new_exec = {_bool(new)}, subdomains = {_bool(sub)} }}"


def _action_name(action: Action) -> str:
    if action.kind == "errno":
        return _errno.errorcode.get(action.errno, f"errno:{action.errno}")
    return action.kind


def _str(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else _escape(c) for c in escaped)
    return f'"{escaped}"'


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _int(value: int) -> str:
    return hex(value) if value > 9 else str(value)


def _bool(value: bool) -> str:
    return "true" if value else "false"

"""``isolates trace --emit FILE``: a tight policy file from what a trace saw.

The syscalls: the builtin cover (trace_cover.py), as ``builtin`` RuleSets by their
``allow_*`` calls, plus a ``rules`` RuleSet for every traced syscall the cover and the
Landlock rights together still refuse (checked against the policy the file loads as).
The paths: exactly those touched, with rights by kind (_core/resources.py), grouped
into the fewest grants that widen nothing the program did not use (_core/grants.py).

Ports: every TCP port connected to or bound. The default is EPERM. Standard error is
always writable (SystemIO.allow_stderr): a program's errors must be seen under it.
"""

from __future__ import annotations

from isolates.sandbox import Policy, PolicyError, SystemIO

from .._core.grants import Grants, grants_of, rights_names
from .._core.resources import Resources
from .trace_cover import Cover, _split, allowing
from .traced import Trace, answered_enosys


def described(resources: Resources) -> dict[str, object]:
    """What the trace touched, as the report shows it: the grants (path -> rights, what
    it is), the conveniences, the ports, the sockets."""
    grants = grants_of(resources)
    paths = {
        path: {"rights": sorted(rights_names(rights, path)), "what": grants.named.get(path, "")}
        for path, rights in sorted(grants.paths.items())
        if rights
    }
    return {
        "paths": paths,
        "conveniences": sorted(grants.conveniences),
        "connect_tcp": sorted(resources.connect_tcp),
        "bind_tcp": sorted(resources.bind_tcp),
        "sockets": sorted(f"{family}/{kind}" for family, kind in resources.sockets),
        "unix": sorted(resources.unix),
        "looked_at": len(resources.looked_at - set(resources.paths)),
    }


def render_resources(resources: Resources) -> str:
    """``described`` as the text report's last section."""
    said = described(resources)
    lines = ["paths (what --emit grants):"]
    paths = said["paths"]
    assert isinstance(paths, dict)
    for path, grant in paths.items():
        what = f"  ({grant['what']})" if grant["what"] else ""
        lines.append(f"  {path}: {'|'.join(grant['rights'])}{what}")
    if said["conveniences"]:
        lines.append(f"  and: {', '.join(said['conveniences'])}")  # type: ignore[arg-type]
    looked = said["looked_at"]
    if looked:
        lines.append(
            f"  ({looked} more paths only looked at: stat, access, chdir; no grant needed)"
        )
    for key in ("connect_tcp", "bind_tcp", "sockets", "unix"):
        if said[key]:
            lines.append(f"{key.replace('_', ' ')}: {', '.join(map(str, said[key]))}")  # type: ignore[call-overload]
    return "\n".join(lines) + "\n"


# -- the file -------------------------------------------------------------------------------


def emit(result: Trace, builtins: Cover) -> str:
    """The policy file for ``result``: the cover, the grants, the ports, and rules for
    whatever the traced calls still need."""
    grants = grants_of(result.resources)
    lines = [
        f"# isolates trace --emit: {' '.join(result.argv)}",
        "# what the program touched, and nothing else; edit freely (docs/sandbox.md)",
        "version = 1",
        'default = "EPERM"',
    ]
    lines += _builtin_tables(builtins)
    lines += landlock_table(grants, result.resources, "traced")
    text = "\n".join(lines) + "\n"
    missing = _still_refused(result, text)
    if missing:  # supporting rules: they add to a builtin's rule on the same call
        rules = ", ".join(f'{{ syscall = "{name}", implied = true }}' for name in missing)
        text += (
            f'\n[[ruleset]]\nkind = "rules"\nname = "traced, in no builtin"\nrules = [{rules}]\n'
        )
    Policy.from_toml(text)  # what we write loads
    return text


def _builtin_tables(cover: Cover) -> list[str]:
    """The cover's RuleSets; SystemIO's always with ``allow_stderr``: a traced run that
    went well wrote no error, and the program's errors must be seen under the policy."""
    by_class: dict[str, list[str]] = {"SystemIO": []}
    for cls, method in _split(cover.chosen):
        by_class.setdefault(cls.__name__, []).append(method)
    if _with_stderr(by_class["SystemIO"]):
        by_class["SystemIO"].append("allow_stderr")
    out = []
    for cls_name, methods in by_class.items():
        allowed = ", ".join(f'"{m}"' for m in methods)
        out += [
            "",
            "[[ruleset]]",
            'kind = "builtin"',
            f'class = "{cls_name}"',
            f"allow = [{allowed}]",
        ]
    return out


def _with_stderr(methods: list[str]) -> bool:
    """Whether SystemIO's ``methods`` lack standard error and take it without a conflict
    (``allow_write`` already writes everywhere)."""
    if "allow_stderr" in methods:
        return False
    rs = SystemIO.nothing()
    for method in [*methods, "allow_stderr"]:
        rs = getattr(rs, method)()
    try:
        Policy(rs)
    except PolicyError:
        return False
    return True


def landlock_table(grants: Grants, resources: Resources, name: str) -> list[str]:
    """A ``landlock`` RuleSet table named ``name``: the grants, and the ports of
    ``resources``; nothing if there is nothing to grant."""
    if (
        not grants.paths
        and not grants.conveniences
        and not resources.connect_tcp
        and not resources.bind_tcp
    ):
        return []
    out = ["", "[[ruleset]]", 'kind = "landlock"', f'name = "{name}"']
    if grants.conveniences:
        named = ", ".join(f'"{c}"' for c in sorted(grants.conveniences))
        out.append(f"conveniences = [{named}]")
    if grants.paths:
        out.append("allow = [")
        for path, rights in sorted(grants.paths.items()):
            if not rights:
                continue
            note = f"  # {grants.named[path]}" if path in grants.named else ""
            names = ", ".join(f'"{r}"' for r in sorted(rights_names(rights, path)))
            out.append(f'    {{ path = "{path}", rights = [{names}], missing_ok = true }},{note}')
        out.append("]")
    for key, ports in (("connect_tcp", resources.connect_tcp), ("bind_tcp", resources.bind_tcp)):
        if ports:
            out.append(f"{key} = [{', '.join(str(p) for p in sorted(ports))}]")
    return out


def _still_refused(result: Trace, text: str) -> list[str]:
    """The traced syscalls the emitted policy (cover and Landlock together, as it loads)
    still refuses: named outright in the file."""
    allows = allowing(Policy.from_toml(text))
    return sorted({c.name for c in result.calls if not answered_enosys(c) and not allows(c)})

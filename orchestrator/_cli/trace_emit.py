"""``isolates trace --emit FILE``: a tight policy file from what a trace saw.

The syscalls: the builtin cover (trace_cover.py), as ``builtin`` RuleSets by their
``allow_*`` calls, plus a ``rules`` RuleSet for every traced syscall the cover and the
Landlock rights together still refuse (checked against the policy the file loads as).
The paths: exactly those touched, with rights by kind (traced_paths.py), grouped into
the fewest grants that widen nothing the program did not use:

- named sets become conveniences: the resolver's files (``dns``), the CA certificates
  (``ssl_certs``), /dev/null, /dev/zero and /dev/urandom (``devices``);
- a Python installation's ``lib/pythonX.Y`` is granted as a whole (read), and so is each
  library directory a shared object was loaded from (read): they are named so;
- a directory gets the rights of what was made or removed in it (and the right to write
  the files made there); a file read, written or executed gets exactly that;
- where at least ``GROUP_AT`` files of one directory were read, the directory is read
  instead, unless it is one that must never be granted whole (/, /etc, /usr, $HOME...).

Ports: every TCP port connected to or bound. The default is EPERM. Standard error is
always writable (SystemIO.allow_stderr): a program's errors must be seen under it.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

from isolates.sandbox import Policy, PolicyError, SystemIO

from .trace_cover import Cover, _split, allowing
from .traced import Trace, answered_enosys
from .traced_paths import Resources

#: How many files read in one directory make it a directory grant.
GROUP_AT: Final = 8
_DNS: Final = frozenset({"/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/nsswitch.conf",
                         "/etc/gai.conf", "/etc/services", "/etc/protocols"})  # fmt: skip
_CERTS: Final = ("/etc/ssl/certs", "/usr/share/ca-certificates", "/etc/pki", "/etc/ca-certificates",
                 "/usr/local/share/ca-certificates")  # fmt: skip
_DEVICES: Final = frozenset({"/dev/null", "/dev/zero", "/dev/urandom"})
_PYTHON: Final = re.compile(r"^(.*/lib/python3\.\d+)(/.*)?$")
_LIBRARY: Final = re.compile(
    r"^(/usr)?(/local)?/lib(32|64|x32)?(/[^/]+-linux-gnu[^/]*)?/[^/]+\.so[.\d]*$"
)
_WHOLE: Final = frozenset({"/", "/etc", "/usr", "/var", "/home", "/root", "/tmp", "/dev", "/proc",
                           "/sys", "/lib", "/lib64", "/usr/lib", "/usr/share", "/usr/local",
                           "/opt", "/srv", "/run", "/mnt", "/media", "/boot"})  # fmt: skip
_DIR_RIGHTS: Final = ("make_reg", "make_dir", "make_sym", "make_sock", "make_fifo", "make_char",
                      "make_block", "remove_file", "remove_dir", "refer")  # fmt: skip


@dataclass
class Grants:
    """The Landlock side of the emitted policy."""

    paths: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    conveniences: set[str] = field(default_factory=set)
    named: dict[str, str] = field(default_factory=dict)  # path -> what it is, for people


def grants_of(resources: Resources) -> Grants:
    """The fewest grants covering what the trace touched (see the module's rules)."""
    out = Grants()
    reads: dict[str, list[str]] = defaultdict(list)
    home = os.path.expanduser("~")
    for path, rights in sorted(resources.paths.items()):
        if _convenience(path, out):
            continue
        python = _PYTHON.match(path)
        if python and rights <= {"read", "list", "execute"}:
            out.paths[python[1]] |= {"read"}
            out.named[python[1]] = "the Python runtime"
            continue
        if _LIBRARY.match(path) or path == "/etc/ld.so.cache":
            directory = os.path.dirname(path)
            out.paths[directory if path != "/etc/ld.so.cache" else path] |= {"read"}
            out.named.setdefault(directory, "shared libraries")
            continue
        if path.startswith("/proc/"):
            out.paths["/proc"] |= {"read"}
            out.named["/proc"] = "procfs (the program's own /proc/self among it)"
            continue
        _plain(path, rights, out, reads)
    for directory, files in reads.items():
        if len(files) >= GROUP_AT and directory not in _WHOLE and directory != home:
            for f in files:
                out.paths[f].discard("read")
                if not out.paths[f]:
                    del out.paths[f]
            out.paths[directory] |= {"read"}
            out.named[directory] = f"{len(files)} files read beneath it"
    return out


def _convenience(path: str, out: Grants) -> bool:
    if path in _DNS:
        out.conveniences.add("dns")
    elif path.startswith(_CERTS):
        out.conveniences.add("ssl_certs")
    elif path in _DEVICES:
        out.conveniences.add("devices")
    else:
        return False
    return True


def _plain(path: str, rights: set[str], out: Grants, reads: dict[str, list[str]]) -> None:
    here = {r for r in rights if r in _DIR_RIGHTS}
    if here:  # entries made or removed in this directory: those rights, and writing them
        out.paths[path] |= here
        if here & {"make_reg", "make_dir", "make_sym", "make_sock", "make_fifo"}:
            out.paths[path] |= {"write_file", "truncate", "read_file"}
    rest = rights - here
    if not os.path.lexists(path):  # made during the trace and gone: its directory has it
        if rest & {"write", "truncate", "read"}:
            out.paths[os.path.dirname(path)] |= _file_rights(rest)
        return
    if rest & {"read"} and not os.path.isdir(path) and not rest - {"read"}:
        reads[os.path.dirname(path)].append(path)
    if rest:
        out.paths[path] |= _file_rights(rest) if not os.path.isdir(path) else _dir_reads(rest)


_FILE_GROUPS: Final = (
    ("read", {"read_file"}),
    ("write", {"write_file"}),
    ("truncate", {"truncate"}),
    ("execute", {"execute", "read_file"}),
)


def _file_rights(rights: set[str]) -> set[str]:
    out = set()
    for right, names in _FILE_GROUPS:
        if right in rights:
            out |= names
    return out


def _dir_reads(rights: set[str]) -> set[str]:
    return {"read_dir"} if rights & {"list", "read"} else set()


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


def rights_names(rights: set[str], path: str) -> set[str]:
    """Groups as AccessFs names ("read": read_file, and read_dir on a directory); on a
    file, the rights a file can have."""
    out = set()
    for right in rights:
        out |= {"read": {"read_file", "read_dir"}}.get(right, {right})
    if not os.path.isdir(path):
        out &= _FILE_RIGHTS
    return out


_FILE_RIGHTS: Final = frozenset({"execute", "write_file", "read_file", "truncate", "ioctl_dev"})


def _still_refused(result: Trace, text: str) -> list[str]:
    """The traced syscalls the emitted policy (cover and Landlock together, as it loads)
    still refuses: named outright in the file."""
    allows = allowing(Policy.from_toml(text))
    return sorted({c.name for c in result.calls if not answered_enosys(c) and not allows(c)})

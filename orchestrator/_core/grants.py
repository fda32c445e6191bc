"""Grants from what a program touched: the fewest Landlock grants that widen nothing it did
not use (``isolates trace --emit``, ``run --learn``, an isolate learning its policy).

- named sets become conveniences: the resolver's files (``dns``), the CA certificates
  (``ssl_certs``), /dev/null, /dev/zero and /dev/urandom (``devices``);
- a Python installation's ``lib/pythonX.Y`` is granted as a whole (read), and so is each
  library directory a shared object was loaded from (read): they are named so;
- a directory gets the rights of what was made or removed in it (and the right to write
  the files made there); a file read, written or executed gets exactly that;
- where at least ``GROUP_AT`` files of one directory were read, the directory is read
  instead, unless it is one that must never be granted whole (/, /etc, /usr, $HOME...).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from isolates.sandbox import AccessFs, Policy

from .resources import Resources

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
    if not os.path.lexists(path):
        _gone(path, rights, out)
        return
    here = {r for r in rights if r in _DIR_RIGHTS}
    if here:  # entries made or removed in this directory: those rights, and writing them
        out.paths[path] |= here
        if here & _MAKES:
            out.paths[path] |= {"write_file", "truncate", "read_file"}
    rest = rights - here
    if rest & {"read"} and not os.path.isdir(path) and not rest - {"read"}:
        reads[os.path.dirname(path)].append(path)
    if rest:
        out.paths[path] |= _file_rights(rest) if not os.path.isdir(path) else _dir_reads(rest)


def _gone(path: str, rights: set[str], out: Grants) -> None:
    """A path made during the trace and removed before its end (a ``mkdtemp`` directory
    and what was in it): granted beneath its nearest directory that still exists, since
    Landlock grants only what exists when the policy is loaded, and a name made at random
    cannot be named in advance. Its rights move there as they are: entries made or
    removed, files read, written or run, a directory listed."""
    anchor = os.path.dirname(path)
    while not os.path.isdir(anchor):
        anchor = os.path.dirname(anchor)
    moved = {r for r in rights if r in _DIR_RIGHTS} | _file_rights(rights)
    if moved & _MAKES:
        moved |= {"write_file", "truncate", "read_file"}
    if "list" in rights:
        moved.add("read_dir")
    if not moved:
        return
    out.paths[anchor] |= moved
    wide = " (a wide grant: check it)" if anchor in _WHOLE else ""
    if anchor == tempfile.gettempdir():
        wide = " (temporary files: `isolates run --tmp` gives a private TMPDIR instead)"
    out.named.setdefault(anchor, f"paths made and removed during the trace beneath it{wide}")


_MAKES: Final = frozenset({"make_reg", "make_dir", "make_sym", "make_sock", "make_fifo"})
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


# -- against a plan: what a policy's Landlock does not grant ---------------------------------


def beyond(policy: Policy, resources: Resources) -> Resources:
    """What of ``resources`` the Landlock of ``policy`` would refuse: the paths with the
    rights no grant gives, the TCP ports not granted (nothing where it handles neither)."""
    out = Resources()
    plan = policy.landlock.plan() if policy.landlock is not None else None
    if plan is None:
        return out
    for path, rights in resources.paths.items():
        missing = {
            r for r in rights if granting(plan.paths, path, _RIGHTS.get(r, AccessFs(0))) is None
        }
        if missing and plan.handled_fs:
            out.paths[path] |= missing
    if plan.handled_net:
        out.connect_tcp = {p for p in resources.connect_tcp if not _port(plan.ports, p, 2)}
        out.bind_tcp = {p for p in resources.bind_tcp if not _port(plan.ports, p, 1)}
    return out


_RIGHTS: Final = {
    "read": AccessFs.READ_FILE, "list": AccessFs.READ_DIR, "write": AccessFs.WRITE_FILE,
    "truncate": AccessFs.TRUNCATE, "execute": AccessFs.EXECUTE | AccessFs.READ_FILE,
    **{name.lower(): flag for name, flag in AccessFs.__members__.items()},
}  # fmt: skip


def _port(ports: Iterable[tuple[int, int]], port: int, bit: int) -> bool:
    return any(p == port and b & bit for p, b in ports)


def granting(grants: Iterable[tuple[object, ...]], path: str, needed: AccessFs) -> str | None:
    """The granted path beneath which ``path`` gets every right in ``needed`` (rights
    add up across the grants above it, as Landlock adds a hierarchy's rules)."""
    real = os.path.realpath(path)
    have, where = AccessFs(0), None
    for grant in grants:
        granted, bits = os.path.realpath(str(grant[0])), AccessFs(int(str(grant[1])))
        if real == granted or real.startswith(granted.rstrip("/") + "/"):
            have |= bits
            where = where or str(grant[0])
    return where if needed & ~have == 0 else None

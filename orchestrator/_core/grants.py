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
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

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

"""The syscalls each Landlock right needs, merged into a policy as ``RuleKind.IMPLIED``.

Landlock checks *which path* a syscall reaches; seccomp still has to let the syscall run.
``implied_rules`` turns the rights a ``Landlock`` grants into those rules, and no more:
a read-only grant brings ``open`` without write flags, not ``open`` in every form. A
right implies only calls that Landlock itself checks against the granted paths, in the
form it checks: ``mknod`` for MAKE_FIFO only with S_IFIFO, and nothing for IOCTL_DEV
(seccomp cannot tell a device's descriptor from an inherited terminal's: name the
commands with ``SystemIO.allow_ioctl``), MAKE_SOCK (``bind`` would serve every socket
family: take it from ``Networking.allow_unix_servers``) or the TCP port rights (a
port grant restricts the ``bind``/``connect`` that ``Networking`` allows).

Read and write rights bring read(2)/write(2) on any descriptor: seccomp cannot know
which descriptors were opened beneath a granted path.

``UNCHECKED_PATH_CALLS`` are the path-based calls that change what Landlock cannot see:
a policy whose Landlock confines the filesystem leaves builtins' rules on them out.
"""

from __future__ import annotations

import os
import stat
from typing import Final

from ._landlock_abi import ALL_FS, FILE_RIGHTS, AccessFs, AccessNet
from ._rules import Arg, Rule
from ._syscalls import exists
from ._uapi import AT_EMPTY_PATH, AT_REMOVEDIR, O_TMPFILE_BIT
from ._uapi import O_WRITE_FLAGS as WRITE_FLAGS

_O_TMPFILE: Final = O_TMPFILE_BIT
_ACCESS_MODE: Final = os.O_ACCMODE | _O_TMPFILE
_AT_EMPTY_PATH: Final = AT_EMPTY_PATH
_AT_REMOVEDIR: Final = AT_REMOVEDIR
_READS: Final = ("read", "readv", "pread64", "preadv", "preadv2", "lseek", "fstat")
_WRITES: Final = ("write", "writev", "pwrite64", "pwritev", "pwritev2", "lseek", "fstat")

#: Syscalls a right needs, allowed outright: Landlock checks the path.
_NEEDS: Final[dict[AccessFs, tuple[str, ...]]] = {
    AccessFs.EXECUTE: ("execve", "execveat"),
    AccessFs.WRITE_FILE: _WRITES,
    AccessFs.READ_FILE: _READS,
    AccessFs.READ_DIR: ("getdents64", "getdents", "lseek", "fstat"),
    AccessFs.REMOVE_DIR: ("rmdir",),
    AccessFs.REMOVE_FILE: ("unlink",),
    AccessFs.MAKE_DIR: ("mkdir", "mkdirat"),
    AccessFs.MAKE_REG: ("creat", "link", "linkat"),
    AccessFs.MAKE_SYM: ("symlink", "symlinkat"),
    AccessFs.TRUNCATE: ("truncate", "ftruncate"),
}


def _open(mask: int, value: int) -> tuple[tuple[str, int, int, int], ...]:
    """open and openat whose flags, masked with ``mask``, equal ``value``."""
    return (("open", 1, mask, value), ("openat", 2, mask, value))


_FSTAT_FD: Final = (("newfstatat", 3, _AT_EMPTY_PATH, _AT_EMPTY_PATH),)  # glibc's fstat()


def _mknod(*kinds: int) -> tuple[tuple[str, int, int, int], ...]:
    """mknod and mknodat making a node of one of these types (S_IFMT of the mode)."""
    mode = stat.S_IFMT(0o777777)
    return tuple((s, i, mode, k) for k in kinds for s, i in (("mknod", 1), ("mknodat", 2)))


_WRITE_OPENS: Final = _open(_ACCESS_MODE, os.O_WRONLY) + _open(_ACCESS_MODE, os.O_RDWR)


#: Syscalls a right needs only in one form: (syscall, argument, mask, value). Reading
#: opens without write access, O_CREAT, O_TRUNC, O_APPEND or O_TMPFILE (as
#: SystemIO.allow_open_readonly); writing opens write-only or read-write; only MAKE_REG
#: opens with O_CREAT and no write access.
_WHEN: Final[dict[AccessFs, tuple[tuple[str, int, int, int], ...]]] = {
    AccessFs.READ_FILE: _open(WRITE_FLAGS, 0) + _FSTAT_FD,
    AccessFs.READ_DIR: _open(WRITE_FLAGS, 0) + _FSTAT_FD,
    AccessFs.WRITE_FILE: _WRITE_OPENS + _FSTAT_FD,
    AccessFs.MAKE_REG: _open(os.O_CREAT | _O_TMPFILE, os.O_CREAT) + _mknod(0, stat.S_IFREG),
    AccessFs.MAKE_CHAR: _mknod(stat.S_IFCHR),
    AccessFs.MAKE_BLOCK: _mknod(stat.S_IFBLK),
    AccessFs.MAKE_FIFO: _mknod(stat.S_IFIFO),
    AccessFs.MAKE_SOCK: _mknod(stat.S_IFSOCK),
    AccessFs.REMOVE_FILE: (("unlinkat", 2, _AT_REMOVEDIR, 0),),
    AccessFs.REMOVE_DIR: (("unlinkat", 2, _AT_REMOVEDIR, _AT_REMOVEDIR),),
}
_MAKE_ANY: Final = ALL_FS & ~(FILE_RIGHTS | AccessFs.READ_DIR | AccessFs.REFER)
_REMOVE_ANY: Final = AccessFs.REMOVE_FILE | AccessFs.REMOVE_DIR


def implied_rules(fs: AccessFs, net: AccessNet) -> tuple[Rule, ...]:
    """The rules granted rights ``fs`` and ``net`` need, for syscalls this CPU has.

    Renaming needs a MAKE_* and a REMOVE_* right (REFER adds other directories). TCP
    port rights (``net``) need no syscall of their own: they restrict ``Networking``'s.
    """
    names: list[str] = []
    when: list[tuple[str, int, int, int]] = []
    for right in AccessFs:
        if right & fs:
            names += _NEEDS.get(right, ())
            when += _WHEN.get(right, ())
    if fs & _MAKE_ANY and fs & _REMOVE_ANY:
        names += ("rename", "renameat", "renameat2")
    rules = [Rule(name) for name in dict.fromkeys(names) if exists(name)]
    rules += [Rule(s, Arg(i) & m == v) for s, i, m, v in dict.fromkeys(when) if exists(s)]
    return tuple(rules)


#: Path-based calls that change a file's metadata, which Landlock does not check.
UNCHECKED_PATH_CALLS: Final = frozenset(
    {
        "chmod",
        "fchmodat",
        "fchmodat2",
        "chown",
        "lchown",
        "fchownat",
        "utime",
        "utimes",
        "futimesat",
        "setxattr",
        "lsetxattr",
        "removexattr",
        "lremovexattr",
        "setxattrat",
        "removexattrat",
    }
)


def descriptor_form(rule: Rule) -> Rule | None:
    """``rule`` as it may stay in a policy whose Landlock confines the filesystem: None
    for a path-based call Landlock cannot check, ``utimensat`` on a descriptor only
    (a NULL path: futimens), anything else unchanged."""
    if rule.syscall in UNCHECKED_PATH_CALLS:
        return None
    if rule.syscall == "utimensat":
        others = [c for c in rule.conditions if c.arg != 1]
        if len(others) > 5:  # no room for the NULL-path condition: leave it out
            return None
        return Rule("utimensat", Arg(1) == 0, *others, action=rule.action)
    return rule

"""The syscalls each Landlock right needs, merged into a policy as RuleSet kind "implied".

Landlock checks *which path* a syscall reaches; seccomp still has to let the syscall run.
``implied_rules`` turns the rights a ``Landlock`` grants into those rules, and no more:
a read-only grant brings ``open`` without write flags, not ``open`` in every form.
"""

from __future__ import annotations

import os
from typing import Final

from ._builtins_io import WRITE_FLAGS
from ._landlock_abi import ALL_FS, FILE_RIGHTS, AccessFs, AccessNet
from ._rules import Arg, Rule
from ._syscalls import exists

_O_TMPFILE: Final = 0o20000000  # __O_TMPFILE: O_TMPFILE without its O_DIRECTORY bit
_ACCESS_MODE: Final = os.O_ACCMODE | _O_TMPFILE
_AT_EMPTY_PATH: Final = 0x1000
_AT_REMOVEDIR: Final = 0x200
_READS: Final = ("read", "readv", "pread64", "preadv", "preadv2", "lseek", "fstat")
_WRITES: Final = ("write", "writev", "pwrite64", "pwritev", "pwritev2", "lseek", "fstat")
_MKNOD: Final = ("mknod", "mknodat")

#: Syscalls a right needs, allowed outright: Landlock checks the path.
_NEEDS: Final[dict[AccessFs, tuple[str, ...]]] = {
    AccessFs.EXECUTE: ("execve", "execveat"),
    AccessFs.WRITE_FILE: _WRITES,
    AccessFs.READ_FILE: _READS,
    AccessFs.READ_DIR: ("getdents64", "getdents", "lseek", "fstat"),
    AccessFs.REMOVE_DIR: ("rmdir",),
    AccessFs.REMOVE_FILE: ("unlink",),
    AccessFs.MAKE_CHAR: _MKNOD,
    AccessFs.MAKE_DIR: ("mkdir", "mkdirat"),
    AccessFs.MAKE_REG: ("creat", "link", "linkat", *_MKNOD),
    AccessFs.MAKE_SOCK: ("bind",),
    AccessFs.MAKE_FIFO: _MKNOD,
    AccessFs.MAKE_BLOCK: _MKNOD,
    AccessFs.MAKE_SYM: ("symlink", "symlinkat"),
    AccessFs.TRUNCATE: ("truncate", "ftruncate"),
    AccessFs.IOCTL_DEV: ("ioctl",),
}
_NET_NEEDS: Final = {AccessNet.BIND_TCP: "bind", AccessNet.CONNECT_TCP: "connect"}


def _open(mask: int, value: int) -> tuple[tuple[str, int, int, int], ...]:
    """open and openat whose flags, masked with ``mask``, equal ``value``."""
    return (("open", 1, mask, value), ("openat", 2, mask, value))


_FSTAT_FD: Final = (("newfstatat", 3, _AT_EMPTY_PATH, _AT_EMPTY_PATH),)  # glibc's fstat()

#: Syscalls a right needs only in one form: (syscall, argument, mask, value). Reading
#: opens without write access, O_CREAT, O_TRUNC, O_APPEND or O_TMPFILE (as
#: SystemIO.allow_open_readonly); writing opens write-only or read-write; only MAKE_REG
#: opens with O_CREAT and no write access.
_WHEN: Final[dict[AccessFs, tuple[tuple[str, int, int, int], ...]]] = {
    AccessFs.READ_FILE: _open(WRITE_FLAGS, 0) + _FSTAT_FD,
    AccessFs.READ_DIR: _open(WRITE_FLAGS, 0) + _FSTAT_FD,
    AccessFs.WRITE_FILE: _open(_ACCESS_MODE, os.O_WRONLY) + _open(_ACCESS_MODE, os.O_RDWR)
    + _FSTAT_FD,
    AccessFs.MAKE_REG: _open(os.O_CREAT | _O_TMPFILE, os.O_CREAT),
    AccessFs.REMOVE_FILE: (("unlinkat", 2, _AT_REMOVEDIR, 0),),
    AccessFs.REMOVE_DIR: (("unlinkat", 2, _AT_REMOVEDIR, _AT_REMOVEDIR),),
}  # fmt: skip
_MAKE_ANY: Final = ALL_FS & ~(FILE_RIGHTS | AccessFs.READ_DIR | AccessFs.REFER)
_REMOVE_ANY: Final = AccessFs.REMOVE_FILE | AccessFs.REMOVE_DIR


def implied_rules(fs: AccessFs, net: AccessNet) -> tuple[Rule, ...]:
    """The rules granted rights ``fs`` and ``net`` need, for syscalls this CPU has.

    Renaming needs a MAKE_* and a REMOVE_* right (REFER adds other directories).
    """
    names: list[str] = [_NET_NEEDS[right] for right in AccessNet if right & net]
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

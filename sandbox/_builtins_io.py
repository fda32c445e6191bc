"""SystemIO: files and descriptors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Final, Self

from ._errors import PolicyError
from ._rules import Arg
from ._ruleset import BuiltinRuleSet
from ._uapi import O_WRITE_FLAGS

#: Flags that make an open more than a read (``_uapi.O_WRITE_FLAGS``).
WRITE_FLAGS: Final = O_WRITE_FLAGS
_READ: Final = ("read", "readv", "pread64", "preadv", "preadv2")
_WRITE: Final = ("write", "writev", "pwrite64", "pwritev", "pwritev2")


class SystemIO(BuiltinRuleSet):
    """Files and descriptors. Nothing is allowed until you say so.

    - ``allow_read`` / ``allow_write``: read(v)/pread(v)(2), write(v)/pwrite(v)(2) on any
      descriptor.
    - ``allow_open``: open, openat, openat2, creat with any flags (pair it with Landlock).
    - ``allow_open_readonly``: open/openat only when the flags hold no write access,
      O_CREAT, O_TRUNC, O_APPEND or O_TMPFILE; openat2 stays denied, since its flags are
      behind a pointer the filter cannot read.
    - ``allow_metadata``: stat family, access, readlink, getcwd, getdents64, statfs, lseek.
    - ``allow_ioctl(cmds)``: ioctl with exactly these request numbers.
    - ``allow_close``, ``allow_unlink`` (unlink, unlinkat, rmdir),
      ``allow_mkdir`` (mkdir, mkdirat), ``allow_rename`` (rename, renameat, renameat2),
      ``allow_sync`` (fsync, fdatasync, sync_file_range), ``allow_truncate``,
      ``allow_dup`` (dup, dup2, dup3, fcntl), ``allow_poll`` (poll, ppoll, select,
      pselect6, epoll_*).
    - ``allow_stdin`` / ``allow_stdout`` / ``allow_stderr``: read on 0, write on 1 or 2.
    - ``allow_file_read(fd)`` / ``allow_file_write(fd)``: read or write on one descriptor.
    """

    EVERYTHING: ClassVar[tuple[str, ...]] = (
        "allow_read",
        "allow_write",
        "allow_open",
        "allow_metadata",
        "allow_close",
        "allow_unlink",
        "allow_mkdir",
        "allow_rename",
        "allow_sync",
        "allow_truncate",
        "allow_dup",
        "allow_poll",
        "allow_all_ioctl",
        "allow_links",
        "allow_attributes",
    )

    def allow_read(self) -> Self:
        return self.allow(*_READ)

    def allow_write(self) -> Self:
        return self.allow(*_WRITE)

    def allow_open(self) -> Self:
        return self.allow("open", "openat", "openat2", "creat")

    def allow_open_readonly(self) -> Self:
        return self.allow_rule("open", Arg(1) & WRITE_FLAGS == 0).allow_rule(
            "openat", Arg(2) & WRITE_FLAGS == 0
        )

    def allow_metadata(self) -> Self:
        return self.allow(
            "stat",
            "fstat",
            "lstat",
            "newfstatat",
            "statx",
            "access",
            "faccessat",
            "faccessat2",
            "readlink",
            "readlinkat",
            "getcwd",
            "getdents64",
            "statfs",
            "fstatfs",
            "lseek",
        )

    def allow_ioctl(self, commands: Iterable[int]) -> Self:
        cmds = list(commands)
        if not cmds:
            raise PolicyError("SystemIO.allow_ioctl: name the request numbers to allow")
        rs = self
        for cmd in cmds:
            rs = rs.allow_rule("ioctl", Arg(1) == cmd)
        return rs

    def allow_all_ioctl(self) -> Self:
        return self.allow("ioctl")

    def allow_close(self) -> Self:
        return self.allow("close", "close_range")

    def allow_unlink(self) -> Self:
        return self.allow("unlink", "unlinkat", "rmdir")

    def allow_mkdir(self) -> Self:
        return self.allow("mkdir", "mkdirat")

    def allow_rename(self) -> Self:
        return self.allow("rename", "renameat", "renameat2")

    def allow_links(self) -> Self:
        return self.allow("link", "linkat", "symlink", "symlinkat")

    def allow_attributes(self) -> Self:
        return self.allow(
            "chmod",
            "fchmod",
            "fchmodat",
            "utimensat",
            "utime",
            "utimes",
            "futimesat",
            "getxattr",
            "lgetxattr",
            "fgetxattr",
            "listxattr",
            "llistxattr",
            "flistxattr",
        )

    def allow_sync(self) -> Self:
        return self.allow("fsync", "fdatasync", "sync_file_range")

    def allow_truncate(self) -> Self:
        return self.allow("truncate", "ftruncate", "fallocate")

    def allow_dup(self) -> Self:
        return self.allow("dup", "dup2", "dup3", "fcntl")

    def allow_poll(self) -> Self:
        return self.allow(
            "poll",
            "ppoll",
            "select",
            "pselect6",
            "epoll_create1",
            "epoll_ctl",
            "epoll_wait",
            "epoll_pwait",
            "epoll_pwait2",
        )

    def allow_stdin(self) -> Self:
        return self.allow_file_read(0)

    def allow_stdout(self) -> Self:
        return self.allow_file_write(1)

    def allow_stderr(self) -> Self:
        return self.allow_file_write(2)

    def allow_file_read(self, fd: int) -> Self:
        return self._on_fd(_READ[:3], fd)

    def allow_file_write(self, fd: int) -> Self:
        return self._on_fd(_WRITE[:3], fd)

    def _on_fd(self, syscalls: tuple[str, ...], fd: int) -> Self:
        if not isinstance(fd, int) or fd < 0:
            raise PolicyError(f"SystemIO: a descriptor is a non-negative int, not {fd!r}")
        rs = self
        for s in syscalls:
            rs = rs.allow_rule(s, Arg(0) == fd)
        return rs

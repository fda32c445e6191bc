"""What parked calls name beyond their syscall: the paths a program touched and how, the
TCP ports it connected to or bound, the sockets it made (``isolates trace``, and an
isolate learning its policy).

Read from the tracee's memory and /proc at notification time, before the call is let
run: a path is resolved against the caller's cwd (``/proc/TID/cwd``) or the directory
its descriptor names (``/proc/TID/fd/N``). This is a learning tool, not an enforcement
one: another thread of the program may change the string between our read and the
kernel's, and a descriptor may be replaced meanwhile, so a recorded path is what the
call most likely named; the policy made of it is enforced by Landlock, which checks
the real object.

What is recorded is what Landlock checks, by kind: ``read`` (a file opened for reading),
``list`` (a directory opened), ``write`` (opened for writing), ``truncate``,
``execute`` (execve), and on a directory the entries made or removed in it:
``make_reg``, ``make_dir``, ``make_sym``, ``make_sock``, ``make_fifo``, ``remove_file``,
``remove_dir``, ``refer`` (a link or rename across directories). stat, access, readlink
and chdir are not Landlock's business: their paths are kept apart (``looked_at``), for
the report, and need no grant; nor does a file that did not exist when it was opened
without O_CREAT (the program saw ENOENT, and will again).

Safety argument (the one raw call, pidfd_getfd, in ``_is_tcp``):

- It copies a descriptor of a process of the traced program (whose tracer we are: our
  child's tree, re-parented to us as subreaper), only while that process is parked in
  the connect or bind naming it, to ask the socket its type and protocol; the copy is
  closed at once and nothing is ever read from or written to it.
"""

from __future__ import annotations

import os
import socket
import stat
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from isolates.sandbox import PolicyError
from isolates.sandbox.lowlevel import Notification, memory_reader, syscall, syscall_name
from isolates.sandbox.lowlevel import syscall_number as _number

from .process_count import tgid_of

Handler = Callable[["Resources", "_Call"], None]
_AT_FDCWD: Final = -100
_AT_REMOVEDIR: Final = 0x200
_MAX_PATH: Final = 4096


@dataclass
class Resources:
    """Paths (absolute) with the rights they were used with; TCP ports; socket kinds."""

    paths: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    connect_tcp: set[int] = field(default_factory=set)
    bind_tcp: set[int] = field(default_factory=set)
    sockets: set[tuple[str, str]] = field(default_factory=set)
    unix: set[str] = field(default_factory=set)  # unix socket paths connected to
    looked_at: set[str] = field(default_factory=set)  # stat, access, readlink, chdir

    def record(self, note: Notification) -> None:
        """Note what the parked call ``note`` names (nothing if it names nothing here)."""
        handler = _HANDLERS.get(syscall_name(note.nr))
        if handler is not None:
            try:
                handler(self, _Call(note))
            except (OSError, ValueError, UnicodeDecodeError):  # gone, or unreadable
                pass

    def add(self, path: str | None, *rights: str) -> None:
        if path:
            self.paths[path].update(rights)


class _Call:
    """A parked call's arguments, with its strings read and its paths resolved."""

    def __init__(self, note: Notification) -> None:
        self.tid, self.args = note.pid, note.args
        self._read = memory_reader(note.pid)

    def number(self, i: int) -> int:
        value = self.args[i] & 0xFFFFFFFF
        return value - (1 << 32) if value & 0x80000000 else value

    def path(self, i: int, dirfd: int | None = None) -> str | None:
        data = self._read(self.args[i], _MAX_PATH) if self.args[i] else None
        if not data:
            return None
        text = os.fsdecode(data.split(b"\0", 1)[0])
        if not text:
            return None
        if text.startswith("/"):
            return os.path.normpath(text)
        base = self._base(None if dirfd is None else self.number(dirfd))
        return os.path.normpath(os.path.join(base, text)) if base else None

    def _base(self, dirfd: int | None) -> str | None:
        where = "cwd" if dirfd in (None, _AT_FDCWD) else f"fd/{dirfd}"
        try:
            return os.readlink(f"/proc/{self.tid}/{where}")
        except OSError:
            return None

    def sockaddr(self, i: int) -> bytes:
        return (self._read(self.args[i], 110) if self.args[i] else None) or b""


def _open(res: Resources, call: _Call, path: str | None, flags: int) -> None:
    if path is None or flags & os.O_PATH:
        return
    exists = os.path.lexists(path)
    if flags & os.O_CREAT and not exists:
        res.add(os.path.dirname(path), "make_reg")
        res.add(path, "write")
        return
    if not exists:
        return  # ENOENT then, and again under the policy: nothing to grant
    access = flags & os.O_ACCMODE
    if os.path.isdir(path):
        res.add(path, "list")
        return
    rights = {os.O_RDONLY: ("read",), os.O_WRONLY: ("write",), os.O_RDWR: ("read", "write")}
    res.add(path, *rights.get(access, ("read",)), *(("truncate",) if flags & os.O_TRUNC else ()))


def _openat(res: Resources, call: _Call) -> None:
    _open(res, call, call.path(1, dirfd=0), call.number(2))


def _open_plain(res: Resources, call: _Call) -> None:
    _open(res, call, call.path(0), call.number(1))


def _creat(res: Resources, call: _Call) -> None:
    _open(res, call, call.path(0), os.O_CREAT | os.O_WRONLY | os.O_TRUNC)


def _execve(res: Resources, call: _Call) -> None:
    res.add(call.path(0), "execute")


def _execveat(res: Resources, call: _Call) -> None:
    res.add(call.path(1, dirfd=0), "execute")


def _made(kind: str, i: int, dirfd: int | None = None) -> Handler:
    def handler(res: Resources, call: _Call) -> None:
        path = call.path(i, dirfd)
        if path is not None:
            res.add(os.path.dirname(path), kind)

    return handler


def _removed(i: int, dirfd: int | None = None, flags: int | None = None) -> Handler:
    def handler(res: Resources, call: _Call) -> None:
        path = call.path(i, dirfd)
        if path is None or not os.path.lexists(path):
            return
        is_dir = flags is not None and call.number(flags) & _AT_REMOVEDIR
        is_dir = is_dir or (flags is None and os.path.isdir(path) and not os.path.islink(path))
        res.add(os.path.dirname(path), "remove_dir" if is_dir else "remove_file")

    return handler


def _moved(old: int, new: int, olddir: int | None = None, newdir: int | None = None) -> Handler:
    def handler(res: Resources, call: _Call) -> None:
        src, dst = call.path(old, olddir), call.path(new, newdir)
        if src is None or dst is None or not os.path.lexists(src):
            return
        is_dir = os.path.isdir(src) and not os.path.islink(src)
        res.add(os.path.dirname(src), "remove_dir" if is_dir else "remove_file")
        res.add(os.path.dirname(dst), _make_kind(src))
        if os.path.dirname(src) != os.path.dirname(dst):
            res.add(os.path.dirname(src), "refer")
            res.add(os.path.dirname(dst), "refer")

    return handler


def _linked(old: int, new: int, olddir: int | None = None, newdir: int | None = None) -> Handler:
    def handler(res: Resources, call: _Call) -> None:
        src, dst = call.path(old, olddir), call.path(new, newdir)
        if src is None or dst is None:
            return
        res.add(os.path.dirname(dst), _make_kind(src))
        if os.path.dirname(src) != os.path.dirname(dst):
            res.add(os.path.dirname(dst), "refer")

    return handler


def _make_kind(path: str) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "make_reg"
    for test, kind in ((stat.S_ISDIR, "make_dir"), (stat.S_ISLNK, "make_sym"),
                       (stat.S_ISSOCK, "make_sock"), (stat.S_ISFIFO, "make_fifo")):  # fmt: skip
        if test(mode):
            return kind
    return "make_reg"


def _truncate(res: Resources, call: _Call) -> None:
    res.add(call.path(0), "write", "truncate")


def _mknod(i: int, mode: int, dirfd: int | None = None) -> Handler:
    def handler(res: Resources, call: _Call) -> None:
        path, kind = call.path(i, dirfd), stat.S_IFMT(call.number(mode))
        names = {stat.S_IFIFO: "make_fifo", stat.S_IFSOCK: "make_sock", stat.S_IFCHR: "make_char",
                 stat.S_IFBLK: "make_block"}  # fmt: skip
        if path is not None:
            res.add(os.path.dirname(path), names.get(kind, "make_reg"))

    return handler


def _looked(i: int, dirfd: int | None = None) -> Handler:
    def handler(res: Resources, call: _Call) -> None:
        path = call.path(i, dirfd)
        if path is not None and len(res.looked_at) < _MAX_LOOKED:
            res.looked_at.add(path)

    return handler


#: Paths only looked at, kept (a program that stats its whole tree stays bounded).
_MAX_LOOKED: Final = 10_000


def _socket(res: Resources, call: _Call) -> None:
    family, kind = call.number(0), call.number(1) & 0xF
    res.sockets.add((_FAMILIES.get(family, str(family)), _TYPES.get(kind, str(kind))))


_FAMILIES: Final[dict[int, str]] = {
    socket.AF_UNIX: "AF_UNIX",
    socket.AF_INET: "AF_INET",
    socket.AF_INET6: "AF_INET6",
    socket.AF_NETLINK: "AF_NETLINK",
}
_TYPES: Final[dict[int, str]] = {
    socket.SOCK_STREAM: "SOCK_STREAM",
    socket.SOCK_DGRAM: "SOCK_DGRAM",
    socket.SOCK_SEQPACKET: "SOCK_SEQPACKET",
    socket.SOCK_RAW: "SOCK_RAW",
}


def _address(bind: bool) -> Handler:
    def handler(res: Resources, call: _Call) -> None:
        data = call.sockaddr(1)
        if len(data) < 4:
            return
        family = int.from_bytes(data[:2], "little")
        if family in (socket.AF_INET, socket.AF_INET6) and _is_tcp(call):
            (res.bind_tcp if bind else res.connect_tcp).add(int.from_bytes(data[2:4], "big"))
        elif family == socket.AF_UNIX and data[2:3] not in (b"", b"\0"):
            path = os.fsdecode(data[2:].split(b"\0", 1)[0])
            full = path if path.startswith("/") else os.path.join(call._base(None) or "/", path)
            if bind:
                res.add(os.path.dirname(os.path.normpath(full)), "make_sock")
            else:
                res.unix.add(os.path.normpath(full))

    return handler


def _is_tcp(call: _Call) -> bool:
    """Whether the descriptor of a connect or bind is a TCP socket (Landlock's ports are
    TCP's only): a copy of it (pidfd_getfd, from our own traced child's tree) asked for
    its protocol. Unknown counts as TCP: a port too many beats a program refused."""
    tgid = tgid_of(call.tid)
    if tgid is None:
        return True
    try:
        pidfd = os.pidfd_open(tgid)
    except OSError:
        return True
    try:
        fd = syscall("pidfd_getfd", pidfd, call.number(0), 0)
    except OSError:
        return True
    finally:
        os.close(pidfd)
    try:
        with socket.socket(fileno=fd) as sock:
            proto = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
            kind = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    except OSError:
        return True
    return bool(kind == socket.SOCK_STREAM and proto in (0, socket.IPPROTO_TCP))


def _named_calls() -> frozenset[str]:
    found = set()
    for name in _HANDLERS:
        try:
            _number(name)
        except PolicyError:  # not on this architecture (open and stat on arm64)
            continue
        found.add(name)
    return frozenset(found)


_HANDLERS: Final[dict[str, Handler]] = {
    "open": _open_plain, "openat": _openat, "openat2": _openat, "creat": _creat,
    "execve": _execve, "execveat": _execveat,
    "mkdir": _made("make_dir", 0), "mkdirat": _made("make_dir", 1, dirfd=0),
    "symlink": _made("make_sym", 1), "symlinkat": _made("make_sym", 2, dirfd=1),
    "unlink": _removed(0), "rmdir": _removed(0, flags=None),
    "unlinkat": _removed(1, dirfd=0, flags=2),
    "rename": _moved(0, 1), "renameat": _moved(1, 3, 0, 2), "renameat2": _moved(1, 3, 0, 2),
    "link": _linked(0, 1), "linkat": _linked(1, 3, 0, 2),
    "truncate": _truncate, "mknod": _mknod(0, 1), "mknodat": _mknod(1, 2, dirfd=0),
    "socket": _socket, "connect": _address(bind=False), "bind": _address(bind=True),
    "stat": _looked(0), "lstat": _looked(0), "newfstatat": _looked(1, dirfd=0),
    "statx": _looked(1, dirfd=0), "access": _looked(0), "faccessat": _looked(1, dirfd=0),
    "faccessat2": _looked(1, dirfd=0), "readlink": _looked(0),
    "readlinkat": _looked(1, dirfd=0), "chdir": _looked(0),
}  # fmt: skip

#: The syscalls whose paths and addresses are recorded, as this architecture has them.
NAMED_CALLS: Final = _named_calls()

"""A syscall as people read it: ``openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC)``.

What a violation, a reported denial and the tracer show. The arguments are the six
registers a seccomp notification carries; flags are spelled by name, descriptors'
special values too, and a pointer to a path or a socket address is read from the
caller's memory when ``read`` is given (the caller must be parked in the call: read at
notification time, it may still change under another thread before the kernel reads it,
so the text is a report, never a decision).

Standard library only, no syscall of its own: ``read`` is the caller's.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from ._syscalls import name_of

#: Reads up to n bytes at an address of the caller, or None where it cannot.
Reader = Callable[[int, int], bytes | None]

# An argument's kind: what it holds and how to spell it.
_FD, _DIRFD, _PATH, _OPEN, _MODE, _CLONE, _FAMILY, _SOCKTYPE, _ADDR = range(9)
_AT, _SIGNAL, _PROT, _MAP, _IOCTL, _FCNTL, _INT, _PTR, _ACCESS = range(9, 18)

#: The arguments of the calls people meet in a denial, by kind (the rest print as numbers).
SIGNATURES: Final[dict[str, tuple[int, ...]]] = {
    "open": (_PATH, _OPEN, _MODE),
    "openat": (_DIRFD, _PATH, _OPEN, _MODE),
    "openat2": (_DIRFD, _PATH, _PTR, _INT),
    "creat": (_PATH, _MODE),
    "execve": (_PATH, _PTR, _PTR),
    "execveat": (_DIRFD, _PATH, _PTR, _PTR, _AT),
    "stat": (_PATH, _PTR),
    "lstat": (_PATH, _PTR),
    "newfstatat": (_DIRFD, _PATH, _PTR, _AT),
    "statx": (_DIRFD, _PATH, _AT, _INT, _PTR),
    "access": (_PATH, _ACCESS),
    "faccessat": (_DIRFD, _PATH, _ACCESS),
    "faccessat2": (_DIRFD, _PATH, _ACCESS, _AT),
    "readlink": (_PATH, _PTR, _INT),
    "readlinkat": (_DIRFD, _PATH, _PTR, _INT),
    "mkdir": (_PATH, _MODE),
    "mkdirat": (_DIRFD, _PATH, _MODE),
    "rmdir": (_PATH,),
    "unlink": (_PATH,),
    "unlinkat": (_DIRFD, _PATH, _AT),
    "rename": (_PATH, _PATH),
    "renameat": (_DIRFD, _PATH, _DIRFD, _PATH),
    "renameat2": (_DIRFD, _PATH, _DIRFD, _PATH, _INT),
    "link": (_PATH, _PATH),
    "linkat": (_DIRFD, _PATH, _DIRFD, _PATH, _AT),
    "symlink": (_PATH, _PATH),
    "symlinkat": (_PATH, _DIRFD, _PATH),
    "chdir": (_PATH,),
    "chroot": (_PATH,),
    "truncate": (_PATH, _INT),
    "chmod": (_PATH, _MODE),
    "fchmodat": (_DIRFD, _PATH, _MODE),
    "chown": (_PATH, _INT, _INT),
    "lchown": (_PATH, _INT, _INT),
    "fchownat": (_DIRFD, _PATH, _INT, _INT, _AT),
    "mknod": (_PATH, _MODE, _INT),
    "mknodat": (_DIRFD, _PATH, _MODE, _INT),
    "utimensat": (_DIRFD, _PATH, _PTR, _AT),
    "socket": (_FAMILY, _SOCKTYPE, _INT),
    "socketpair": (_FAMILY, _SOCKTYPE, _INT, _PTR),
    "connect": (_FD, _ADDR, _INT),
    "bind": (_FD, _ADDR, _INT),
    "sendto": (_FD, _PTR, _INT, _INT, _ADDR, _INT),
    "clone": (_CLONE, _PTR, _PTR, _PTR, _INT),
    "unshare": (_CLONE,),
    "kill": (_INT, _SIGNAL),
    "tgkill": (_INT, _INT, _SIGNAL),
    "mmap": (_PTR, _INT, _PROT, _MAP, _FD, _INT),
    "mprotect": (_PTR, _INT, _PROT),
    "ioctl": (_FD, _IOCTL, _PTR),
    "fcntl": (_FD, _FCNTL, _INT),
    "read": (_FD, _PTR, _INT),
    "write": (_FD, _PTR, _INT),
    "close": (_FD,),
    "uname": (_PTR,), "times": (_PTR,), "sysinfo": (_PTR,), "brk": (_PTR,),
    "getcwd": (_PTR, _INT), "getdents64": (_FD, _PTR, _INT), "fstat": (_FD, _PTR),
    "statfs": (_PATH, _PTR), "fstatfs": (_FD, _PTR), "lseek": (_FD, _INT, _INT),
    "dup": (_FD,), "dup2": (_FD, _FD), "dup3": (_FD, _FD, _OPEN), "pipe2": (_PTR, _OPEN),
    "listen": (_FD, _INT), "accept": (_FD, _PTR, _PTR), "accept4": (_FD, _PTR, _PTR, _INT),
    "shutdown": (_FD, _INT), "sendmsg": (_FD, _PTR, _INT), "recvmsg": (_FD, _PTR, _INT),
    "recvfrom": (_FD, _PTR, _INT, _INT, _PTR, _PTR),
    "getsockopt": (_FD, _INT, _INT, _PTR, _PTR), "setsockopt": (_FD, _INT, _INT, _PTR, _INT),
    "getsockname": (_FD, _PTR, _PTR), "getpeername": (_FD, _PTR, _PTR),
    "nanosleep": (_PTR, _PTR), "clock_nanosleep": (_INT, _INT, _PTR, _PTR),
    "wait4": (_INT, _PTR, _INT, _PTR), "getrandom": (_PTR, _INT, _INT),
    "munmap": (_PTR, _INT), "madvise": (_PTR, _INT, _INT),
    "prlimit64": (_INT, _INT, _PTR, _PTR), "setrlimit": (_INT, _PTR),
    "ptrace": (_INT, _INT, _PTR, _PTR), "setuid": (_INT,), "setgid": (_INT,),
    "mount": (_PATH, _PATH, _PATH, _INT, _PTR), "umount2": (_PATH, _INT),
    "pivot_root": (_PATH, _PATH), "seccomp": (_INT, _INT, _PTR),
    "prctl": (_INT, _INT, _INT, _INT, _INT), "sched_getaffinity": (_INT, _INT, _PTR),
    "pidfd_open": (_INT, _INT), "pidfd_getfd": (_FD, _FD, _INT),
    "memfd_create": (_PATH, _INT), "inotify_add_watch": (_FD, _PATH, _INT),
    "getxattr": (_PATH, _PATH, _PTR, _INT), "setxattr": (_PATH, _PATH, _PTR, _INT, _INT),
    "fchdir": (_FD,), "fchmod": (_FD, _MODE), "fchown": (_FD, _INT, _INT),
    "ftruncate": (_FD, _INT), "fsync": (_FD,), "flock": (_FD, _INT),
}  # fmt: skip

_MAX_PATH: Final = 4096


def _names(prefix: str, source: object, *, skip: Iterable[str] = ()) -> dict[int, str]:
    out: dict[int, str] = {}
    for name in dir(source):
        value = getattr(source, name)
        if name.startswith(prefix) and isinstance(value, int) and name not in skip:
            out.setdefault(int(value), name)
    return out


_OPEN_FLAGS: Final = {
    bit: name
    for bit, name in sorted(_names("O_", os, skip=("O_RDONLY", "O_ACCMODE", "O_RSYNC")).items())
    if bit and bit & (bit - 1) == 0  # one bit each; O_SYNC's two bits are spelled below
} | {os.O_SYNC: "O_SYNC"}
_ACCMODE: Final = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}
_CLONE_FLAGS: Final = {
    0x100: "CLONE_VM", 0x200: "CLONE_FS", 0x400: "CLONE_FILES", 0x800: "CLONE_SIGHAND",
    0x1000: "CLONE_PIDFD", 0x2000: "CLONE_PTRACE", 0x4000: "CLONE_VFORK",
    0x8000: "CLONE_PARENT", 0x10000: "CLONE_THREAD", 0x20000: "CLONE_NEWNS",
    0x40000: "CLONE_SYSVSEM", 0x80000: "CLONE_SETTLS", 0x100000: "CLONE_PARENT_SETTID",
    0x200000: "CLONE_CHILD_CLEARTID", 0x400000: "CLONE_DETACHED", 0x800000: "CLONE_UNTRACED",
    0x1000000: "CLONE_CHILD_SETTID", 0x2000000: "CLONE_NEWCGROUP", 0x4000000: "CLONE_NEWUTS",
    0x8000000: "CLONE_NEWIPC", 0x10000000: "CLONE_NEWUSER", 0x20000000: "CLONE_NEWPID",
    0x40000000: "CLONE_NEWNET", 0x80000000: "CLONE_IO",
}  # fmt: skip
_AT_FLAGS: Final = {0x100: "AT_SYMLINK_NOFOLLOW", 0x200: "AT_REMOVEDIR",
                    0x400: "AT_SYMLINK_FOLLOW", 0x800: "AT_NO_AUTOMOUNT",
                    0x1000: "AT_EMPTY_PATH", 0x8000: "AT_RECURSIVE"}  # fmt: skip
_PROT_FLAGS: Final = {1: "PROT_READ", 2: "PROT_WRITE", 4: "PROT_EXEC"}
_MAP_FLAGS: Final = {0x01: "MAP_SHARED", 0x02: "MAP_PRIVATE", 0x10: "MAP_FIXED",
                     0x20: "MAP_ANONYMOUS", 0x100: "MAP_GROWSDOWN", 0x4000: "MAP_NORESERVE",
                     0x8000: "MAP_POPULATE", 0x20000: "MAP_STACK",
                     0x100000: "MAP_FIXED_NOREPLACE"}  # fmt: skip
_ACCESS_FLAGS: Final = {1: "X_OK", 2: "W_OK", 4: "R_OK"}
_FAMILIES: Final = _names("AF_", socket)
_TYPES: Final = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 4: "SOCK_RDM",
                 5: "SOCK_SEQPACKET", 6: "SOCK_DCCP", 10: "SOCK_PACKET"}  # fmt: skip
_SOCK_FLAGS: Final = {os.O_NONBLOCK: "SOCK_NONBLOCK", os.O_CLOEXEC: "SOCK_CLOEXEC"}
_SIGNALS: Final = {int(s): s.name for s in signal.Signals}
_IOCTLS: Final = {0x5401: "TCGETS", 0x5402: "TCSETS", 0x5412: "TIOCSTI", 0x541B: "FIONREAD",
                  0x541C: "TIOCLINUX", 0x5421: "FIONBIO", 0x5451: "FIOCLEX",
                  0x5450: "FIONCLEX", 0x5452: "FIOASYNC", 0x40045436: "TIOCSIG",
                  0x8901: "FIOSETOWN", 0x8902: "SIOCSPGRP", 0x540F: "TIOCGPGRP",
                  0x5413: "TIOCGWINSZ"}  # fmt: skip
_FCNTLS: Final = {0: "F_DUPFD", 1: "F_GETFD", 2: "F_SETFD", 3: "F_GETFL", 4: "F_SETFL",
                  5: "F_GETLK", 6: "F_SETLK", 7: "F_SETLKW", 8: "F_SETOWN", 9: "F_GETOWN",
                  10: "F_SETSIG", 11: "F_GETSIG", 15: "F_SETOWN_EX", 16: "F_GETOWN_EX",
                  1030: "F_DUPFD_CLOEXEC", 1031: "F_SETPIPE_SZ", 1032: "F_GETPIPE_SZ",
                  1033: "F_ADD_SEALS", 1034: "F_GET_SEALS"}  # fmt: skip
_AT_FDCWD: Final = -100
_U64: Final = (1 << 64) - 1


def describe(nr: int, args: Sequence[int], read: Reader | None = None) -> str:
    """The call ``nr(*args)`` in words; pointers read through ``read`` where given."""
    name = name_of(nr)
    args = (*args, *(0,) * (6 - len(args)))  # a notification always carries six
    kinds = SIGNATURES.get(name)
    if kinds is None:
        shown = [_number(a) for a in args[: _arity(args)]]
    else:
        shown = [_argument(kind, args[i], read) for i, kind in enumerate(kinds)]
    return f"{name}({', '.join(shown)})"


def _arity(args: Sequence[int]) -> int:
    """The arguments worth showing of an unknown call: up to the last one not zero."""
    return max((i + 1 for i, a in enumerate(args) if a), default=0)


def _argument(kind: int, value: int, read: Reader | None) -> str:
    if kind == _DIRFD:
        return "AT_FDCWD" if _signed32(value) == _AT_FDCWD else str(_signed32(value))
    if kind == _FD:
        return str(_signed32(value))
    if kind == _PATH:
        return _path(value, read)
    if kind == _ADDR:
        return _address(value, read)
    spell = _SPELLERS.get(kind)
    return spell(value) if spell is not None else _number(value)


def _path(address: int, read: Reader | None) -> str:
    if address == 0:
        return "NULL"
    data = read(address, _MAX_PATH) if read is not None else None
    if data is None:
        return _number(address)
    text = data.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _address(address: int, read: Reader | None) -> str:
    """A sockaddr: its family, and the port and host or the path."""
    data = read(address, 110) if read is not None and address else None
    if not data or len(data) < 2:
        return _number(address)
    family = int.from_bytes(data[:2], "little")
    if family == socket.AF_INET and len(data) >= 8:
        port = int.from_bytes(data[2:4], "big")
        return f"{{AF_INET, {socket.inet_ntop(socket.AF_INET, data[4:8])}:{port}}}"
    if family == socket.AF_INET6 and len(data) >= 24:
        port = int.from_bytes(data[2:4], "big")
        return f"{{AF_INET6, [{socket.inet_ntop(socket.AF_INET6, data[8:24])}]:{port}}}"
    if family == socket.AF_UNIX:
        path = data[2:].split(b"\0", 1)[0] if data[2:3] != b"\0" else b"@" + data[3:].rstrip(b"\0")
        return f'{{AF_UNIX, "{path.decode("utf-8", "backslashreplace")}"}}'
    return f"{{{_FAMILIES.get(family, family)}}}"


def _open_flags(value: int) -> str:
    value &= 0xFFFFFFFF
    access = _ACCMODE.get(value & os.O_ACCMODE, f"{value & os.O_ACCMODE:#o}")
    rest = _flags(value & ~os.O_ACCMODE, _OPEN_FLAGS)
    return access if rest == "0" else f"{access}|{rest}"


def _socket_type(value: int) -> str:
    base = _TYPES.get(value & 0xF, str(value & 0xF))
    rest = _flags(value & ~0xF, _SOCK_FLAGS)
    return base if rest == "0" else f"{base}|{rest}"


def _flags(value: int, names: dict[int, str]) -> str:
    value &= _U64
    parts, left = [], value
    for bit, name in sorted(names.items(), key=lambda item: (-item[0].bit_count(), item[0])):
        if bit and left & bit == bit:
            parts.append(name)
            left &= ~bit
    if left:
        parts.append(hex(left))
    return "|".join(parts) or "0"


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _number(value: int) -> str:
    value &= _U64
    if value > 1 << 63:
        return str(value - (1 << 64))  # a negative int, as the caller passed it
    return hex(value) if value > 0xFFFF else str(value)


def _named(table: dict[int, str]) -> Callable[[int], str]:
    return lambda value: table.get(_signed32(value), _number(value))


_SPELLERS: Final[dict[int, Callable[[int], str]]] = {
    _OPEN: _open_flags,
    _MODE: lambda v: f"0{v & 0o7777:o}" if v & 0o7777 else "0",
    _CLONE: lambda v: (
        _flags(v & 0xFFFFFF00, _CLONE_FLAGS)
        + (f"|{_SIGNALS.get(v & 0xFF, v & 0xFF)}" if v & 0xFF else "")
    ),
    _FAMILY: _named(_FAMILIES),
    _SOCKTYPE: _socket_type,
    _AT: lambda v: _flags(v, _AT_FLAGS),
    _SIGNAL: _named(_SIGNALS),
    _PROT: lambda v: _flags(v, _PROT_FLAGS) if v else "PROT_NONE",
    _MAP: lambda v: _flags(v, _MAP_FLAGS),
    _ACCESS: lambda v: _flags(v, _ACCESS_FLAGS) if v else "F_OK",
    _IOCTL: lambda v: _IOCTLS.get(v & 0xFFFFFFFF, _number(v)),
    _FCNTL: _named(_FCNTLS),
    _INT: _number,
    _PTR: lambda v: "NULL" if v == 0 else hex(v & _U64),
}


#: What each argument of the calls in SIGNATURES holds, for those who spell values.
SIGNATURE_KINDS: Final = SIGNATURES


def spell_argument(kind: int, value: int) -> str:
    """``value`` as an argument of ``kind`` (one of SIGNATURE_KINDS's) is written."""
    if kind == _DIRFD:
        return "AT_FDCWD" if _signed32(value) == _AT_FDCWD else str(_signed32(value))
    if kind in (_FD, _PATH, _ADDR):
        return _number(value)
    spell = _SPELLERS.get(kind)
    return spell(value) if spell is not None else _number(value)


def named_values() -> dict[str, int]:
    """Every name this module spells a value with, to that value (``isolates explain
    --check`` reads calls written with them)."""
    out: dict[str, int] = {}
    tables = (_OPEN_FLAGS, _ACCMODE, _CLONE_FLAGS, _AT_FLAGS, _PROT_FLAGS, _MAP_FLAGS,
              _ACCESS_FLAGS, _FAMILIES, _TYPES, _SOCK_FLAGS, _SIGNALS, _IOCTLS,
              _FCNTLS)  # fmt: skip
    for table in tables:
        out.update({name: value for value, name in table.items()})
    return {**out, "AT_FDCWD": _AT_FDCWD, "NULL": 0, "PROT_NONE": 0, "F_OK": 0}


def memory_reader(pid: int) -> Reader:
    """Reads from /proc/PID/mem (the caller's own view of process ``pid``: a parent's of
    its child, root's of anyone); None where the read fails."""

    def read(address: int, size: int) -> bytes | None:
        try:
            with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
                mem.seek(address)
                return mem.read(size)
        except (OSError, OverflowError, ValueError):
            return None

    return read

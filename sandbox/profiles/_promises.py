"""The syscall half of every pledge promise: one RuleSet per promise, named after it.

Each builder takes the whole set of promises, because some rules depend on the others
(opening read-write needs rpath *and* wpath; creating needs cpath and the access mode's
promise). The paths half (Landlock) is in _pledge.py. Numbers are Linux's UAPI values for
x86_64 and aarch64 (asm-generic/ioctls.h, fcntl.h, in.h, in6.h).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterable
from typing import Final

from .._builtins_io import SystemIO
from .._builtins_net import Networking
from .._builtins_proc import Pipes, Processes, Signals, Threads, Time
from .._rules import Action, Arg, Rule
from .._ruleset import RuleSet
from .._uapi import AT_EMPTY_PATH, F_SETOWN, O_TMPFILE_BIT, SOCK_TYPE_MASK

Promises = frozenset[str]

PROT_EXEC: Final = 0x4
O_TMPFILE: Final = O_TMPFILE_BIT
#: The open flags that decide which promise an open needs: access mode, create, tmpfile.
OPEN_KIND: Final = os.O_ACCMODE | os.O_CREAT | O_TMPFILE

#: ioctls stdio allows: FIONREAD, FIONBIO, FIOCLEX, FIONCLEX (as OpenBSD), and TCGETS,
#: which is how Linux's isatty(3) asks (OpenBSD's isatty uses fcntl F_ISATTY, in stdio).
STDIO_IOCTLS: Final = (0x541B, 0x5421, 0x5451, 0x5450, 0x5401)
#: tty's ioctls: termios get/set (TCGETS, TCSETS, TCSETSW, TCSETSF), tcsendbreak/tcdrain
#: (TCSBRK), tcflow (TCXONC), tcflush (TCFLSH), foreground process group (TIOCGPGRP,
#: TIOCSPGRP), output queue (TIOCOUTQ), window size (TIOCGWINSZ, TIOCSWINSZ), session
#: (TIOCGSID). Never TIOCSTI (typing into the terminal) nor TIOCSCTTY.
TTY_IOCTLS: Final = (0x5401, 0x5402, 0x5403, 0x5404, 0x5409, 0x540A, 0x540B, 0x540F,
                     0x5410, 0x5411, 0x5413, 0x5414, 0x5429)  # fmt: skip
#: tape: MTIOCTOP and MTIOCGET (the st(4) driver's, as OpenBSD's).
TAPE_IOCTLS: Final = (0x40086D01, 0x80306D02)
#: stdio's syscalls allowed outright, beyond the builtin RuleSets it takes whole.
STDIO_CALLS: Final = (
    "dup", "dup2", "dup3", "lseek", "fstat", "ftruncate", "eventfd2", "madvise", "msync",
    "mincore", "munmap", "mremap", "restart_syscall", "set_tid_address", "getppid", "getuid",
    "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "getpgid",
    "getpgrp", "getsid", "getrlimit", "getrusage", "umask", "uname", "sysinfo", "times",
    "shutdown", "recvfrom", "recvmsg", "sendmsg", "recvmmsg", "sendmmsg",
)  # fmt: skip
#: fcntl commands stdio allows: F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL,
#: F_DUPFD_CLOEXEC, F_GETPIPE_SZ, F_GET_SEALS. Locks are flock's.
STDIO_FCNTL: Final = (0, 1, 2, 3, 4, 1030, 1032, 1034)
#: F_GETLK, F_SETLK, F_SETLKW and their open-file-description twins.
LOCK_FCNTL: Final = (5, 6, 7, 36, 37, 38)
#: setsockopt option names that are multicast (mcast's): IPPROTO_IP 32-49
#: (IP_MULTICAST_IF ... IP_MULTICAST_ALL, MCAST_*), IPPROTO_IPV6 17-21
#: (IPV6_MULTICAST_IF ... IPV6_DROP_MEMBERSHIP), 29 (IPV6_MULTICAST_ALL) and 42-48 (MCAST_*).
IP_MCAST: Final = range(32, 50)
IPV6_MCAST: Final = (*range(17, 22), 29, *range(42, 49))
_SOL_SOCKET, _IP, _IPV6, _TCP, _UDP = socket.SOL_SOCKET, 0, 41, 6, 17
_UINT: Final = 0xFFFFFFFF  # uid_t and gid_t are 32-bit: compare the low word


def rules_of(*rulesets: RuleSet, only: Iterable[str] = ()) -> list[Rule]:
    """The rules of builtin RuleSets, optionally only those on the syscalls in ``only``."""
    keep = set(only)
    return [r for rs in rulesets for r in rs.rules() if not keep or r.syscall in keep]


def each(*syscalls: str) -> list[Rule]:
    """Each syscall allowed outright."""
    return [Rule(s) for s in syscalls]


def ioctls(commands: Iterable[int]) -> list[Rule]:
    return [Rule("ioctl", Arg(1) == cmd) for cmd in commands]


def opens(promises: Promises) -> list[Rule]:
    """open/openat rules for the access modes and creation the promises allow together.

    rpath: read-only (no write access, O_CREAT, O_TRUNC, O_APPEND, O_TMPFILE); wpath:
    write-only; both: read-write; cpath adds O_CREAT to each allowed mode (creat(2) is
    write-only with O_CREAT). openat2 keeps its flags behind a pointer: never allowed.
    """
    r, w, c = ("rpath" in promises), ("wpath" in promises), ("cpath" in promises)
    kinds = [os.O_WRONLY] * w + [os.O_RDWR] * (r and w)
    kinds += [k | os.O_CREAT for k in [os.O_RDONLY] * r + kinds] if c else []
    rules = [Rule("open", Arg(1) & OPEN_KIND == k) for k in kinds]
    rules += [Rule("openat", Arg(2) & OPEN_KIND == k) for k in kinds]
    if r:
        rules += rules_of(SystemIO.nothing().allow_open_readonly())
    if c and w:
        rules.append(Rule("creat"))
    return rules


def stdio(promises: Promises) -> list[Rule]:
    io = SystemIO.nothing().allow_read().allow_write().allow_close().allow_poll().allow_sync()
    return [
        *rules_of(io, Pipes.nothing().allow_create(), Time.nothing().allow_sleep().allow_timers()),
        *rules_of(Signals.everything(), Threads.nothing().allow_create()),
        *rules_of(Processes.nothing().allow_wait()),
        *each(*STDIO_CALLS),
        *[Rule("fcntl", Arg(1) == cmd) for cmd in STDIO_FCNTL],
        *ioctls(STDIO_IOCTLS),
        Rule("newfstatat", Arg(3) & AT_EMPTY_PATH == AT_EMPTY_PATH),  # glibc's fstat()
        Rule("statx", Arg(2) & AT_EMPTY_PATH == AT_EMPTY_PATH),
        Rule("prlimit64", Arg(2) == 0),  # getrlimit(): no new limit
        Rule("sendto", Arg(4) == 0),  # connected sockets only: no address
        Rule("socketpair", Arg(0) == socket.AF_UNIX),
        Rule("getsockopt", Arg(1) == _SOL_SOCKET),
        Rule("setsockopt", Arg(1) == _SOL_SOCKET),
    ]


def rpath(promises: Promises) -> list[Rule]:
    metadata = SystemIO.nothing().allow_metadata()
    listing_and_xattrs = each(
        "getdents",
        "chdir",
        "fchdir",
        "getxattr",
        "lgetxattr",
        "fgetxattr",
        "listxattr",
        "llistxattr",
        "flistxattr",
        "fadvise64",
    )
    return [*opens(promises), *rules_of(metadata), *listing_and_xattrs]


def wpath(promises: Promises) -> list[Rule]:
    return [*opens(promises), *each("truncate", "fallocate", "getcwd")]


def cpath(promises: Promises) -> list[Rule]:
    io = SystemIO.nothing().allow_unlink().allow_mkdir().allow_rename().allow_links()
    return [*opens(promises), *rules_of(io), Rule("getcwd")]


def dpath(promises: Promises) -> list[Rule]:
    return each("mknod", "mknodat")


def tmppath(promises: Promises) -> list[Rule]:
    """Any open (Landlock confines it to /tmp), unlink, mkdir, rmdir, stat."""
    return each(
        "open",
        "openat",
        "unlink",
        "unlinkat",
        "mkdir",
        "mkdirat",
        "rmdir",
        "stat",
        "lstat",
        "newfstatat",
        "statx",
        "getdents64",
    )


_INET: Final = (socket.AF_INET, socket.AF_INET6)
_TYPE_MASK: Final = SOCK_TYPE_MASK


def _sockets(families: Iterable[int], kinds: Iterable[int], protos: Iterable[int]) -> list[Rule]:
    return [
        Rule("socket", Arg(0) == f, Arg(1) & _TYPE_MASK == k, Arg(2) == p)
        for f in families
        for k in kinds
        for p in protos
    ]


def _setsockopt_not_multicast() -> list[Rule]:
    rules = [Rule("setsockopt", Arg(1) == level) for level in (_SOL_SOCKET, _TCP, _UDP)]
    rules += [Rule("setsockopt", Arg(1) == _IP, Arg(2) < IP_MCAST.start)]
    rules += [Rule("setsockopt", Arg(1) == _IP, Arg(2) >= IP_MCAST.stop)]
    rules += [Rule("setsockopt", Arg(1) == _IPV6, Arg(2) < min(IPV6_MCAST))]
    rules += [Rule("setsockopt", Arg(1) == _IPV6, Arg(2) > max(IPV6_MCAST))]
    between = set(range(min(IPV6_MCAST), max(IPV6_MCAST))) - set(IPV6_MCAST)
    return rules + [Rule("setsockopt", Arg(1) == _IPV6, Arg(2) == o) for o in sorted(between)]


def inet(promises: Promises) -> list[Rule]:
    """Networking's TCP and UDP servers and clients, without its read/write/ioctl/fcntl
    (stdio's), with setsockopt minus the multicast options (mcast's)."""
    net = Networking.everything()
    calls = ("bind", "listen", "accept", "accept4", "connect", "sendto", "getsockopt")
    inet_sockets = [r for r in rules_of(net, only=["socket"]) if r.conditions[0].value in _INET]
    return [*inet_sockets, *rules_of(net, only=calls), *_setsockopt_not_multicast()]


def mcast(promises: Promises) -> list[Rule]:
    return [
        Rule("setsockopt", Arg(1) == _IP, Arg(2) >= IP_MCAST.start),
        Rule("setsockopt", Arg(1) == _IPV6, Arg(2) >= min(IPV6_MCAST)),
    ]


def unix(promises: Promises) -> list[Rule]:
    net = Networking.nothing().allow_unix_servers().allow_unix_clients()
    calls = ("socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "sendto")
    return rules_of(net, only=calls)


def dns(promises: Promises) -> list[Rule]:
    """UDP and TCP sockets to reach name servers, reading the resolver's files (Landlock
    confines them), stat (glibc checks whether resolv.conf changed); nscd and rtnetlink
    (AI_ADDRCONFIG) are refused with EACCES, so glibc falls back, unless unix allows them."""
    stream_dgram = (socket.SOCK_DGRAM, socket.SOCK_STREAM)
    return [
        *_sockets(_INET, stream_dgram, (0, socket.IPPROTO_UDP, socket.IPPROTO_TCP)),
        *each("connect", "sendto", "newfstatat", "stat"),
        Rule("setsockopt", Arg(1) == _IP, Arg(2) == 11),  # IP_RECVERR
        Rule("setsockopt", Arg(1) == _IPV6, Arg(2) == 25),  # IPV6_RECVERR
        *rules_of(SystemIO.nothing().allow_open_readonly()),
    ]


def getpw(promises: Promises) -> list[Rule]:
    """Reading /etc/passwd, /etc/group and the NSS configuration (Landlock confines the
    opens), and stat: glibc checks whether nsswitch.conf changed."""
    return [*rules_of(SystemIO.nothing().allow_open_readonly()), *each("newfstatat", "stat")]


def fattr(promises: Promises) -> list[Rule]:
    """chmod family without setuid/setgid/sticky bits, utimes family, xattrs, and chown
    family to the caller's own uid/gid or -1 (no change) only."""
    no_suid = 0o7000
    rules = [Rule(s, Arg(1) & no_suid == 0) for s in ("chmod", "fchmod")]
    rules += [Rule(s, Arg(2) & no_suid == 0) for s in ("fchmodat", "fchmodat2")]
    rules += each(
        "utimensat",
        "utime",
        "utimes",
        "futimesat",
        "setxattr",
        "lsetxattr",
        "fsetxattr",
        "removexattr",
        "lremovexattr",
        "fremovexattr",
    )
    return rules + _own_chown()


def _own_chown() -> list[Rule]:
    uids, gids = {_UINT, os.getuid(), os.geteuid()}, {_UINT, os.getgid(), os.getegid()}
    where = {"chown": 1, "fchown": 1, "lchown": 1, "fchownat": 2}
    return [
        Rule(s, Arg(i) & _UINT == u, Arg(i + 1) & _UINT == g)
        for s, i in where.items()
        for u in sorted(uids)
        for g in sorted(gids)
    ]


def chown(promises: Promises) -> list[Rule]:
    return each("chown", "fchown", "lchown", "fchownat")


def flock(promises: Promises) -> list[Rule]:
    return [Rule("flock"), *(Rule("fcntl", Arg(1) == cmd) for cmd in LOCK_FCNTL)]


def tty(promises: Promises) -> list[Rule]:
    """The tty ioctls, and opening /dev/tty (Landlock confines the open to it)."""
    modes = (os.O_RDONLY, os.O_WRONLY, os.O_RDWR)
    return [
        *ioctls(TTY_IOCTLS),
        *(Rule("openat", Arg(2) & OPEN_KIND == m) for m in modes),
        *(Rule("open", Arg(1) & OPEN_KIND == m) for m in modes),
    ]


def proc(promises: Promises) -> list[Rule]:
    """OpenBSD's proc: fork, sessions, signals and priorities of other processes too,
    and F_SETOWN (a descriptor that signals its owner)."""
    procs = Processes.nothing().allow_fork().allow_sessions()
    signals_and_limits = each(
        "kill",
        "tgkill",
        "tkill",
        "rt_sigqueueinfo",
        "rt_tgsigqueueinfo",
        "pidfd_open",
        "pidfd_send_signal",
        "prlimit64",
        "setrlimit",
        "sched_getparam",
        "sched_getscheduler",
        "sched_get_priority_max",
        "sched_get_priority_min",
        "sched_setaffinity",
        "getpriority",
        "setpriority",
    )
    return [*rules_of(procs), Rule("fcntl", Arg(1) == F_SETOWN), *signals_and_limits]


def exec_(promises: Promises) -> list[Rule]:
    """execve, execveat, and arch_prctl: the new image inherits the filter, and the
    dynamic loader sets up thread-local storage with it (x86_64) before main runs."""
    return [*rules_of(Processes.nothing().allow_exec()), Rule("arch_prctl")]


def prot_exec_absent() -> list[Rule]:
    """Without prot_exec: new mappings and protections never executable. These replace
    PythonRuntime's unconditional mmap and mprotect."""
    return [Rule("mmap", Arg(2) & PROT_EXEC == 0), Rule("mprotect", Arg(2) & PROT_EXEC == 0)]


def settime(promises: Promises) -> list[Rule]:
    return rules_of(Time.nothing().allow_set_time())


def id_(promises: Promises) -> list[Rule]:
    return each(
        "setuid",
        "setgid",
        "setreuid",
        "setregid",
        "setresuid",
        "setresgid",
        "setgroups",
        "setfsuid",
        "setfsgid",
        "capget",
        "capset",
        "prlimit64",
        "setrlimit",
        "getpriority",
        "setpriority",
    )


def tape(promises: Promises) -> list[Rule]:
    return ioctls(TAPE_IOCTLS)


def error(promises: Promises) -> list[Rule]:
    """Nothing more: the default turns to ENOSYS. clone3 is named with the ENOSYS every
    policy gives it, so the Policy does not add a rule equal to its default."""
    return [Rule("clone3", action=Action.ERRNO(errno.ENOSYS))]


def nothing(promises: Promises) -> list[Rule]:
    """Promises with no syscalls of their own on Linux (see _tables.NOTES for why)."""
    return []


#: Every promise with a Linux meaning and the builder of its rules.
BUILDERS: Final[dict[str, Callable[[Promises], list[Rule]]]] = {
    "stdio": stdio, "rpath": rpath, "wpath": wpath, "cpath": cpath, "dpath": dpath,
    "tmppath": tmppath, "inet": inet, "mcast": mcast, "fattr": fattr, "chown": chown,
    "flock": flock, "unix": unix, "dns": dns, "getpw": getpw, "sendfd": nothing,
    "recvfd": nothing, "tape": tape, "tty": tty, "proc": proc, "exec": exec_,
    "prot_exec": nothing, "settime": settime, "id": id_, "unveil": nothing, "error": error,
}  # fmt: skip

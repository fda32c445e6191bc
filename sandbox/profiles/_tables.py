"""The mapping tables of docs/profiles.md, rendered from the rules themselves.

``pledge_table()`` and ``systemd_table()`` return Markdown; the docs embed their output
and a test checks the docs still match, so the tables cannot drift from the code.
"""

from __future__ import annotations

from typing import Final

from .._rules import Rule
from .._syscalls import exists
from ._pledge import NO_LINUX_MEANING, reference
from ._promises import BUILDERS, prot_exec_absent
from ._systemd import GUARDED, groups

#: What each promise grants through Landlock, when Landlock is in use (a path-bound
#: promise or unveil is given; otherwise rpath, wpath... are not limited to paths).
PATHS: Final = {
    "rpath": '"/" (or unveiled "r"): READ_FILE, READ_DIR, IOCTL_DEV',
    "wpath": '"/" (or unveiled "w"): WRITE_FILE, TRUNCATE, IOCTL_DEV',
    "cpath": '"/" (or unveiled "c"): MAKE_REG, MAKE_DIR, MAKE_SYM, REMOVE_FILE, REMOVE_DIR, '
    "REFER; MAKE_SOCK with unix",
    "dpath": '"/" (or unveiled "c"): MAKE_FIFO, MAKE_CHAR, MAKE_BLOCK, MAKE_SOCK',
    "tmppath": "/tmp: read, write, truncate, create and remove files and directories, list",
    "dns": "read: /etc/resolv.conf (and its target's directory), hosts, host.conf, "
    "nsswitch.conf, gai.conf, services, protocols, ld.so.cache, the hosts NSS modules",
    "getpw": "read: /etc/passwd, /etc/group, /etc/nsswitch.conf, /etc/ld.so.cache",
    "tty": "/dev/tty: READ_FILE, WRITE_FILE, IOCTL_DEV",
    "exec": '"/" (or unveiled "x"): EXECUTE (and READ_FILE with rpath or unveiled "x")',
}

#: Where the Linux mapping differs from OpenBSD's promise.
NOTES: Final = {
    "stdio": "ioctl also allows TCGETS (Linux's isatty); sendmsg may carry an address "
    "(seccomp cannot read msghdr); sleeping, timers, threads (clone with CLONE_THREAD), "
    "wait and signals to this process are here as on OpenBSD",
    "rpath": "stat, readlink and getdents are never limited to paths (Landlock does not "
    "cover them)",
    "wpath": "read-write opens need rpath too, as on OpenBSD",
    "cpath": "O_CREAT needs the access mode's promise too (rpath, wpath)",
    "dpath": "creating devices still needs CAP_MKNOD",
    "tmppath": "also mkdir/rmdir (mkdtemp); stat is not limited to /tmp",
    "inet": "setsockopt: every level except the multicast options (mcast's)",
    "mcast": "IPPROTO_IP options 32-49, IPPROTO_IPV6 17-21, 29, 42-48",
    "fattr": "chmod with setuid/setgid/sticky bits is refused (OpenBSD clears them); "
    "chown only to -1 or the caller's own uid/gid as the policy is built; xattrs too",
    "chown": "as OpenBSD; giving files away still needs CAP_CHOWN",
    "flock": "as OpenBSD",
    "unix": "connect to any socket path (Landlock does not restrict connect)",
    "dns": "nscd and rtnetlink sockets are refused with EACCES so glibc falls back; "
    "needs a lazy idna import done before pledging",
    "getpw": "glibc's files backend; nscd refused (EACCES); other NSS modules (systemd, "
    "sss, ldap) need dlopen (prot_exec) and more",
    "sendfd": "no effect: SCM_RIGHTS hides in sendmsg's buffers, which seccomp cannot read",
    "recvfd": "no effect: SCM_RIGHTS hides in recvmsg's buffers, which seccomp cannot read",
    "tape": "the same two st(4) ioctls Linux has",
    "tty": "never TIOCSTI (injecting input); opening /dev/tty only under Landlock",
    "proc": "clone without namespace flags; pidfds",
    "exec": "the exec'd image inherits every filter (OpenBSD starts it unpledged): a "
    "dynamic program needs rpath and prot_exec to start; arch_prctl for its loader",
    "prot_exec": "absent: mmap/mprotect with PROT_EXEC are killed; ctypes callbacks "
    "(libffi) and dlopen need it",
    "settime": "the kernel still wants CAP_SYS_TIME",
    "id": "capset too: capabilities are credentials on Linux",
    "unveil": "no effect: Landlock can always be tightened (PythonRuntime allows it)",
    "error": "default action ENOSYS instead of SIGSYS",
}


#: The argument conditions of each promise's conditional rules, in words (a test checks
#: that every syscall a promise allows only conditionally is named here).
CONDITIONS: Final = {
    "stdio": "fcntl: F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC, "
    "F_GETPIPE_SZ, F_GET_SEALS; ioctl: FIONREAD, FIONBIO, FIOCLEX, FIONCLEX, TCGETS; "
    "newfstatat, statx: with AT_EMPTY_PATH (fstat of a descriptor); prlimit64: no new "
    "limit; sendto: no address; socketpair: AF_UNIX; getsockopt, setsockopt: SOL_SOCKET; "
    "kill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo: this process; clone: a thread "
    "(CLONE_THREAD and CLONE_VM, no namespace flag)",
    "rpath": "open, openat: read-only (no O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND, O_TMPFILE)",
    "wpath": "open, openat: O_WRONLY, and O_RDWR with rpath (no O_CREAT, O_TMPFILE)",
    "cpath": "open, openat: O_CREAT added to the modes rpath and wpath allow; creat: with wpath",
    "inet": "socket: AF_INET or AF_INET6, SOCK_STREAM (protocol 0 or TCP) or SOCK_DGRAM "
    "(0 or UDP); setsockopt: SOL_SOCKET, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_IP and "
    "IPPROTO_IPV6 except their multicast options",
    "mcast": "setsockopt: IPPROTO_IP options from 32 (IP_MULTICAST_IF), IPPROTO_IPV6 "
    "options from 17 (IPV6_MULTICAST_IF)",
    "fattr": "chmod, fchmod, fchmodat, fchmodat2: no setuid, setgid or sticky bit; chown, "
    "fchown, lchown, fchownat: uid and gid each -1 or the caller's own (when the policy "
    "is built)",
    "flock": "fcntl: F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW",
    "unix": "socket, socketpair: AF_UNIX, SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET",
    "dns": "socket: AF_INET or AF_INET6, SOCK_DGRAM or SOCK_STREAM; setsockopt: "
    "IP_RECVERR, IPV6_RECVERR; open, openat: read-only; socket AF_NETLINK, and AF_UNIX "
    "(nscd) unless unix is promised: EACCES",
    "getpw": "open, openat: read-only; socket AF_UNIX (nscd) unless unix is promised: EACCES",
    "tape": "ioctl: MTIOCTOP, MTIOCGET",
    "tty": "ioctl: TCGETS, TCSETS, TCSETSW, TCSETSF, TCSBRK, TCXONC, TCFLSH, TIOCGPGRP, "
    "TIOCSPGRP, TIOCOUTQ, TIOCGWINSZ, TIOCSWINSZ, TIOCGSID; open, openat: without O_CREAT",
    "proc": "clone: no namespace flag; fcntl: F_SETOWN",
    "prot_exec": "(when absent) mmap, mprotect: without PROT_EXEC",
}


def promise_rules(name: str) -> list[Rule]:
    """The rules ``name`` brings when promised alone (prot_exec: the rules of its absence)."""
    rules = prot_exec_absent() if name == "prot_exec" else BUILDERS[name](frozenset({name}))
    return [r for r in dict.fromkeys(rules) if exists(r.syscall)]


def pledge_table() -> str:
    """One row per promise: OpenBSD's meaning (pledge(2)), its syscalls (x86_64 names)
    outright and under conditions, its Landlock paths, and how Linux differs."""
    openbsd = reference()
    rows = [
        "| promise | OpenBSD | syscalls | with conditions | Landlock paths | on Linux |",
        "|---|---|---|---|---|---|",
    ]
    for name in BUILDERS:
        rules = promise_rules(name)
        outright = ", ".join(_outright(r) for r in rules if not r.conditions) or "-"
        cells = (
            f"`{name}`",
            openbsd[name],
            outright,
            CONDITIONS.get(name, "-"),
            PATHS.get(name, "-"),
            NOTES.get(name, ""),
        )
        rows.append("| " + " | ".join(cells) + " |")
    for name, why in NO_LINUX_MEANING.items():
        rows.append(f"| `{name}` | {openbsd[name]} | PolicyError unless ignored | - | - | {why} |")
    return "\n".join(rows) + "\n"


def _outright(rule: Rule) -> str:
    return rule.syscall if rule.action.kind == "allow" else f"{rule.syscall} ({rule.action!r})"


def systemd_table() -> str:
    """One row per systemd group: its help text, the groups it includes, its own
    syscalls that exist on this architecture, and its expanded size here."""
    rows = [
        "| group | meaning | includes | syscalls (this architecture) | total |",
        "|---|---|---|---|---|",
    ]
    table = groups()
    for name, group in table.items():
        included = {s for g in group.includes for s in table[g].native()}
        own = [s + ("*" if s in GUARDED else "") for s in group.native() if s not in included]
        shown = ", ".join(own) if name != "@known" else f"every syscall ({len(own)} here)"
        includes = ", ".join(f"`{g}`" for g in group.includes)
        rows.append(f"| `{name}` | {group.help} | {includes} | {shown} | {len(group.native())} |")
    rows.append("\n\\* stays denied when it comes only through a group (see above).")
    return "\n".join(rows) + "\n"


def fill(document: str) -> str:
    """``document`` with the generated tables between their markers
    (``<!-- pledge-table -->`` ... ``<!-- /pledge-table -->``, the same for systemd)."""
    for marker, render in (("pledge-table", pledge_table), ("systemd-table", systemd_table)):
        start, end = f"<!-- {marker} -->\n", f"<!-- /{marker} -->"
        head, found, rest = document.partition(start)
        if not found or end not in rest:
            raise ValueError(f"the document has no {start.strip()} ... {end} block")
        document = head + start + render() + end + rest.split(end, 1)[1]
    return document


if __name__ == "__main__":  # python -m isolates.sandbox.profiles._tables docs/profiles.md
    import sys

    with open(sys.argv[1]) as f:
        text = fill(f.read())
    with open(sys.argv[1], "w") as f:
        f.write(text)

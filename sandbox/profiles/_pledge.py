"""OpenBSD's pledge(2) and unveil(2) on Linux: seccomp for the syscalls, Landlock for paths.

``pledge("stdio rpath inet dns")`` returns a Policy that allows what those promises allow
on OpenBSD, as closely as a seccomp filter plus a Landlock ruleset can say it. A call no
promise allows kills the process with SIGSYS (OpenBSD: an uncatchable SIGABRT, which
seccomp cannot send), or fails with ENOSYS when ``error`` is promised, as on OpenBSD.

Summary (docs/profiles.md has the full generated table, syscall by syscall)::

    promise    Linux syscalls (beyond stdio)                          Landlock paths
    stdio      read/write/close/dup/fcntl(no locks)/fstat/lseek/poll/  -
               epoll/pipe/socketpair(AF_UNIX)/send*/recv*(sendto: no
               address)/sleep/timers/own ids/wait/signals to self/
               threads/ioctl FIONREAD FIONBIO FIOCLEX FIONCLEX TCGETS
    rpath      open read-only, stat family, readlink, getdents, chdir  "/" read (or unveil r)
    wpath      open write-only (read-write with rpath), truncate       "/" write (or unveil w)
    cpath      O_CREAT opens, mkdir, rmdir, unlink, rename, link,      "/" create/remove
               symlink                                                 (or unveil c)
    dpath      mknod, mknodat (mkfifo)                                 "/" special files
    tmppath    open, unlink, mkdir, rmdir, stat                        /tmp only
    inet       socket AF_INET/AF_INET6 stream+dgram, bind, listen,     -
               accept, connect, sendto, setsockopt minus multicast
    mcast      setsockopt multicast options                            -
    fattr      chmod (no setuid/setgid/sticky), utimes, xattrs,        -
               chown to own uid/gid only
    chown      chown family outright                                   -
    flock      flock, fcntl F_*LK                                      -
    unix       socket/socketpair AF_UNIX, bind, listen, accept,        ("/" sockets with cpath)
               connect, sendto
    dns        UDP/TCP sockets, connect, sendto, read-only open, stat  resolver files
    getpw      read-only open, stat                                    passwd, group, NSS
    sendfd     (nothing more: see below)                               -
    recvfd     (nothing more: see below)                               -
    tape       ioctl MTIOCTOP, MTIOCGET                                -
    tty        tty ioctls (not TIOCSTI), open                          /dev/tty
    proc       fork/vfork/clone (no namespaces), kill, setpgid,        -
               setsid, priorities, setrlimit
    exec       execve, execveat                                        "/" execute
    prot_exec  (absent: mmap/mprotect with PROT_EXEC are denied)       -
    settime    settimeofday, clock_settime, adjtimex, clock_adjtime    -
    id         set*uid, set*gid, setgroups, setfs*id, capset, rlimits  -
    unveil     (Landlock can always be tightened: nothing more)        -
    error      denied calls fail with ENOSYS instead of killing        -

Where Linux cannot match OpenBSD exactly:

- seccomp sees registers, not memory: sendfd/recvfd cannot be told apart from stdio's
  sendmsg/recvmsg (SCM_RIGHTS is inside the message), so both are accepted and add
  nothing; stdio's sendmsg may carry an address (only sendto's is checked).
- Paths are Landlock's: it is used only when a path-bound promise (tmppath, dns, getpw,
  tty) or ``unveil`` is given; then every filesystem right is handled (what is not
  granted is denied, even if nothing is) and rpath/wpath/cpath/dpath/exec grant theirs
  beneath "/" (or only the unveiled paths). Each grant is a RuleSet named after the
  promises granting it. Landlock does not check stat, chmod, chown, utimes or xattr
  changes: stat follows the promises on any path; the changes (fattr, chown) are then
  refused by path and allowed only on descriptors (fchmod, fchown, futimens, fsetxattr),
  as every builtin's are in a policy whose Landlock confines the filesystem.
- unveil permissions never exceed the promises: "r" grants reading only with rpath.
  OpenBSD's pledge paths (/etc/localtime...) are not implied: CPython reads them at start.
- A violation kills with SIGSYS, not SIGABRT; fattr refuses setuid/setgid/sticky modes
  (OpenBSD silently clears them); chown under fattr is limited to the caller's own ids.
- getpw covers glibc's files backend; nscd is refused (EACCES) so glibc reads the files;
  other NSS modules (systemd, sss, ldap) are loaded with dlopen (needs prot_exec) and make
  calls no promise names: look names up once before pledging.
- execpromises: seccomp filters survive execve and can never be lifted, so the exec'd
  image always runs under these promises (OpenBSD would start it unpledged). execpromises
  can only narrow: they must be a subset of ``promises`` (PolicyError otherwise) and are
  enforced only if the new image (or the child, just before execve) loads
  ``pledge(execpromises)`` itself; a dynamic executable needs rpath and prot_exec to
  start (its loader opens and maps libraries).
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Final

from .._errors import PolicyError
from .._landlock import Landlock
from .._landlock_abi import FILE_RIGHTS, AccessFs
from .._policy import Policy
from .._rules import Action, Arg, Rule
from .._ruleset import BuiltinRuleSet, RuleSet
from .._suggest import did_you_mean
from .._syscalls import exists
from . import _promises
from ._promises import BUILDERS

#: Promises OpenBSD has that mean nothing on Linux, and why (the PolicyError says so).
NO_LINUX_MEANING: Final = {
    "pf": "pf(4) ioctls; Linux's packet filter (nftables) is configured over netlink, "
    "which no promise opens",
    "route": "OpenBSD's routing socket; Linux uses rtnetlink, whose messages a seccomp "
    "filter cannot read; read /proc/net/route with rpath and unveil instead",
    "wroute": "OpenBSD's routing socket and interface ioctls; Linux uses rtnetlink",
    "audio": "audio(4) ioctls; Linux's ALSA differs: grant /dev/snd with Landlock and the "
    "ioctls you need with SystemIO.allow_ioctl",
    "video": "video(4) ioctls; on Linux use Landlock on /dev/video* and "
    "SystemIO.allow_ioctl with the VIDIOC_* numbers you need",
    "bpf": "OpenBSD's bpf(4) capture device, not Linux's bpf(2) (which every isolates "
    "policy denies)",
    "ps": "sysctl(2) about other processes; Linux has them in /proc: use rpath with "
    "unveil={'/proc': 'r'}",
    "vminfo": "sysctl(2) memory statistics; Linux: rpath with unveil={'/proc': 'r'}",
    "disklabel": "disklabel(5) ioctls, which Linux does not have",
    "drm": "OpenBSD's drm ioctls; use Landlock on /dev/dri and SystemIO.allow_ioctl",
    "vmm": "vmm(4), OpenBSD's hypervisor; Linux's KVM is a different interface",
}
#: Every promise name pledge() knows: those with a Linux meaning, then the others.
PROMISES: Final = (*BUILDERS, *NO_LINUX_MEANING)
_PATH_BOUND: Final = frozenset({"tmppath", "dns", "getpw", "tty"})
_EACCES: Final = Action.ERRNO(errno.EACCES)

# Read now, while this process may still open files: a pledge it builds may forbid that.
with open(os.path.join(os.path.dirname(__file__), "pledge_promises.json"), encoding="utf-8") as _f:
    _REFERENCE: Final[dict[str, str]] = dict(json.load(_f)["promises"])


def pledge(
    promises: str,
    execpromises: str | None = None,
    *,
    unveil: Mapping[str, str] | None = None,
    ignore: Iterable[str] = (),
) -> Policy:
    """A Policy allowing what OpenBSD's ``pledge(promises, execpromises)`` allows.

    ``unveil={"/var/www": "r", "/tmp/app": "rwc"}`` limits the filesystem to those paths
    (Landlock), with OpenBSD's permission letters: r read, w write, x execute, c create
    and remove. ``ignore`` names promises with no Linux meaning to drop instead of
    raising (``ignore={"ps"}``). See the module documentation for the mapping.
    """
    names = _parse(promises, ignore, "promises")
    if execpromises is not None:
        _check_exec(names, _parse(execpromises, ignore, "execpromises"))
    rulesets = _syscall_rulesets(names)
    rulesets += [_Paths(label, ll) for label, ll in _landlock(names, dict(unveil or {}))]
    error = Action.ERRNO(errno.ENOSYS) if "error" in names else Action.KILL_PROCESS
    return Policy(*rulesets, default=error)


def _parse(text: str, ignore: Iterable[str], what: str) -> frozenset[str]:
    if not isinstance(text, str):
        raise PolicyError(f"pledge: {what} is a string of promises, e.g. 'stdio rpath'")
    skip = set(ignore)
    for name in skip:
        _known(name, "ignore")
    names = [n for n in text.split() if n not in skip]
    for name in names:
        _known(name, what)
        if name in NO_LINUX_MEANING:
            raise PolicyError(
                f"pledge: {name!r} has no Linux meaning ({NO_LINUX_MEANING[name]}); pass "
                f"ignore={{{name!r}}} to drop it"
            )
    return frozenset(names)


def _known(name: str, what: str) -> None:
    if name not in PROMISES:
        hint = did_you_mean(name, PROMISES)
        raise PolicyError(f"pledge: unknown promise {name!r} in {what}{hint}")


def _check_exec(names: frozenset[str], execnames: frozenset[str]) -> None:
    if "exec" not in names:
        raise PolicyError("pledge: execpromises without 'exec' in promises: nothing can exec")
    extra = sorted(execnames - names)
    if extra:
        raise PolicyError(
            f"pledge: execpromises {' '.join(extra)!r} exceed the promises: a seccomp filter "
            "survives execve and cannot be lifted, so the new image can never gain them; "
            "promise them in promises too"
        )


def _syscall_rulesets(names: frozenset[str]) -> list[RuleSet]:
    """One RuleSet per promise (named after it), with every rule that another promise
    makes unconditional dropped (so two promises never conflict), for this CPU."""
    by_promise = {name: BUILDERS[name](names) for name in sorted(names)}
    extra = _refusals(names)
    if "prot_exec" not in names:
        by_promise["no prot_exec"] = _promises.prot_exec_absent()
    outright = {r.syscall for rules in by_promise.values() for r in rules if not r.conditions}
    out: list[RuleSet] = []
    for name, rules in by_promise.items():
        kept = [r for r in rules if exists(r.syscall)]
        kept = [r for r in kept if not (r.conditions and r.syscall in outright)]
        out.append(BuiltinRuleSet(*dict.fromkeys(kept), name=f"pledge {name!r}"))
    if extra:
        out.append(BuiltinRuleSet(*extra, name="pledge: refused with EACCES"))
    return out


def _refusals(names: frozenset[str]) -> list[Rule]:
    """Calls glibc makes for dns and getpw that must fail softly, not kill: the nscd
    socket (glibc then reads the files itself) and rtnetlink (AI_ADDRCONFIG)."""
    out: list[Rule] = []
    if names & {"dns", "getpw"} and "unix" not in names:
        out.append(Rule("socket", Arg(0) == socket.AF_UNIX, action=_EACCES))
    if "dns" in names:
        out.append(Rule("socket", Arg(0) == socket.AF_NETLINK, action=_EACCES))
    return out


class _Paths(RuleSet):
    """A part of the Landlock half of a pledge, named after the promises granting it:
    rights on paths, without the syscalls a Landlock RuleSet implies (the promises
    already name exactly the syscalls they allow)."""

    def __init__(self, name: str, landlock: Landlock) -> None:
        super().__init__(name=name)
        self._landlock = landlock

    def landlock(self) -> Landlock:
        return self._landlock


_READ: Final = AccessFs.READ_FILE | AccessFs.READ_DIR | AccessFs.IOCTL_DEV
_WRITE: Final = AccessFs.WRITE_FILE | AccessFs.TRUNCATE | AccessFs.IOCTL_DEV
_CREATE: Final = (
    AccessFs.MAKE_REG
    | AccessFs.MAKE_DIR
    | AccessFs.MAKE_SYM
    | AccessFs.REMOVE_FILE
    | AccessFs.REMOVE_DIR
    | AccessFs.REFER
)
_SPECIAL: Final = AccessFs.MAKE_FIFO | AccessFs.MAKE_CHAR | AccessFs.MAKE_BLOCK | AccessFs.MAKE_SOCK
_TMP: Final = (
    AccessFs.READ_FILE
    | AccessFs.WRITE_FILE
    | AccessFs.TRUNCATE
    | AccessFs.MAKE_REG
    | AccessFs.REMOVE_FILE
    | AccessFs.MAKE_DIR
    | AccessFs.REMOVE_DIR
    | AccessFs.READ_DIR
)
_TTY: Final = AccessFs.READ_FILE | AccessFs.WRITE_FILE | AccessFs.IOCTL_DEV
_GETPW_FILES: Final = ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ld.so.cache")


def unveil_rights(permissions: str, names: frozenset[str]) -> AccessFs:
    """The Landlock rights of unveil permissions ("rwxc"), limited to what the promises
    allow: r needs rpath, w wpath, c cpath (dpath adds special files, unix sockets), x
    exec (and reads the file: the kernel opens a program to load it)."""
    rights = AccessFs(0)
    for _, granted in _unveil_parts(permissions, names):
        rights |= granted
    return rights


def _unveil_parts(permissions: str, names: frozenset[str]) -> list[tuple[str, AccessFs]]:
    """The rights each promise grants on a path unveiled with ``permissions``."""
    bad = set(permissions) - set("rwxc")
    if bad:
        raise PolicyError(
            f"unveil: permissions {permissions!r} use {''.join(sorted(bad))!r}; "
            "only r (read), w (write), x (execute) and c (create/remove) exist"
        )
    out: list[tuple[str, AccessFs]] = []
    for letter, promise, granted in (
        ("r", "rpath", _READ),
        ("w", "wpath", _WRITE),
        ("x", "exec", AccessFs.EXECUTE | AccessFs.READ_FILE),
        ("c", "cpath", _CREATE),
    ):
        if letter in permissions and promise in names:
            out.append((promise, granted))
    if "c" in permissions and "dpath" in names:
        out.append(("dpath", _SPECIAL))
    if "c" in permissions and "cpath" in names and "unix" in names:
        out.append(("cpath unix", AccessFs.MAKE_SOCK))
    return out


def _landlock(names: frozenset[str], unveil: dict[str, str]) -> list[tuple[str, Landlock]]:
    """The Landlock half as (RuleSet name, Landlock) parts, named after the promises that
    grant them; none when nothing is bound to paths. The first part handles every
    filesystem right and grants nothing: what the others do not grant is denied, even
    when the promises grant no path at all."""
    if not unveil and not names & _PATH_BOUND:
        return []
    parts = [("pledge paths (Landlock)", Landlock().deny_fs())]
    for path, permissions in unveil.items():
        _check_unveiled(path)
        parts += _promised(path, permissions, names, f"unveil {path!r} {permissions!r}")
    if not unveil:
        parts += _promised("/", "rwxc", names, "beneath /")
    return parts + _path_bound(names)


def _promised(
    path: str, permissions: str, names: frozenset[str], where: str
) -> list[tuple[str, Landlock]]:
    """The one grant the promises make on ``path`` for ``permissions``, if any."""
    promises, rights = [], AccessFs(0)
    for promise, granted in _unveil_parts(permissions, names):
        if where == "beneath /" and promise == "exec" and "rpath" not in names:
            granted &= ~AccessFs.READ_FILE  # exec's: not on all of "/" without rpath
        promises.append(promise)
        rights |= granted
    ll = _grant(Landlock(), path, rights)
    return [(f"pledge {' '.join(promises)!r} (Landlock: {where})", ll)] if ll.grants() else []


def _check_unveiled(path: str) -> None:
    if not os.path.exists(path):
        raise PolicyError(
            f"unveil: {path!r} does not exist; Landlock grants rights on existing files and "
            "directories: unveil the directory it will be created in"
        )


def _grant(ll: Landlock, path: str, rights: AccessFs) -> Landlock:
    if not os.path.isdir(path):
        rights &= FILE_RIGHTS
    return ll.allow(path, rights) if rights else ll


def _path_bound(names: frozenset[str]) -> list[tuple[str, Landlock]]:
    """What each path-bound promise needs. dns's paths follow resolv.conf's link to grant
    the directory it points into: never when that is "/" or a directory holding $HOME."""
    parts: list[tuple[str, Landlock]] = []
    if "tmppath" in names:
        parts.append(("tmppath", _grant(Landlock(), "/tmp", _TMP)))
    if "dns" in names:
        parts.append(("dns", _narrow(Landlock().dns())))
    if "getpw" in names:
        parts.append(("getpw", _read_files(_GETPW_FILES)))
    if "tty" in names and os.path.exists("/dev/tty"):
        parts.append(("tty", Landlock().allow("/dev/tty", _TTY)))
    return [(f"pledge {name!r} (Landlock)", ll) for name, ll in parts]


def _read_files(paths: Iterable[str]) -> Landlock:
    ll = Landlock()
    for path in paths:
        ll = ll.read(path, missing_ok=True) if os.path.exists(path) else ll
    return ll


def _narrow(ll: Landlock) -> Landlock:
    """``ll`` without its grants on "/" or on a directory that holds $HOME."""
    out = Landlock()
    for path, rights in ll.grants():
        if not too_broad(path):
            out = out.allow(path, rights, missing_ok=True)
    return out


def too_broad(path: str, home: str | None = None) -> bool:
    """Whether a grant on ``path`` would reach "/" or the user's home: "/" itself, or
    ``home`` ($HOME by default) or a directory above it (/home, /root...)."""
    real = os.path.realpath(path)
    home = os.path.realpath(home or os.environ.get("HOME") or "/")
    return real == "/" or home == real or home.startswith(real.rstrip("/") + "/")


def reference() -> dict[str, str]:
    """OpenBSD's own description of every promise (from pledge.2, in pledge_promises.json)."""
    return dict(_REFERENCE)

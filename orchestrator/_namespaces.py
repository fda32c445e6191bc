"""Namespaces for an isolate: user, mount, pid, net, ipc and uts, entered unprivileged.

``enter(ns)`` runs in the isolate after it read its boot message and imported what its
function needs, before Landlock and seccomp. Order: a user namespace first (so the rest
needs no privilege), its id maps, then a pid namespace (which only moves *children*, so
``enter`` forks: the child, pid 1 inside, returns and boots on; this process stays
outside as its mirror), then mount, net, ipc and uts, then the new root is built.
_ns_pid.py holds pid 1 and its mirror, _ns_mount.py the new root.
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass, fields
from typing import Final

from isolates.sandbox import PolicyError, SandboxError
from isolates.sandbox.lowlevel import ns as k

from ._ns_mount import build_root, plan_root
from ._ns_mount import runtime_paths as runtime_paths
from ._ns_pid import fork_pid1


@dataclass(frozen=True)
class Bind:
    """Show host path ``source`` at ``target`` (default: the same path), read-only unless
    ``writable``. Directories bring their submounts along."""

    source: str
    target: str | None = None
    writable: bool = False

    def __post_init__(self) -> None:
        _check_path(self.source, "Bind.source")
        if self.target is not None:
            _check_path(self.target, "Bind.target")


@dataclass(frozen=True)
class Mount:
    """A mount namespace whose root is an empty, read-only tmpfs holding only what is asked.

    ``runtime``: the Python runtime read-only at its own paths (prefixes, every ``sys.path``
    directory, imported packages, the loaded shared libraries), so lazy imports work.
    ``ro``/``rw``: host paths shown at the same path, read-only / writable (writes reach
    the host). ``binds``: ``Bind`` entries for a different target. ``tmp``: a private
    tmpfs /tmp. ``dev``: a minimal /dev (null, zero, full, random, urandom, shm, fd).
    ``proc``: /proc of the new pid namespace (the host's when ``pid=False``).
    """

    ro: tuple[str, ...] = ()
    rw: tuple[str, ...] = ()
    binds: tuple[Bind, ...] = ()
    runtime: bool = True
    tmp: bool = True
    dev: bool = True
    proc: bool = True

    def __post_init__(self) -> None:
        for name in ("ro", "rw"):
            for path in getattr(self, name):
                _check_path(path, f"Mount.{name}")

    def all_binds(self) -> tuple[Bind, ...]:
        ro = tuple(Bind(p) for p in self.ro)
        return ro + tuple(Bind(p, writable=True) for p in self.rw) + self.binds


@dataclass(frozen=True)
class Namespaces:
    """Which namespaces an isolate enters. ``Namespaces()`` enters all of them.

    ``user``: an unprivileged user namespace mapping our uid/gid to ``uid``/``gid`` inside
    (default: the same ids; capabilities are dropped unless the id inside is 0).
    ``mount``: a ``Mount`` (or None: the host's mounts). ``pid``: pid 1 of a new pid
    namespace. ``net``: only a loopback interface, up. ``ipc``: private System V IPC and
    POSIX message queues. ``uts``: its own ``hostname``. Turn one off with e.g.
    ``Namespaces(net=False)`` (a network server that must stay on the host network).
    """

    user: bool = True
    mount: Mount | None = Mount()
    pid: bool = True
    net: bool = True
    ipc: bool = True
    uts: bool = True
    uid: int | None = None
    gid: int | None = None
    hostname: str = "isolate"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "mount" and f.type == "bool" and not isinstance(value, bool):
                raise PolicyError(f"Namespaces.{f.name} is True or False, not {value!r}")
        if not isinstance(self.mount, Mount | None):
            raise PolicyError(
                f"Namespaces.mount takes a Mount(...) or None, not {self.mount!r}: "
                "Namespaces(mount=None) keeps the host's mounts, "
                "Namespaces(mount=Mount(rw=('/var/lib/app',))) adds a writable directory"
            )
        for name in ("uid", "gid"):
            _check_id(self, name)
        host = self.hostname.encode()
        if not 0 < len(host) <= 64 or b"\0" in host:
            raise PolicyError(f"Namespaces.hostname: 1 to 64 bytes, no NUL: {self.hostname!r}")

    def pid_inside(self, pid_outside: int) -> int:
        """The pid the isolate has after ``enter``: 1 in a new pid namespace.

        Compile its policy with it: ``policy.compile(pid=ns.pid_inside(proc.pid))``, so
        ``SELF_PID`` rules (``Signals.allow_kill_self``) name the process as it sees itself.
        """
        return 1 if self.pid else pid_outside

    @property
    def kinds(self) -> tuple[str, ...]:
        asked = {"user": self.user, "mount": self.mount is not None, "pid": self.pid,
                 "net": self.net, "ipc": self.ipc, "uts": self.uts}  # fmt: skip
        return tuple(name for name, on in asked.items() if on)


def _check_path(path: object, where: str) -> None:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise PolicyError(f"{where}: an absolute path, not {path!r}")
    if os.path.normpath(path) != path.rstrip("/") and path != "/":
        raise PolicyError(f"{where}: write the path without '.', '..' or '//': {path!r}")


def _check_id(ns: Namespaces, name: str) -> None:
    value = getattr(ns, name)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32 - 1:
        raise PolicyError(f"Namespaces.{name}: an id from 0 to 4294967294, not {value!r}")
    if not ns.user:
        raise PolicyError(f"Namespaces.{name} maps an id in a user namespace: needs user=True")


@dataclass(frozen=True)
class NamespaceStatus:
    """What ``enter`` did: the namespaces entered and the process's ids inside them."""

    entered: tuple[str, ...]
    uid: int
    gid: int
    pid: int
    hostname: str
    capabilities: bool

    def __str__(self) -> str:
        if not self.entered:
            return "namespaces: none"
        caps = "with" if self.capabilities else "without"
        return (
            f"namespaces: {' '.join(self.entered)} (uid {self.uid}, gid {self.gid}, "
            f"pid {self.pid}, hostname {self.hostname!r}, {caps} capabilities)"
        )


def enter(ns: Namespaces) -> NamespaceStatus:
    """Move this process into the namespaces ``ns`` asks for; irreversible.

    Call it single-threaded, before Landlock and seccomp. With ``pid``, this forks: only
    the child (pid 1 inside) returns; this process waits outside and exits as it does.
    Raises SandboxError saying what the kernel refused and how to enable it.
    """
    _check_single_threaded()
    plan = plan_root(ns.mount, pid=ns.pid) if ns.mount is not None else None
    if ns.user:
        _enter_user(ns)
    if ns.pid:
        _unshare(k.CLONE_NEWPID, "pid", in_userns=ns.user)
        fork_pid1()
    flags = {"mount": k.CLONE_NEWNS, "net": k.CLONE_NEWNET, "ipc": k.CLONE_NEWIPC,
             "uts": k.CLONE_NEWUTS}  # fmt: skip
    asked = [name for name in flags if name in ns.kinds]
    _unshare(sum(flags[name] for name in asked), "/".join(asked), in_userns=ns.user)
    if ns.uts:
        k.sethostname(ns.hostname)
    if ns.net:
        k.loopback_up()
    if plan is not None:
        build_root(plan)
    return _finish(ns)


def _check_single_threaded() -> None:
    if threading.active_count() > 1:
        raise SandboxError(
            errno.EINVAL,
            "namespaces: enter() must run before any thread starts "
            f"(unshare(CLONE_NEWUSER) refuses a multi-threaded process): {threading.enumerate()}",
        )


def _finish(ns: Namespaces) -> NamespaceStatus:
    caps = os.geteuid() == 0  # root keeps its capabilities (in its user namespace, if any)
    if ns.user and not caps:
        k.drop_capabilities()
    uid, gid, pid, host = os.getuid(), os.getgid(), os.getpid(), os.uname().nodename
    return NamespaceStatus(ns.kinds, uid, gid, pid, host, capabilities=caps)


# --- user -------------------------------------------------------------------------------

_USERNS_HINTS: Final = {
    errno.EPERM: "unprivileged user namespaces are disabled: enable them with "
    "`sysctl -w kernel.unprivileged_userns_clone=1` (Debian) or, on Ubuntu 23.10+, "
    "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (or an AppArmor profile "
    "allowing userns); a container's seccomp profile or a chroot also refuses them",
    errno.ENOSPC: "the user namespace limit is reached or zero: "
    "`sysctl -w user.max_user_namespaces=15000` (nesting is limited to 32 levels)",
    errno.EUSERS: "too many nested user namespaces (the kernel allows 32 levels)",
    errno.EINVAL: "the kernel lacks user namespaces (CONFIG_USER_NS, Linux 3.8+) "
    "or this process has more than one thread",
    errno.ENOMEM: "user namespaces cannot be created (CONFIG_USER_NS, or a limit)",
}


_MAP_HINTS: Final = {
    errno.EPERM: "the new user namespace has no capabilities: on Ubuntu 23.10+ AppArmor "
    "restricts unprivileged user namespaces "
    "(`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or a profile allowing userns)",
    errno.EACCES: "/proc/self is not ours: the process is not dumpable (it changed uid "
    "without exec'ing, or set PR_SET_DUMPABLE to 0)",
}


def _enter_user(ns: Namespaces) -> None:
    uid, gid = os.getuid(), os.getgid()  # before unshare: afterwards both read 65534
    try:
        k.unshare(k.CLONE_NEWUSER)
    except OSError as exc:
        hint = _USERNS_HINTS.get(exc.errno or 0, exc.strerror)
        msg = f"namespaces: cannot create a user namespace: {hint}"
        raise SandboxError(exc.errno, msg) from None
    try:
        k.write_id_maps(_or(ns.uid, uid), _or(ns.gid, gid), uid, gid)
    except OSError as exc:
        hint = _MAP_HINTS.get(exc.errno or 0, exc.strerror)
        msg = f"namespaces: cannot write the user namespace's id maps: {hint}"
        raise SandboxError(exc.errno, msg) from None


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _unshare(flags: int, what: str, *, in_userns: bool) -> None:
    if not flags:
        return
    try:
        k.unshare(flags)
    except OSError as exc:
        hint = _unshare_hint(exc.errno or 0, what, in_userns) or exc.strerror
        msg = f"namespaces: cannot create {what} namespace: {hint}"
        raise SandboxError(exc.errno, msg) from None


def _unshare_hint(err: int, what: str, in_userns: bool) -> str | None:
    sysctls = ", ".join(f"user.max_{kind.replace('mount', 'mnt')}_namespaces" for kind in
                        what.split("/"))  # fmt: skip
    configs = ", ".join(f"CONFIG_{kind.upper()}_NS" for kind in what.split("/") if kind != "mount")
    if err == errno.EPERM and in_userns:
        return "our user namespace gave no CAP_SYS_ADMIN (an AppArmor or LSM restriction?)"
    return {
        errno.EPERM: "creating it needs CAP_SYS_ADMIN: keep Namespaces(user=True) so an "
        "unprivileged user namespace provides it",
        errno.EINVAL: f"the kernel lacks it ({configs or 'CONFIG_NAMESPACES'})",
        errno.ENOSPC: f"a namespace limit is reached (sysctl {sysctls})",
    }.get(err)

"""Entering namespaces: user, mount, pid, net, ipc and uts, unprivileged.

``enter(ns)`` runs in the isolate after it read its boot message and imported what its
function needs, before Landlock and seccomp. Order: a user namespace first (so the rest
needs no privilege), its id maps, then a pid namespace (which only moves *children*, so
``enter`` forks: the child, pid 1 inside, returns and boots on; this process stays
outside as its mirror), then mount, net, ipc and uts, then the new root is built.
pid.py holds pid 1 and its mirror, mount.py the new root.

Safety argument:

- Every call here changes only the calling process: ``unshare`` moves it (and, for a
  pid namespace, its future children) into new namespaces; the id maps written are
  those of the user namespace it just created, mapping only its own uid and gid (the
  kernel refuses any other mapping to an unprivileged writer); ``sethostname`` and
  bringing loopback up act inside the new uts and net namespaces; capabilities are
  dropped, never gained. Nothing reaches the host's namespaces or another process.
- It runs single-threaded (checked first: ``unshare(CLONE_NEWUSER)`` refuses a
  threaded process, and a fork from one would copy held locks), before Landlock and
  seccomp, so the policy never has to allow any of these calls.
- Each refusal becomes a SandboxError saying what the kernel refused and how to enable
  it; a half-entered isolate never goes on to run the function (the boot fails).
- The fork for a pid namespace and the mirror it leaves outside are pid.py's, with
  their own safety argument; the new root is mount.py's.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Final

from isolates.sandbox import SandboxError
from isolates.sandbox.lowlevel import ns as k
from isolates.sandbox.lowlevel import uapi

from .mount import build_root, plan_root
from .options import Namespaces, NamespaceStatus
from .pid import fork_pid1


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
        _unshare(uapi.CLONE_NEWPID, "pid", in_userns=ns.user)
        fork_pid1()
    flags = {
        "mount": uapi.CLONE_NEWNS,
        "net": uapi.CLONE_NEWNET,
        "ipc": uapi.CLONE_NEWIPC,
        "uts": uapi.CLONE_NEWUTS,
    }
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
        k.unshare(uapi.CLONE_NEWUSER)
    except OSError as exc:
        hint = _filtered(exc.errno) or _USERNS_HINTS.get(exc.errno or 0, exc.strerror)
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
        hint = _filtered(exc.errno) or _unshare_hint(exc.errno or 0, what, in_userns)
        hint = hint or exc.strerror
        msg = f"namespaces: cannot create {what} namespace: {hint}"
        raise SandboxError(exc.errno, msg) from None


def _filtered(err: int | None) -> str | None:
    """When this process already runs under a seccomp filter, the likeliest reason an
    unshare is refused: that filter (``isolates run``'s own, a container's), not the
    kernel's settings."""
    if err not in (errno.EPERM, errno.EACCES, errno.ENOSYS):
        return None
    try:
        with open("/proc/self/status", "rb") as f:
            mode = next((line.split()[1] for line in f if line.startswith(b"Seccomp:")), b"0")
    except OSError:
        return None
    if mode != b"2":
        return None
    return (
        "this process already runs under a seccomp filter, which refuses unshare (isolates "
        "itself denies it unless a policy names it: under `isolates run`, pass `--allow "
        "unshare`; in a container, its seccomp profile); the kernel's settings were not "
        "the reason"
    )


def _unshare_hint(err: int, what: str, in_userns: bool) -> str | None:
    sysctls = ", ".join(
        f"user.max_{kind.replace('mount', 'mnt')}_namespaces" for kind in what.split("/")
    )
    configs = ", ".join(f"CONFIG_{kind.upper()}_NS" for kind in what.split("/") if kind != "mount")
    if err == errno.EPERM and in_userns:
        return "our user namespace gave no CAP_SYS_ADMIN (an AppArmor or LSM restriction?)"
    return {
        errno.EPERM: "creating it needs CAP_SYS_ADMIN: keep Namespaces(user=True) so an "
        "unprivileged user namespace provides it",
        errno.EINVAL: f"the kernel lacks it ({configs or 'CONFIG_NAMESPACES'})",
        errno.ENOSPC: f"a namespace limit is reached (sysctl {sysctls})",
    }.get(err)

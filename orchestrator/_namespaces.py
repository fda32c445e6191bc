"""Namespaces for an isolate: user, mount, pid, net, ipc and uts, entered unprivileged.

``enter(ns)`` runs in the isolate after it read its boot message and imported what its
function needs, before Landlock and seccomp. Order: a user namespace first (so the rest
needs no privilege), its id maps, then a pid namespace (which only moves *children*, so
``enter`` forks: the child, pid 1 inside, returns and boots on; this process stays
outside as its mirror), then mount, net, ipc and uts, then the new root is built.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import resource
import select
import signal
import struct
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Final, NoReturn

from isolates.sandbox import PolicyError, SandboxError
from isolates.sandbox import _kernel_ns as k
from isolates.sandbox._kernel import set_parent_death_signal


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
    if threading.active_count() > 1:
        raise SandboxError(
            errno.EINVAL,
            "namespaces: enter() must run before any thread starts "
            f"(unshare(CLONE_NEWUSER) refuses a multi-threaded process): {threading.enumerate()}",
        )
    plan = _plan_root(ns.mount, pid=ns.pid) if ns.mount is not None else None
    if ns.user:
        _enter_user(ns)
    if ns.pid:
        _unshare(k.CLONE_NEWPID, "pid", in_userns=ns.user)
        _fork_pid1()
    flags = {"mount": k.CLONE_NEWNS, "net": k.CLONE_NEWNET, "ipc": k.CLONE_NEWIPC,
             "uts": k.CLONE_NEWUTS}  # fmt: skip
    asked = [name for name in flags if name in ns.kinds]
    _unshare(sum(flags[name] for name in asked), "/".join(asked), in_userns=ns.user)
    if ns.uts:
        k.sethostname(ns.hostname)
    if ns.net:
        k.loopback_up()
    if plan is not None:
        _build_root(plan)
    return _finish(ns)


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


# --- pid: pid 1 inside, a mirror outside -------------------------------------------------

#: Signals the mirror passes on to pid 1 (all terminate by default).
FORWARDED: Final = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                              signal.SIGUSR1, signal.SIGUSR2})  # fmt: skip


def _fork_pid1() -> None:
    """Fork the pid namespace's first process (pid 1); only that child returns."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED | {signal.SIGCHLD})
    ignoring = signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN
    if ignoring:  # the mirror must be able to wait for its child
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    me = os.pidfd_open(os.getpid())
    proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    pid = os.fork()
    if pid:
        _mirror(pid, proc)
    os.close(proc)
    _tie_to_parent(me)
    os.setpgid(0, 0)  # signals to the isolate's group reach the mirror, which forwards them
    while signal.sigtimedwait(FORWARDED, 0) is not None:
        pass  # ...so drop what reached us before setpgid: the mirror forwards it once
    if ignoring:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _tie_to_parent(parent: int) -> None:
    """Die with the mirror; if it already died before PDEATHSIG was set, exit now."""
    set_parent_death_signal(signal.SIGKILL)
    gone = select.select([parent], [], [], 0)[0]  # a pidfd is readable once it exited
    os.close(parent)
    if gone:
        os._exit(1)


def _mirror(child: int, proc: int) -> NoReturn:
    """Wait for pid 1, forward signals to it, then exit the way it did."""
    gc.disable()  # objects owning the descriptors closed below must never be finalised
    os.closerange(3, proc)
    os.closerange(proc + 1, 0x7FFFFFFF)  # the channel ends live on in pid 1 only
    emulated = 0
    while True:
        sig = signal.sigwaitinfo(FORWARDED | {signal.SIGCHLD}).si_signo
        if sig != signal.SIGCHLD:
            emulated = _forward(child, signal.Signals(sig), proc) or emulated
            continue
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            _exit_like(status, emulated)


def _forward(child: int, sig: signal.Signals, proc: int) -> int:
    """Pass ``sig`` on. The kernel shields a pid namespace's init from signals it does not
    handle, so when pid 1 neither catches, ignores nor blocks ``sig`` (its default action
    is death), kill it and report ``sig`` as the cause: what a normal process would do."""
    if _default_action(child, sig, proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        return int(sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, sig)
    return 0


def _default_action(pid: int, sig: int, proc: int) -> bool:
    try:
        fd = os.open(f"{pid}/status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
    except OSError:
        return False
    try:
        lines = os.read(fd, 1 << 16).decode().splitlines()
    finally:
        os.close(fd)
    masks = [int(line.split()[1], 16) for line in lines
             if line.startswith(("SigBlk:", "SigIgn:", "SigCgt:"))]  # fmt: skip
    return not any(mask >> (sig - 1) & 1 for mask in masks)


def _exit_like(status: int, emulated: int) -> NoReturn:
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status)
    if emulated and sig == signal.SIGKILL:
        sig = emulated
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the mirror's death leaves no core
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # only if ``sig`` does not kill (it always does for pid 1's deaths)


# --- mount: plan on the host, build in the namespace ------------------------------------


@dataclass(frozen=True)
class _Step:
    target: str
    kind: str  # "bind", "tmp", "dev", "proc"
    source: str = ""
    writable: bool = False


@dataclass(frozen=True)
class _Plan:
    steps: tuple[_Step, ...]
    links: tuple[tuple[str, str], ...]
    cwd: str
    new_pid_ns: bool


def _plan_root(mount: Mount, *, pid: bool) -> _Plan:
    """Resolve every host path now, while the host's root is ours: sources must exist."""
    links: dict[str, str] = {}
    binds = []
    if mount.runtime:
        for path in runtime_paths():
            real = _resolve(path, links)
            binds.append(_Step(real, "bind", real))
    for b in mount.all_binds():
        if not os.path.lexists(b.source):
            raise SandboxError(errno.ENOENT, f"namespaces: bind source {b.source} does not exist")
        binds.append(_Step(b.target or b.source, "bind", os.path.realpath(b.source), b.writable))
    builtin = [_Step(t, kind) for t, kind, on in (("/tmp", "tmp", mount.tmp),
               ("/dev", "dev", mount.dev), ("/proc", "proc", mount.proc)) if on]  # fmt: skip
    # Parents before children; the tmpfs /tmp, /dev, /proc before binds at the same depth.
    steps = sorted(builtin + _without_redundant(binds), key=lambda s: _depth(s.target))
    return _Plan(tuple(steps), tuple(links.items()), os.getcwd(), pid)


_NEVER_SHOWN: Final = ("/", "/tmp", "/dev", "/proc")


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def runtime_paths() -> list[str]:
    """What a running CPython may still read: its prefixes, ``sys.path``, the directories
    of imported packages (editable installs too) and of its loaded shared libraries."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, "/etc/ld.so.cache",
             os.path.dirname(sys.executable), _interpreter(sys.executable)}  # fmt: skip
    paths.update(os.path.abspath(p) for p in sys.path if isinstance(p, str))
    for module in list(sys.modules.values()):
        paths.update(p for p in list(getattr(module, "__path__", None) or ()) if isinstance(p, str))
    with open("/proc/self/maps") as maps:
        mapped = [line.split(maxsplit=5)[-1].rstrip("\n") for line in maps]
    paths.update(os.path.dirname(f) for f in mapped if f.startswith("/"))
    # Never the host's /, /tmp, /dev or /proc wholesale (a worker started in /tmp has it
    # on sys.path): those stay private. Their subdirectories are fine.
    return sorted(p for p in paths if p not in _NEVER_SHOWN and os.path.exists(p))


def _interpreter(executable: str) -> str:
    """The ELF interpreter (PT_INTERP) of a 64-bit little-endian executable, or "/"."""
    with open(executable, "rb") as f:
        head = f.read(1 << 16)
    if head[:6] != b"\x7fELF\x02\x01":
        return "/"
    phoff, phentsize, phnum = (
        *struct.unpack_from("<Q", head, 32),
        *struct.unpack_from("<HH", head, 54),
    )
    for i in range(phnum):
        kind, _, offset, _, _, size = struct.unpack_from("<IIQQQQ", head, phoff + i * phentsize)
        if kind == 3:  # PT_INTERP
            return head[offset : offset + size].rstrip(b"\0").decode()
    return "/"


def _resolve(path: str, links: dict[str, str], depth: int = 0) -> str:
    """The real path of ``path``; each symlink met on the way is recorded to be recreated."""
    parts = path.strip("/").split("/")
    current = "/"
    for i, part in enumerate(parts):
        step = os.path.join(current, part)
        if depth < 40 and os.path.islink(step):
            links[step] = os.readlink(step)
            rest = os.path.join(current, links[step], *parts[i + 1 :])
            return _resolve(os.path.normpath(rest), links, depth + 1)
        current = step
    return current


def _without_redundant(binds: list[_Step]) -> list[_Step]:
    """Drop binds another bind already shows: same source subtree at the same place."""

    def covered(b: _Step, a: _Step) -> bool:
        inner = b.target[len(a.target.rstrip("/")) :]
        same = a.writable == b.writable and b.source == a.source.rstrip("/") + inner
        return a is not b and same and inner.startswith("/") and b.target.startswith(a.target)

    unique = list({(b.target, b.source, b.writable): b for b in binds}.values())
    return [b for b in unique if not any(covered(b, a) for a in unique)]


_NEW, _OLD = "/newroot", "/oldroot"
_DEV_NODES: Final = ("null", "zero", "full", "random", "urandom")
_DEV_LINKS: Final = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                     ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))  # fmt: skip
_NOSUID_NODEV: Final = k.MS_NOSUID | k.MS_NODEV


def _build_root(plan: _Plan) -> None:
    """Pivot into a scratch tmpfs (the host's root at /oldroot), fill /newroot from it,
    then make /newroot the root and let the host's go (bubblewrap's sequence)."""
    with _explained("preparing the new root"):
        k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)  # nothing propagates to the host
        scratch = next(d for d in ("/tmp", "/mnt", "/run", "/dev", "/proc") if os.path.isdir(d))
        k.mount("tmpfs", scratch, "tmpfs", _NOSUID_NODEV, "mode=0755")
        os.chdir(scratch)
        os.mkdir("newroot")
        os.mkdir("oldroot")
        k.mount("tmpfs", "newroot", "tmpfs", _NOSUID_NODEV, "mode=0755")
        k.pivot_root(".", "oldroot")
        os.chdir("/")
    for step in plan.steps:
        with _explained(f"{step.kind} {step.source} at {step.target}".replace("  ", " ")):
            _run(step, plan.new_pid_ns)
    with _explained("switching to the new root"):
        for path, text in plan.links:
            _link(_NEW + path, text)
        k.restrict_mount(_NEW, k.MOUNT_ATTR_RDONLY, recursive=False)
        k.umount2(_OLD, k.MNT_DETACH)
        os.chdir(_NEW)
        k.pivot_root(".", ".")
        k.umount2(".", k.MNT_DETACH)
    os.chdir(plan.cwd if os.path.isdir(plan.cwd) else "/")


def _run(step: _Step, new_pid_ns: bool) -> None:
    dst = _NEW + step.target.rstrip("/")
    if step.kind == "bind":
        _bind(_OLD + step.source, dst, writable=step.writable)
    elif step.kind == "tmp":
        os.makedirs(dst, exist_ok=True)
        k.mount("tmpfs", dst, "tmpfs", _NOSUID_NODEV, "mode=1777")
    elif step.kind == "dev":
        _make_dev(dst)
    elif new_pid_ns:
        os.makedirs(dst, exist_ok=True)
        k.mount("proc", dst, "proc", _NOSUID_NODEV | k.MS_NOEXEC)
    else:  # proc of a pid namespace we do not own cannot be mounted: show the host's
        _bind(_OLD + "/proc", dst, writable=True)


def _bind(src: str, dst: str, *, writable: bool) -> None:
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    elif not os.path.lexists(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    k.mount(src, dst, None, k.MS_BIND | k.MS_REC)
    attrs = k.MOUNT_ATTR_NOSUID | (0 if writable else k.MOUNT_ATTR_RDONLY)
    k.restrict_mount(dst, attrs, recursive=True)


def _make_dev(dst: str) -> None:
    """A tmpfs /dev with the host's harmless character devices bound in (an unprivileged
    process cannot mknod), /dev/shm for POSIX shared memory and semaphores, fd links."""
    os.makedirs(dst, exist_ok=True)
    k.mount("tmpfs", dst, "tmpfs", k.MS_NOSUID | k.MS_NOEXEC, "mode=0755")
    for name in _DEV_NODES:
        _bind(f"{_OLD}/dev/{name}", f"{dst}/{name}", writable=True)
    for name, text in _DEV_LINKS:
        os.symlink(text, f"{dst}/{name}")
    os.mkdir(f"{dst}/shm")
    k.mount("tmpfs", f"{dst}/shm", "tmpfs", _NOSUID_NODEV, "mode=1777")
    k.restrict_mount(dst, k.MOUNT_ATTR_RDONLY, recursive=False)


def _link(path: str, text: str) -> None:
    if not os.path.lexists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(text, path)


@contextlib.contextmanager
def _explained(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if isinstance(exc, SandboxError):
            raise
        raise SandboxError(
            exc.errno, f"namespaces: mount namespace: {what}: {exc.strerror or exc}"
        ) from None

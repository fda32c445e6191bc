"""The mount namespace's new root: planned on the host, built inside the namespace.

``plan_root`` runs before any namespace is entered, while the host's root is still ours:
it resolves every path to show (the Python runtime, the binds) and fails early if a
source is missing. ``build_root`` runs in the new mount namespace and follows
bubblewrap's sequence: pivot into a scratch tmpfs, fill a new root from the old one,
pivot again and let the host's root go.

Safety argument:

- ``build_root`` runs only inside a mount namespace of the isolate's own (``enter``
  unshares it first, in a user namespace that owns it), and its first call makes every
  mount there private (``MS_REC | MS_PRIVATE``): no mount, bind or unmount made here
  propagates to the host's namespace or any other.
- What the new root shows is decided on the host, before any namespace, by
  ``plan_root``: real paths resolved then, sources checked to exist. Every bind is
  nosuid, and read-only unless the user asked for it writable; /tmp and the new root
  are nosuid, nodev tmpfs; /dev is a nosuid, noexec tmpfs holding only binds of the
  host's harmless character devices (an unprivileged process cannot mknod), sealed
  read-only. /proc is a new proc of the isolate's pid namespace or, without one, the
  host's bound in (a proc of a pid namespace we do not own cannot be mounted).
- The host's root is detached (``umount2(MNT_DETACH)``) before the isolate's code runs
  and after the final pivot: nothing of it stays reachable but what was bound in.
- Every failure is a SandboxError naming the step (``_explained``): the boot fails and
  the function never runs in a half-built root.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from isolates.sandbox import SandboxError
from isolates.sandbox.lowlevel import mapped_files, package_dirs
from isolates.sandbox.lowlevel import ns as k

from .elf import interpreter
from .options import Mount


class Kind(enum.StrEnum):
    """What one step of building the root mounts at its target."""

    BIND = "bind"  # a host path, bound in
    TMP = "tmp"  # a private tmpfs /tmp
    DEV = "dev"  # a minimal /dev
    PROC = "proc"  # /proc


@dataclass(frozen=True)
class _Step:
    target: str
    kind: Kind
    source: str = ""
    writable: bool = False


@dataclass(frozen=True)
class RootPlan:
    """What ``build_root`` mounts, in order, and the symlinks it recreates."""

    steps: tuple[_Step, ...]
    links: tuple[tuple[str, str], ...]
    cwd: str
    new_pid_ns: bool


def plan_root(mount: Mount, *, pid: bool) -> RootPlan:
    """Resolve every host path now, while the host's root is ours: sources must exist."""
    links: dict[str, str] = {}
    binds = []
    if mount.runtime:
        for path in runtime_paths():
            real = _resolve(path, links)
            binds.append(_Step(real, Kind.BIND, real))
    for b in mount.all_binds():
        if not os.path.lexists(b.source):
            raise SandboxError(errno.ENOENT, f"namespaces: bind source {b.source} does not exist")
        binds.append(_Step(b.target or b.source, Kind.BIND, os.path.realpath(b.source), b.writable))
    builtin = [
        _Step(t, kind)
        for t, kind, on in (
            ("/tmp", Kind.TMP, mount.tmp),
            ("/dev", Kind.DEV, mount.dev),
            ("/proc", Kind.PROC, mount.proc),
        )
        if on
    ]
    # Parents before children; the tmpfs /tmp, /dev, /proc before binds at the same depth.
    steps = sorted(builtin + _without_redundant(binds), key=lambda s: _depth(s.target))
    return RootPlan(tuple(steps), tuple(links.items()), os.getcwd(), pid)


_NEVER_SHOWN: Final = ("/", "/tmp", "/dev", "/proc")


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def runtime_paths() -> list[str]:
    """What a running CPython may still read: its prefixes, ``sys.path``, the directories
    of imported packages (editable installs too) and of its loaded shared libraries."""
    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        "/etc/ld.so.cache",
        os.path.dirname(sys.executable),
        interpreter(sys.executable) or "/",
    }
    paths.update(os.path.abspath(p) for p in sys.path if isinstance(p, str))
    paths.update(package_dirs())
    paths.update(os.path.dirname(f) for f in mapped_files())
    # Never the host's /, /tmp, /dev or /proc wholesale (a worker started in /tmp has it
    # on sys.path): those stay private. Their subdirectories are fine.
    return sorted(p for p in paths if p not in _NEVER_SHOWN and os.path.exists(p))


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
_DEV_LINKS: Final = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)
_NOSUID_NODEV: Final = k.MS_NOSUID | k.MS_NODEV


def build_root(plan: RootPlan) -> None:
    """Pivot into a scratch tmpfs (the host's root at /oldroot), fill /newroot from it,
    then make /newroot the root and let the host's go (bubblewrap's sequence)."""
    with _explained("preparing the new root"):
        _pivot_to_scratch()
    for step in plan.steps:
        with _explained(f"{step.kind} {step.source} at {step.target}".replace("  ", " ")):
            _run(step, plan.new_pid_ns)
    with _explained("switching to the new root"):
        _switch_root(plan.links)
    os.chdir(plan.cwd if os.path.isdir(plan.cwd) else "/")


def _pivot_to_scratch() -> None:
    """Make a scratch tmpfs the root, with an empty tmpfs /newroot and the host's root at
    /oldroot."""
    k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)  # nothing propagates to the host
    scratch = next(d for d in ("/tmp", "/mnt", "/run", "/dev", "/proc") if os.path.isdir(d))
    k.mount("tmpfs", scratch, "tmpfs", _NOSUID_NODEV, "mode=0755")
    os.chdir(scratch)
    os.mkdir("newroot")
    os.mkdir("oldroot")
    k.mount("tmpfs", "newroot", "tmpfs", _NOSUID_NODEV, "mode=0755")
    k.pivot_root(".", "oldroot")
    os.chdir("/")


def _switch_root(links: tuple[tuple[str, str], ...]) -> None:
    """Recreate the symlinks, seal /newroot read-only, drop the host's root, pivot."""
    for path, text in links:
        _link(_NEW + path, text)
    k.restrict_mount(_NEW, k.MOUNT_ATTR_RDONLY, recursive=False)
    k.umount2(_OLD, k.MNT_DETACH)
    os.chdir(_NEW)
    k.pivot_root(".", ".")
    k.umount2(".", k.MNT_DETACH)


def _run(step: _Step, new_pid_ns: bool) -> None:
    dst = _NEW + step.target.rstrip("/")
    if step.kind is Kind.BIND:
        _bind(_OLD + step.source, dst, writable=step.writable)
    elif step.kind is Kind.TMP:
        os.makedirs(dst, exist_ok=True)
        k.mount("tmpfs", dst, "tmpfs", _NOSUID_NODEV, "mode=1777")
    elif step.kind is Kind.DEV:
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

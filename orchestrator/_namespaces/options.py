"""The namespace options an isolate is declared with, and the status it reports.

Plain frozen dataclasses: they travel in the boot message and the READY message as
typed msgspec fields (``isolates.orchestrator._core.wire``), and importing them costs an
isolate nothing more (entering namespaces is ``enter.py``, imported only by isolates
that ask for namespaces).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from isolates.sandbox import PolicyError


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
        asked = {
            "user": self.user,
            "mount": self.mount is not None,
            "pid": self.pid,
            "net": self.net,
            "ipc": self.ipc,
            "uts": self.uts,
        }
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

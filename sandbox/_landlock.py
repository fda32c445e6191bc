"""Landlock: which files, directories, TCP ports and IPC a thread may reach.

What a ``Landlock()`` *handles* (denies unless a rule grants it):

- the filesystem, with every right the kernel supports, as soon as one path is granted
  (or ``deny_fs()``): ``Landlock().read("/etc")`` means "nothing else on the filesystem";
- TCP bind and connect, both, as soon as one port is granted (or ``deny_tcp()``);
- IPC scopes only when ``scope()`` names them.

A ``Landlock`` is a value, not a RuleSet: a ``Policy`` takes it beside its RuleSets
(``Policy(SystemIO.nothing(), Landlock().read(p))``), merges the rights of all of them
(``Policy.landlock``) and adds the syscalls the granted rights need (``rules()``). A
RuleSet brings rights of its own through ``RuleSet.landlock()``.

The builder checks paths and ports when it is called (``PolicyError``); ``plan()`` turns
it into a ``LandlockPlan`` (plain data); ``apply_plan`` opens the paths and enforces the
plan in the process being confined, dropping what the running kernel lacks (BEST_EFFORT)
or refusing (HARD), and says what it enforced in a ``LandlockStatus``.

Beside this builder: _landlock_rules.py (the syscalls each right needs), _landlock_paths.py
(the paths the conveniences find), _landlock_abi.py (the kernel's rights, by ABI) and
_landlock_sys.py (the raw calls).
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Iterable
from typing import Final, NoReturn, Self

from ._errors import PolicyError
from ._landlock_abi import (
    ALL_FS,
    ALL_NET,
    FILE_RIGHTS,
    LOG_NEW_EXEC_ON,
    LOG_SAME_EXEC_OFF,
    LOG_SUBDOMAINS_OFF,
    AccessFs,
    AccessNet,
    Scope,
)

# devices() reads DEVICES from this module (a test points it elsewhere).
from ._landlock_paths import DEVICES as DEVICES
from ._landlock_paths import dns_paths, python_paths, ssl_cert_paths
from ._landlock_plan import Compat as Compat
from ._landlock_plan import Enforcement as Enforcement
from ._landlock_plan import LandlockPlan as LandlockPlan
from ._landlock_plan import LandlockStatus as LandlockStatus
from ._landlock_plan import apply_plan as apply_plan
from ._landlock_rules import implied_rules
from ._landlock_sys import PathGrant
from ._rules import Action, Cmp, Rule

__all__ = [
    "AccessFs",
    "AccessNet",
    "Compat",
    "Enforcement",
    "Landlock",
    "LandlockPlan",
    "LandlockStatus",
    "Scope",
    "apply_plan",
]


class Landlock:
    """Landlock rights: paths and what may be done beneath them, TCP ports, IPC scopes.

    ``Landlock().read("/etc").write("/var/lib/app").connect_tcp(443)`` lets a thread
    read beneath /etc, write files beneath /var/lib/app, connect to TCP port 443, and
    nothing else on the filesystem or over TCP. Immutable: every builder returns a copy.
    Given to a ``Policy`` beside its RuleSets, it also brings the syscalls its rights
    need (see ``rules()``), under its name (``name=``, default "Landlock").
    """

    def __init__(self, *, name: str | None = None) -> None:
        self._name = name
        self._fs = AccessFs(0)
        self._net = AccessNet(0)
        self._scopes = Scope(0)
        self._restrict = 0
        # (absolute path, AccessFs bits, missing_ok, st_dev, st_ino): the identity of the
        # object the path named when it was granted (0, 0 if it was missing then).
        self._paths: tuple[PathGrant, ...] = ()
        self._ports: tuple[tuple[int, int], ...] = ()

    @classmethod
    def nothing(cls) -> Self:
        """An empty Landlock (as ``Landlock()``): it handles nothing until a builder
        grants a path or a port, or ``deny_fs()``/``deny_tcp()``/``scope()`` says so."""
        return cls()

    @property
    def name(self) -> str:
        """What error messages and a policy's RuleSets call these rights."""
        return self._name or type(self).__name__

    def named(self, name: str) -> Self:
        """The same rights under another name."""
        new = copy.copy(self)
        new._name = name
        return new

    # -- filesystem --------------------------------------------------------------------

    def allow(
        self, path: str | os.PathLike[str], access: AccessFs, *, missing_ok: bool = False
    ) -> Self:
        """Grant ``access`` (AccessFs flags) beneath ``path``, a directory or a file."""
        where = f"Landlock.allow({os.fspath(path)!r}, {access!r})"
        if not isinstance(access, AccessFs) or not access:
            raise PolicyError(f"{where}: rights are AccessFs flags, e.g. AccessFs.READ_FILE")
        full, kind, identity = _checked_path(path, where, missing_ok)
        extra = AccessFs(access & ~FILE_RIGHTS)
        if kind == "file" and extra:
            raise PolicyError(
                f"{where}: {_flag_names(extra)} only apply to directories and {full!r} is a "
                f"file; a file can get {_flag_names(FILE_RIGHTS)}"
            )
        return self._grant(full, access, missing_ok, identity)

    def read(self, path: str | os.PathLike[str], *, missing_ok: bool = False) -> Self:
        """Read files beneath ``path`` (READ_FILE), and list directories (READ_DIR)."""
        return self._group("read", path, missing_ok)

    def write(self, path: str | os.PathLike[str], *, missing_ok: bool = False) -> Self:
        """Write and truncate files beneath ``path`` and, in a directory, create regular
        files (WRITE_FILE, TRUNCATE, MAKE_REG). Not reading, deleting or renaming."""
        return self._group("write", path, missing_ok)

    def create(self, path: str | os.PathLike[str], *, missing_ok: bool = False) -> Self:
        """Create regular files and directories in directory ``path`` (MAKE_REG, MAKE_DIR)."""
        return self._group("create", path, missing_ok)

    def delete(self, path: str | os.PathLike[str], *, missing_ok: bool = False) -> Self:
        """Delete files and empty directories in directory ``path`` (REMOVE_FILE, REMOVE_DIR)."""
        return self._group("delete", path, missing_ok)

    def list(self, path: str | os.PathLike[str], *, missing_ok: bool = False) -> Self:
        """List directory ``path`` and the directories beneath it (READ_DIR)."""
        return self._group("list", path, missing_ok)

    def execute(self, path: str | os.PathLike[str], *, missing_ok: bool = False) -> Self:
        """Execute files beneath ``path`` (EXECUTE, and READ_FILE: the kernel opens a
        program for reading to load it, and Landlock checks both rights)."""
        return self._group("execute", path, missing_ok)

    def deny_fs(self) -> Self:
        """Handle every filesystem right even if no path is granted: nothing may be opened."""
        new = copy.copy(self)
        new._fs = ALL_FS
        return new

    # -- network and IPC -----------------------------------------------------------------

    def bind_tcp(self, port: int) -> Self:
        """Allow binding TCP sockets to ``port`` (0: an ephemeral port); deny other ports."""
        return self._port("bind_tcp", port, AccessNet.BIND_TCP)

    def connect_tcp(self, port: int) -> Self:
        """Allow connecting TCP sockets to ``port``; deny other ports."""
        return self._port("connect_tcp", port, AccessNet.CONNECT_TCP)

    def deny_tcp(self) -> Self:
        """Handle TCP bind and connect even if no port is granted: no TCP at all."""
        new = copy.copy(self)
        new._net = ALL_NET
        return new

    def scope(self, scopes: Scope) -> Self:
        """Deny reaching outside this domain: ``Scope.SIGNAL`` (signals to processes
        outside it), ``Scope.ABSTRACT_UNIX_SOCKET`` (abstract sockets created outside it)."""
        if not isinstance(scopes, Scope) or not scopes:
            raise PolicyError(f"Landlock.scope({scopes!r}): pass Scope flags, e.g. Scope.SIGNAL")
        new = copy.copy(self)
        new._scopes = self._scopes | scopes
        return new

    def audit(
        self, *, same_exec: bool = True, new_exec: bool = False, subdomains: bool = True
    ) -> Self:
        """Which denials the kernel audit log records (ABI 7; defaults are the kernel's).

        ``same_exec``: denials by this program, until it calls execve. ``new_exec``:
        denials after an execve. ``subdomains``: denials in domains nested in this one.
        """
        flags = (0 if same_exec else LOG_SAME_EXEC_OFF) | (LOG_NEW_EXEC_ON if new_exec else 0)
        new = copy.copy(self)
        new._restrict = flags | (0 if subdomains else LOG_SUBDOMAINS_OFF)
        return new

    # -- conveniences (paths that do not exist here are skipped) --------------------------

    def ssl_certs(self) -> Self:
        """Read the CA certificates TLS clients verify with (read: files and listing).

        /etc/ssl/certs, /etc/pki/tls/certs, /etc/pki/ca-trust/extracted,
        /etc/ca-certificates/extracted, /usr/share/ca-certificates,
        /usr/local/share/ca-certificates, /var/lib/ca-certificates; the bundles
        /etc/ssl/cert.pem, /etc/ssl/ca-bundle.pem, /etc/pki/tls/cert.pem,
        /etc/pki/tls/cacert.pem; OpenSSL's default file and directory
        (``ssl.get_default_verify_paths()``); $SSL_CERT_FILE and $SSL_CERT_DIR if set;
        certifi's bundle if certifi is importable; and the targets of links in those
        directories that point elsewhere. Links are resolved: the real paths are granted.
        """
        return self._each(ssl_cert_paths(), "read")

    def dns(self) -> Self:
        """Read what glibc's resolver reads to resolve names and services.

        /etc/resolv.conf (and its target's directory when it is a link, so an atomic
        replacement stays readable), /etc/hosts, /etc/host.conf, /etc/nsswitch.conf,
        /etc/gai.conf, /etc/services, /etc/protocols, /etc/ld.so.cache (dlopen finds NSS
        modules through it) and the ``libnss_<name>.so.2`` modules nsswitch.conf names for
        hosts and services, looked up beside the libc this process uses, then in the
        multiarch, lib64 and lib directories. Sockets are Networking's business.
        """
        return self._each(dns_paths(), "read")

    def python_runtime(self) -> Self:
        """Read and execute the interpreter's files, read its libraries: lazy imports
        keep working after confinement.

        Read and execute: sys.prefix, sys.exec_prefix, sys.base_prefix,
        sys.base_exec_prefix, the stdlib and site-packages directories (sysconfig and
        site), the user site-packages, every absolute sys.path entry except "/", and the
        directories of already imported packages (editable installs live outside
        site-packages). Read: the directories of the shared libraries mapped into this
        process (where C extensions find libssl, libz...) and /etc/ld.so.cache.
        """
        code, libraries = python_paths()
        return self._each(code, "read", "execute")._each(libraries, "read")

    def tmp(self, path: str | os.PathLike[str], *, missing_ok: bool = False) -> Self:
        """Every right beneath directory ``path``: a scratch directory of its own."""
        return self._group("tmp", path, missing_ok)

    def devices(self) -> Self:
        """/dev/null and /dev/zero: read and write (with O_TRUNC, as ``open(p, "w")``
        does); /dev/urandom: read. Not their ioctls (a tty check on them fails: harmless).
        """
        return self._each(DEVICES[:2], "read", "write")._each(DEVICES[2:], "read")

    # -- what the rest of the package uses ----------------------------------------------

    def grants(self) -> tuple[tuple[str, AccessFs], ...]:
        """Every ``(path, rights)`` this ruleset grants, in the order they were added."""
        return tuple((grant[0], AccessFs(grant[1])) for grant in self._paths)

    @property
    def confines_fs(self) -> bool:
        """Whether this ruleset handles filesystem rights (a path grant or ``deny_fs()``)."""
        return bool(self._fs)

    def rules(self) -> tuple[Rule, ...]:
        """The syscalls the granted rights need (``implied_rules``), and no more: what a
        ``Policy`` adds for a Landlock given to it (merged as implied rules)."""
        granted_fs = AccessFs(0)
        for grant in self._paths:
            granted_fs |= grant[1]
        granted_net = AccessNet(0)
        for _, access in self._ports:
            granted_net |= access
        return implied_rules(granted_fs, granted_net)

    @classmethod
    def merge(cls, parts: Iterable[Landlock]) -> Landlock:
        """One ruleset handling the union of the parts' rights and granting all their rules."""
        out = cls()
        for part in parts:
            out._fs, out._net = out._fs | part._fs, out._net | part._net
            out._scopes, out._restrict = out._scopes | part._scopes, out._restrict | part._restrict
            out._paths += tuple(p for p in part._paths if p not in out._paths)
            out._ports += tuple(p for p in part._ports if p not in out._ports)
        return out

    def plan(self, compat: Compat = Compat.BEST_EFFORT) -> LandlockPlan:
        """These rights as plain data for ``apply_plan``, under ``compat``."""
        fs, net, scopes = int(self._fs), int(self._net), int(self._scopes)
        return LandlockPlan(compat, fs, net, scopes, self._restrict, self._paths, self._ports)

    # RuleSet's syscall builders, refused with the way to say it (a Landlock grants paths).
    def allow_rule(self, syscall: str, *conditions: Cmp) -> NoReturn:
        raise PolicyError(_NOT_SYSCALLS.format(f"allow_rule({syscall!r})"))

    def deny(self, *syscalls: str, action: Action | None = None) -> NoReturn:
        raise PolicyError(_NOT_SYSCALLS.format(f"deny({', '.join(map(repr, syscalls))})"))

    def __repr__(self) -> str:
        what = [f"{len(self._paths)} paths", f"{len(self._ports)} ports"]
        what += [repr(self._scopes)] if self._scopes else []
        return f"<Landlock {self.name}: {', '.join(what)}>"

    # -- internals ---------------------------------------------------------------------

    def _grant(self, path: str, access: int, missing_ok: bool, identity: Identity) -> Self:
        new = copy.copy(self)
        new._fs = ALL_FS
        rule = (path, int(access), missing_ok, *identity)
        new._paths = self._paths if rule in self._paths else (*self._paths, rule)
        return new

    def _group(self, group: str, path: str | os.PathLike[str], missing_ok: bool) -> Self:
        """Grant a group's file rights, plus its directory rights when ``path`` is a
        directory (or absent: ``apply_plan`` drops them if it turns out to be a file)."""
        where = f"Landlock.{group}({os.fspath(path)!r})"
        full, kind, identity = _checked_path(path, where, missing_ok)
        file, directory = GROUPS[group]
        if kind == "file" and not file:
            raise PolicyError(f"{where}: {group} applies to directories and {full!r} is a file")
        rights = file if kind == "file" else file | directory
        return self._grant(full, rights, missing_ok, identity)

    def _each(self, paths: Iterable[str], *groups: str) -> Self:
        """Grant the union of ``groups`` on each path that exists (one rule per path)."""
        file, directory = AccessFs(0), AccessFs(0)
        for group in groups:
            file, directory = file | GROUPS[group][0], directory | GROUPS[group][1]
        rs = self
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            rights = file | directory if stat.S_ISDIR(st.st_mode) else file
            rs = rs._grant(os.path.abspath(path), rights, True, (st.st_dev, st.st_ino))
        return rs

    def _port(self, method: str, port: int, access: AccessNet) -> Self:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise PolicyError(f"Landlock.{method}({port!r}): a TCP port is an int, 0 to 65535")
        new = copy.copy(self)
        new._net = ALL_NET
        rule = (port, int(access))
        new._ports = self._ports if rule in self._ports else (*self._ports, rule)
        return new


#: The groups of rights builders grant: (on a file or beneath, added on a directory).
GROUPS: Final = {
    "read": (AccessFs.READ_FILE, AccessFs.READ_DIR),
    "write": (AccessFs.WRITE_FILE | AccessFs.TRUNCATE, AccessFs.MAKE_REG),
    "create": (AccessFs(0), AccessFs.MAKE_REG | AccessFs.MAKE_DIR),
    "delete": (AccessFs(0), AccessFs.REMOVE_FILE | AccessFs.REMOVE_DIR),
    "list": (AccessFs(0), AccessFs.READ_DIR),
    "execute": (AccessFs.EXECUTE | AccessFs.READ_FILE, AccessFs(0)),
    "tmp": (AccessFs(0), ALL_FS),
}
_NOT_SYSCALLS: Final = (
    "Landlock.{}: a Landlock ruleset grants paths, ports and scopes; put syscall rules in "
    "another RuleSet, e.g. RuleSet.nothing().allow(...)"
)


Identity = tuple[int, int]  # (st_dev, st_ino); (0, 0): the path did not exist
_MISSING: Final[Identity] = (0, 0)


def _checked_path(
    path: str | os.PathLike[str], where: str, missing_ok: bool
) -> tuple[str, str, Identity]:
    """The absolute path, its kind ("dir", "file", or "missing" when allowed) and the
    identity of what it names now (checked again when the policy is applied)."""
    if not isinstance(path, str | os.PathLike) or not isinstance(os.fspath(path), str):
        raise PolicyError(f"{where}: a path is a str or os.PathLike of str")
    full = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(full)
    except (FileNotFoundError, NotADirectoryError):
        if missing_ok:
            return full, "missing", _MISSING
        raise PolicyError(
            f"{where}: no such file or directory; pass missing_ok=True to grant it only "
            "if it exists when the policy is applied"
        ) from None
    except OSError as exc:
        raise PolicyError(f"{where}: cannot stat {full!r}: {exc.strerror}") from None
    return full, "dir" if stat.S_ISDIR(st.st_mode) else "file", (st.st_dev, st.st_ino)


def _flag_names(flags: AccessFs) -> str:
    return ", ".join(str(f.name) for f in AccessFs if f & flags)

"""The kernel side of Landlock: the syscalls bound with ctypes, and enforcing a plan.

An isolate loads a ``LandlockPlan`` with this module and ``_landlock_abi`` alone (ctypes,
no builder, no libseccomp).

Safety argument, kept next to the code it covers:

- Every call goes through ``_kernel.syscall`` (glibc's ``syscall(2)`` through ctypes with
  ``use_errno``), which reads errno *only* when the call returned -1: a stale errno after
  a successful call is never reported as a failure.
- ``syscall(2)`` is variadic, so every integer is passed as a ``c_long`` (a full register,
  never a C ``int`` with undefined upper bits) and every pointer as ``byref`` of a
  structure held in a local variable until the call returns. The kernel copies the
  structures (``copy_struct_from_user``) and keeps no pointer to them.
- The structure layouts are the UAPI's and are checked at import: ``landlock_ruleset_attr``
  is three u64 (passed with the size the running ABI knows), ``landlock_path_beneath_attr``
  is packed (12 bytes), ``landlock_net_port_attr`` is two u64.
- Every descriptor opened here (one ``O_PATH`` per granted path, the ruleset itself) is
  closed in a ``finally``: nothing leaks, whatever fails.
- Nothing here can widen rights: a ruleset only restricts, and enforcing it is one-way.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from typing import Final

from . import _kernel
from ._errors import SandboxError
from ._landlock_abi import (
    CREATE_RULESET_ERRATA,
    CREATE_RULESET_VERSION,
    FILE_RIGHTS,
    RULE_NET_PORT,
    RULE_PATH_BENEATH,
    TSYNC,
    Fitted,
    fit,
    kernel_of,
    needs,
)

#: Test hook: the highest ABI this process believes the kernel has (read at apply time).
ABI_CAP_ENV: Final = "ISOLATES_LANDLOCK_ABI"
_UNAVAILABLE: Final = (errno.ENOSYS, errno.EOPNOTSUPP)


class RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


assert ctypes.sizeof(RulesetAttr) == 24
assert ctypes.sizeof(PathBeneathAttr) == 12
assert ctypes.sizeof(NetPortAttr) == 16


def _call(name: str, *args: object) -> int:
    return _kernel.syscall(name, *(ctypes.c_long(a) if isinstance(a, int) else a for a in args))


def kernel_abi() -> int:
    """The Landlock ABI version of the running kernel; 0 when Landlock is unavailable."""
    try:
        return _call("landlock_create_ruleset", None, 0, CREATE_RULESET_VERSION)
    except OSError as exc:  # SandboxError(ENOSYS) too: an architecture we have no number for
        if exc.errno in _UNAVAILABLE:
            return 0
        raise


def abi() -> int:
    """The ABI to use: the kernel's, capped by ``$ISOLATES_LANDLOCK_ABI`` when set."""
    cap = os.environ.get(ABI_CAP_ENV, "").strip()
    if cap and not cap.isdigit():
        raise SandboxError(errno.EINVAL, f"${ABI_CAP_ENV}={cap!r}: expected an ABI number")
    kernel = kernel_abi()
    return min(kernel, int(cap)) if cap else kernel


def errata() -> int:
    """Bitmask of fixed errata (bit N-1: erratum N); 0 when the kernel cannot say."""
    try:
        return _call("landlock_create_ruleset", None, 0, CREATE_RULESET_ERRATA)
    except OSError as exc:
        if exc.errno in (*_UNAVAILABLE, errno.EINVAL):  # EINVAL: before the errata query
            return 0
        raise


def create_ruleset(fs: int, net: int, scopes: int, abi: int) -> int:
    """A new ruleset descriptor handling these rights; the caller closes it."""
    attr = RulesetAttr(fs, net, scopes)
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the struct as this ABI knows it
    return _call("landlock_create_ruleset", ctypes.byref(attr), size, 0)


def add_path_rule(ruleset: int, parent_fd: int, access: int) -> None:
    attr = PathBeneathAttr(access, parent_fd)
    _call("landlock_add_rule", ruleset, RULE_PATH_BENEATH, ctypes.byref(attr), 0)


def add_port_rule(ruleset: int, port: int, access: int) -> None:
    attr = NetPortAttr(access, port)
    _call("landlock_add_rule", ruleset, RULE_NET_PORT, ctypes.byref(attr), 0)


def restrict_self(ruleset: int, flags: int) -> None:
    """Enforce ``ruleset`` on the calling thread (all threads with TSYNC). One-way."""
    _kernel.set_no_new_privs()  # required without CAP_SYS_ADMIN; seccomp sets it anyway
    _call("landlock_restrict_self", ruleset, flags)


Paths = Iterable[tuple[str, int, bool]]
Ports = Iterable[tuple[int, int]]


def enforce(fitted: Fitted, paths: Paths, ports: Ports, abi: int) -> None:
    """Build the ruleset ``fitted`` describes, add every rule, and enforce it."""
    try:
        ruleset = create_ruleset(fitted.fs, fitted.net, fitted.scopes, abi)
    except OSError as exc:
        raise _explain("landlock_create_ruleset", exc) from None
    try:
        _add_paths(ruleset, paths, fitted.fs)
        _add_ports(ruleset, ports, fitted.net)
        restrict_self(ruleset, fitted.restrict)
    except SandboxError:
        raise
    except OSError as exc:
        raise _explain("landlock_restrict_self", exc) from None
    finally:
        os.close(ruleset)


def _add_paths(ruleset: int, paths: Paths, handled: int) -> None:
    for path, access, missing_ok in paths:
        fd = _open_path(path, missing_ok)
        if fd is None:
            continue
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                access &= FILE_RIGHTS  # the path became a file since the policy was built
            if access & handled:
                add_path_rule(ruleset, fd, access & handled)
        except OSError as exc:
            raise _explain(f"landlock_add_rule({path!r})", exc) from None
        finally:
            os.close(fd)


def _open_path(path: str, missing_ok: bool) -> int | None:
    try:
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError) as exc:
        if missing_ok:
            return None
        raise SandboxError(
            exc.errno,
            f"Landlock: {path!r} no longer exists (it did when the policy was "
            "built); pass missing_ok=True to grant it only when present",
        ) from None
    except OSError as exc:
        raise SandboxError(exc.errno, f"Landlock: cannot open {path!r}: {exc.strerror}") from None


def _add_ports(ruleset: int, ports: Ports, handled: int) -> None:
    for port, access in ports:
        if access & handled:
            try:
                add_port_rule(ruleset, port, access & handled)
            except OSError as exc:
                raise _explain(f"landlock_add_rule(port {port})", exc) from None


_REASONS: Final = {
    errno.ENOSYS: "this kernel has no Landlock (CONFIG_SECURITY_LANDLOCK, Linux 5.13+)",
    errno.EOPNOTSUPP: "Landlock is built in but disabled: add 'landlock' to the lsm= boot "
    "parameter (or CONFIG_LSM)",
    errno.E2BIG: "this thread already has 16 stacked Landlock domains, the kernel's limit",
    errno.EPERM: "the thread has neither NO_NEW_PRIVS nor CAP_SYS_ADMIN in its namespace",
    errno.EINVAL: "the kernel refused a right or flag (a bug: isolates fits requests to "
    "the running ABI first)",
    errno.ENOMSG: "a rule grants no right the ruleset handles",
    errno.EBADFD: "a rule's descriptor is not a usable file",
}


def _explain(call: str, exc: OSError) -> SandboxError:
    err = exc.errno or errno.EPERM
    return SandboxError(err, f"Landlock: {call} failed: {_REASONS.get(err, exc.strerror)}")


# -- plans and what enforcing them achieved -----------------------------------------------


@dataclass(frozen=True)
class LandlockPlan:
    """Plain data (msgspec-encodable) for ``apply_plan``: what to ask the kernel for.

    ``compat`` is ``"best_effort"`` or ``"hard"``; ``paths`` are ``(absolute path,
    AccessFs bits, missing_ok)``; ``ports`` are ``(port, AccessNet bits)``. Handled rights
    are the whole request, before it is fitted to a kernel.
    """

    compat: str = "best_effort"
    handled_fs: int = 0
    handled_net: int = 0
    scoped: int = 0
    restrict_flags: int = 0
    paths: tuple[tuple[str, int, bool], ...] = ()
    ports: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class LandlockStatus:
    """What Landlock enforces after ``apply_plan``.

    ``enforcement``: ``"full"`` (everything asked for), ``"partial"`` (``dropped`` names
    what the kernel lacks), ``"none"`` (no Landlock domain could be created). ``abi`` is
    the ABI version used (0: no Landlock).
    """

    enforcement: str
    abi: int
    dropped: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.abi == 0:
            if self.enforcement == "full":
                return "full (nothing was asked of Landlock)"
            return "none (this kernel has no Landlock: it needs Linux 5.13+)"
        where = f"Landlock ABI {self.abi}, Linux {kernel_of(self.abi)}+"
        if self.enforcement == "full":
            return f"full ({where})"
        return f"{self.enforcement} ({where}; dropped {', '.join(map(needs, self.dropped))})"


def apply_plan(
    plan: LandlockPlan, *, all_threads: bool = False, covered: Collection[int] = ()
) -> LandlockStatus:
    """Enforce ``plan`` on this thread (or every thread); say what was enforced.

    Under best effort what the kernel lacks is dropped and listed in the status; under
    ``"hard"`` a SandboxError names it, before anything irreversible happens. Landlock is
    per-thread until ABI 8 (TSYNC): on an older kernel ``all_threads`` holds only when this
    is the process's sole thread, and is otherwise reported as dropped. ``covered`` names
    threads (native ids) that already applied this plan themselves (a supervisor's own
    helper threads): they do not count against ``all_threads``.
    """
    version = abi()
    granted = 0
    for _, access, _ in plan.paths:
        granted |= access
    fitted = fit(plan.handled_fs, granted, plan.handled_net, plan.scoped, plan.restrict_flags,
                 version)  # fmt: skip
    fitted = _all_threads(fitted, version, covered) if all_threads else fitted
    if plan.compat == "hard" and fitted.dropped:
        raise _hard_error(version, fitted.dropped)
    if fitted.empty:
        asked = plan.handled_fs or plan.handled_net or plan.scoped
        return LandlockStatus("none" if asked else "full", version, fitted.dropped)
    enforce(fitted, plan.paths, plan.ports, version)
    return LandlockStatus("partial" if fitted.dropped else "full", version, fitted.dropped)


def _all_threads(fitted: Fitted, version: int, covered: Collection[int] = ()) -> Fitted:
    if version >= 8:
        return replace(fitted, restrict=fitted.restrict | TSYNC)
    try:  # a sole thread is the whole process, and nobody else can start one meanwhile
        others = set(os.listdir("/proc/self/task")) - {str(t) for t in covered}
        alone = others == {str(threading.get_native_id())}
    except OSError:
        alone = False
    return fitted if alone else replace(fitted, dropped=(*fitted.dropped, "all_threads"))


def _hard_error(version: int, dropped: tuple[str, ...]) -> SandboxError:
    if version == 0:
        have = (
            "this kernel has no Landlock (it needs Linux 5.13+ built with "
            "CONFIG_SECURITY_LANDLOCK=y and 'landlock' in the lsm= boot parameter)"
        )
    else:
        have = f"this kernel has Landlock ABI {version} (Linux {kernel_of(version)})"
    return SandboxError(
        errno.EOPNOTSUPP,
        f"Landlock (Compat.HARD): {have}; the policy needs {', '.join(map(needs, dropped))}. "
        "Use Compat.BEST_EFFORT to enforce what the kernel has.",
    )

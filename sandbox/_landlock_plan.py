"""Landlock plans and what enforcing them achieved: ``LandlockPlan`` (what to ask the
kernel for), ``resolve`` (the plan fitted to a kernel's ABI, as plain data), ``apply_plan``
and ``LandlockStatus``. The raw calls are the kernel side's (_landlock_sys.py), which an
isolate uses alone: its parent resolves the plan for it (same kernel, same answer).
"""

from __future__ import annotations

import enum
import errno
import functools
from collections.abc import Collection
from dataclasses import dataclass, replace

from ._errors import SandboxError
from ._landlock_abi import DOMAIN, AccessFs, Fitted, fit, kernel_of, needs
from ._landlock_sys import ROOT, PathGrant, Resolved, abi, enforce_resolved, for_threads


class Compat(enum.StrEnum):
    """What to do when the kernel lacks a requested Landlock feature.

    A ``StrEnum``: a member equals its value (``Compat.HARD == "hard"``) and crosses a
    wire (msgspec) as that string.
    """

    BEST_EFFORT = "best_effort"  # enforce what the kernel has; the status lists the rest
    HARD = "hard"  # raise SandboxError naming the feature and the kernel that brings it


class Enforcement(enum.StrEnum):
    """How much of what was asked for is in force (``Status`` and ``LandlockStatus``).

    A ``StrEnum``: ``status.enforcement == "full"`` holds, and msgspec encodes it as the
    string.
    """

    FULL = "full"  # everything asked for
    PARTIAL = "partial"  # some of it: the status names what was dropped
    NONE = "none"  # nothing could be enforced


@dataclass(frozen=True)
class LandlockPlan:
    """Plain data (msgspec-encodable) for ``apply_plan``: what to ask the kernel for.

    ``compat`` is a ``Compat`` (its string value is accepted and converted); ``paths``
    are ``PathGrant`` tuples ``(absolute path, AccessFs bits, missing_ok, st_dev,
    st_ino)``; ``ports`` are ``(port, AccessNet bits)``. Handled rights are the whole
    request, before it is fitted to a kernel. An empty plan still makes a domain (see
    ``apply_plan``).
    """

    compat: Compat = Compat.BEST_EFFORT
    handled_fs: int = 0
    handled_net: int = 0
    scoped: int = 0
    restrict_flags: int = 0
    paths: tuple[PathGrant, ...] = ()
    ports: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if type(self.compat) is not Compat:  # given as its string value ("hard")
            object.__setattr__(self, "compat", Compat(self.compat))


@dataclass(frozen=True)
class LandlockStatus:
    """What Landlock enforces after ``apply_plan``.

    ``enforcement``: ``FULL`` (everything asked for), ``PARTIAL`` (``dropped`` names what
    the kernel lacks), ``NONE`` (no Landlock domain could be created: then ``dropped``
    names ``"domain"`` too, since nothing confines ptrace-class access such as
    /proc/PID/mem to this sandbox). ``abi`` is the ABI version used (0: no Landlock).
    """

    enforcement: Enforcement
    abi: int
    dropped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if type(self.enforcement) is not Enforcement:  # given as its string value ("full")
            object.__setattr__(self, "enforcement", Enforcement(self.enforcement))

    @property
    def domain(self) -> bool:
        """Whether a Landlock domain is in force: it confines ptrace-class access
        (/proc/PID/mem, environ and fd, pidfd_getfd, kcmp) to processes inside it."""
        return DOMAIN not in self.dropped

    def __str__(self) -> str:
        if self.abi == 0:
            return (
                "none (this kernel has no Landlock: it needs Linux 5.13+; without a domain "
                "nothing keeps /proc/PID/mem and other ptrace-class access from processes "
                "of the same user outside this sandbox)"
            )
        where = f"Landlock ABI {self.abi}, Linux {kernel_of(self.abi)}+"
        if self.enforcement is Enforcement.FULL:
            return f"full ({where})"
        return f"{self.enforcement} ({where}; dropped {', '.join(map(needs, self.dropped))})"


@functools.lru_cache(maxsize=64)
def resolve(plan: LandlockPlan, version: int) -> Resolved:
    """``plan`` fitted to Landlock ABI ``version``: plain data for ``enforce_resolved``.

    Pure arithmetic: an isolate's parent resolves its plan, so the isolate needs neither
    this module nor the enums and tables it uses. Remembered (plans are frozen): every
    call of an isolated function resolves the same plan, and fitting it costs 0.1 ms."""
    granted = 0
    for grant in plan.paths:
        granted |= grant[1]
    fitted = fit(
        plan.handled_fs, granted, plan.handled_net, plan.scoped, plan.restrict_flags, version
    )
    paths = plan.paths
    if fitted.empty:
        fitted, paths = _minimal(fitted, version)
    hard = plan.compat == Compat.HARD
    # Plain ints and strs throughout (never the enums): an isolate unpickles this, and
    # an IntFlag would import this module's tables there.
    handled = (int(fitted.fs), int(fitted.net), int(fitted.scopes), int(fitted.restrict))
    grants = tuple((str(p), int(a), bool(m), int(d), int(i)) for p, a, m, d, i in paths)
    ports = tuple((int(port), int(access)) for port, access in plan.ports)
    return (*handled, tuple(map(str, fitted.dropped)), grants, ports, int(version), hard)


def resolve_here(plan: LandlockPlan | None) -> Resolved:
    """``plan`` (None: no rights asked, a minimal domain) fitted to this kernel: what an
    isolate's parent sends it, for ``_confine.confine`` (same kernel, same answer)."""
    return resolve(plan or LandlockPlan(), abi())


def apply_plan(
    plan: LandlockPlan, *, all_threads: bool = False, covered: Collection[int] = ()
) -> LandlockStatus:
    """Enforce ``plan`` on this thread (or every thread); say what was enforced.

    Under best effort what the kernel lacks is dropped and listed in the status; under
    ``Compat.HARD`` a SandboxError names it, before anything irreversible happens. For
    ``all_threads`` and ``covered`` see ``_landlock_sys.for_threads``.
    """
    resolved = refuse_hard(for_threads(resolve(plan, abi()), all_threads, covered))
    return status_of(enforce_resolved(resolved))


def refuse_hard(resolved: Resolved) -> Resolved:
    """``resolved``, unless it is a Compat.HARD plan the kernel cannot fully enforce: then
    a SandboxError names what is missing and the kernel that brings it."""
    dropped, version, hard = resolved[4], resolved[7], resolved[8]
    if hard and dropped:
        raise _hard_error(version, dropped)
    return resolved


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


def status_of(enforced: tuple[str, int, tuple[str, ...]]) -> LandlockStatus:
    """What ``enforce_resolved`` returned, as a LandlockStatus."""
    enforcement, version, dropped = enforced
    return LandlockStatus(Enforcement(enforcement), version, tuple(dropped))


def _minimal(fitted: Fitted, version: int) -> tuple[Fitted, tuple[PathGrant, ...]]:
    """A domain even when nothing is asked of Landlock: a process in a domain may not
    ptrace, or open /proc/PID/mem, environ or fd/ of, processes outside it (the same power
    as ptrace, through files).

    It handles REFER and grants it beneath "/", which restricts nothing: a domain that
    handles filesystem rights but not REFER refuses every rename or link into another
    directory (EXDEV), as ABI 1 did. On ABI 1 there is no REFER, so the domain handles
    MAKE_BLOCK (creating block devices, which needs CAP_MKNOD anyway) and renames into
    another directory fail with EXDEV (``mv`` and ``shutil.move`` then copy)."""
    if version < 1:
        return replace(fitted, dropped=(*fitted.dropped, DOMAIN)), ()
    if version < 2:
        return replace(fitted, fs=AccessFs.MAKE_BLOCK), ()
    refer = int(AccessFs.REFER)
    return replace(fitted, fs=refer), ((ROOT, refer, False, 0, 0),)

"""A compiled policy: plain data an isolate can load with ctypes alone, and its status.

Applying it is ``_confine.confine`` (the one sequence, which an isolate runs from the
same data without this module): the capability drop, Landlock, then seccomp, each
through the raw modules with their own safety argument. Applying only ever takes away.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from ._capabilities import capability_names
from ._confine import PTRACE_BYPASS as PTRACE_BYPASS
from ._confine import check_pid, confine, program_for_pid
from ._landlock_plan import (
    Enforcement,
    LandlockPlan,
    LandlockStatus,
    apply_plan,
    resolve,
    status_of,
)
from ._landlock_sys import abi


@dataclass(frozen=True)
class Status:
    """What the kernel actually enforces after a context was applied.

    ``enforcement`` (an ``Enforcement``, equal to its string value) is ``FULL`` when
    seccomp and every Landlock right asked for are in force, ``PARTIAL`` when Landlock had
    to drop rights (``landlock.dropped`` lists them; ``"domain"`` when the kernel has no
    Landlock at all, so nothing confines ptrace-class access such as /proc/PID/mem),
    ``NONE`` when nothing could be enforced. ``capabilities``: the capabilities kept
    (``CAP_`` names) when every other was dropped, as isolates and ``isolates run`` do;
    None when only the two that bypass Landlock were (``Policy.apply`` in a thread).
    ``limits``: an isolate's resource limits, each with what enforces it ("memory:
    rlimit DATA 256 MiB"); None where none were asked for (the orchestrator sets it).
    """

    seccomp: bool
    all_threads: bool
    landlock: LandlockStatus | None = None
    capabilities: tuple[str, ...] | None = None
    limits: tuple[str, ...] | None = None

    @property
    def enforcement(self) -> Enforcement:
        landlock = self.landlock.enforcement if self.landlock is not None else None
        if landlock in (None, Enforcement.FULL):
            return Enforcement.FULL if self.seccomp else Enforcement.NONE
        if landlock is Enforcement.NONE and not self.seccomp:
            return Enforcement.NONE
        return Enforcement.PARTIAL

    def __str__(self) -> str:
        scope = "all threads" if self.all_threads else "this thread"
        parts = [f"seccomp: {'enforced' if self.seccomp else 'off'} ({scope})"]
        if self.landlock is not None:
            parts.append(f"landlock: {self.landlock}")
        if self.capabilities is not None:
            parts.append(f"capabilities: {', '.join(self.capabilities) or 'none'} kept")
        if self.limits:
            parts.append(f"limits: {', '.join(self.limits)}")
        return f"{self.enforcement}: " + "; ".join(parts)


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy as plain data: the BPF program (bytes) and the Landlock plan.

    This is what crosses into an isolate; loading it needs neither libseccomp nor the
    Policy objects that produced it. Applying it always makes a Landlock domain, a
    minimal one when ``landlock`` is None (see ``apply_plan``), and drops CAP_SYS_ADMIN
    and CAP_PERFMON from the thread (with either, a Landlock domain still lets
    /proc/PID/environ and maps of other processes be read).

    ``self_pid``: the process ``SELF_PID`` rules were resolved to (None if the policy has
    none); applying such a program in another process raises SandboxError, since its
    "self" would be someone else.
    """

    bpf: bytes
    landlock: LandlockPlan | None = None
    #: Modules to import before loading: ones the policy's calls load lazily, which a
    #: confined process could no longer read (``encodings.idna`` for socket addresses).
    preload: tuple[str, ...] = ()
    self_pid: int | None = None
    #: For a program whose kills (or errnos) notify a listener: the same policy with its
    #: own answers, loaded without a listener where one is already installed above this
    #: process (the kernel allows one per filter stack: under ``isolates trace``).
    fallback_bpf: bytes | None = None
    #: The instructions of ``bpf`` whose ``k`` is ``self_pid`` (the low half of a SELF_PID
    #: comparison): ``for_pid`` patches them to give the program to another process.
    pid_slots: tuple[int, ...] = ()

    def for_pid(self, pid: int) -> bytes:
        """``bpf`` with its SELF_PID rules made for process ``pid``."""
        return program_for_pid(self.bpf, self.pid_slots, pid)

    def apply(
        self,
        *,
        all_threads: bool = False,
        covered: Collection[int] = (),
        capabilities: Collection[int] | None = None,
        for_exec: bool = False,
    ) -> Status:
        """Load Landlock, then seccomp (last, so Landlock's own syscalls stay allowed).

        ``covered``: threads that applied the Landlock plan themselves already (see
        ``apply_landlock_here``), so ``all_threads`` can hold on kernels without
        Landlock's thread synchronisation. ``capabilities``: keep only these (numbers,
        see ``lowlevel.capability_numbers``) and drop every other, locked; ``for_exec``
        keeps them across an exec (``isolates run``). None (the default) drops only
        CAP_SYS_ADMIN and CAP_PERFMON.
        """
        status, _ = self.apply_with_listener(
            all_threads=all_threads,
            listener=False,
            covered=covered,
            capabilities=capabilities,
            for_exec=for_exec,
        )
        return status

    def apply_landlock_here(self) -> int:
        """Apply only the Landlock plan, in the calling thread; its native thread id."""
        apply_plan(self.landlock or _NO_RIGHTS)
        return threading.get_native_id()

    def apply_with_listener(
        self,
        *,
        all_threads: bool = False,
        listener: bool = True,
        covered: Collection[int] = (),
        capabilities: Collection[int] | None = None,
        for_exec: bool = False,
    ) -> tuple[Status, int | None]:
        """Like ``apply``; with ``listener`` also return the USER_NOTIF descriptor."""
        check_pid(self.self_pid)  # before resolving: a wrong process learns it first
        keep = None if capabilities is None else tuple(capabilities)
        enforced, fd, kept = confine(
            self.bpf,
            resolve(self.landlock or _NO_RIGHTS, abi()),
            self_pid=self.self_pid,
            preload=self.preload,
            all_threads=all_threads,
            listener=listener,
            covered=covered,
            capabilities=keep,
            for_exec=for_exec,
            fallback=self.fallback_bpf if listener else None,
        )
        names = None if kept is None else capability_names(kept)
        return Status(True, all_threads, status_of(enforced), names), fd


_NO_RIGHTS: Final = LandlockPlan()

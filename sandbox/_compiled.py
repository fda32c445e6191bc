"""A compiled policy: plain data an isolate can load with ctypes alone, and its status.

Safety argument, kept next to the code it covers:

- ctypes is imported for one thing: ``preload_runtime`` loads libgcc_s with
  ``ctypes.CDLL`` (a dlopen, the one glibc would do itself later, once files are out of
  reach) and keeps the handle for the life of the process; nothing is called through it.
- Every raw call is made elsewhere, through the modules with their own safety argument:
  the capability drop (_kernel_ns), Landlock (_landlock_sys) and seccomp (_kernel).
- Applying only ever takes away: capabilities are dropped, never raised; a Landlock
  domain and a seccomp filter are one-way. The order (Landlock, then seccomp) keeps the
  Landlock calls allowed while they are made.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import os
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from . import _kernel
from ._errors import SandboxError
from ._kernel_ns import drop_capabilities_of
from ._landlock_sys import Enforcement, LandlockPlan, LandlockStatus, apply_plan, kernel_abi
from ._uapi import CAP_PERFMON, CAP_SYS_ADMIN


@dataclass(frozen=True)
class Status:
    """What the kernel actually enforces after a context was applied.

    ``enforcement`` (an ``Enforcement``, equal to its string value) is ``FULL`` when
    seccomp and every Landlock right asked for are in force, ``PARTIAL`` when Landlock had
    to drop rights (``landlock.dropped`` lists them; ``"domain"`` when the kernel has no
    Landlock at all, so nothing confines ptrace-class access such as /proc/PID/mem),
    ``NONE`` when nothing could be enforced.
    """

    seccomp: bool
    all_threads: bool
    landlock: LandlockStatus | None = None

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

    def apply(self, *, all_threads: bool = False, covered: Collection[int] = ()) -> Status:
        """Load Landlock, then seccomp (last, so Landlock's own syscalls stay allowed).

        ``covered``: threads that applied the Landlock plan themselves already (see
        ``apply_landlock_here``), so ``all_threads`` can hold on kernels without
        Landlock's thread synchronisation.
        """
        status, _ = self.apply_with_listener(
            all_threads=all_threads, listener=False, covered=covered
        )
        return status

    def apply_landlock_here(self) -> int:
        """Apply only the Landlock plan, in the calling thread; its native thread id."""
        apply_plan(self.landlock or _NO_RIGHTS)
        return threading.get_native_id()

    def apply_with_listener(
        self, *, all_threads: bool = False, listener: bool = True, covered: Collection[int] = ()
    ) -> tuple[Status, int | None]:
        """Like ``apply``; with ``listener`` also return the USER_NOTIF descriptor."""
        self._check_pid()
        preload_runtime(self.preload)
        # CAP_SYS_ADMIN or CAP_PERFMON let a domain still read other processes'
        # /proc/PID/environ and maps: nothing isolates confines keeps them.
        drop_capabilities_of(PTRACE_BYPASS)
        plan = self.landlock or _NO_RIGHTS
        landlock = apply_plan(plan, all_threads=all_threads, covered=covered)
        fd = _kernel.load_seccomp(self.bpf, all_threads=all_threads, listener=listener)
        return Status(seccomp=True, all_threads=all_threads, landlock=landlock), fd

    def _check_pid(self) -> None:
        if self.self_pid is not None and self.self_pid != os.getpid():
            raise SandboxError(
                errno.ESRCH,
                f"this filter was compiled for process {self.self_pid}, whose SELF_PID rules "
                f"(e.g. Signals.allow_kill_self) would let process {os.getpid()} signal it; "
                "compile the policy in the process that applies it (policy.apply() does)",
            )


_NO_RIGHTS: Final = LandlockPlan()
#: Capabilities with which a process in a Landlock domain may still read /proc/PID/environ
#: and maps of processes outside it (measured on Linux 6.18).
PTRACE_BYPASS: Final = (CAP_SYS_ADMIN, CAP_PERFMON)


def preload_runtime(modules: tuple[str, ...] = ()) -> None:
    """Load now what the process would otherwise load lazily after confinement.

    glibc dlopens libgcc_s the first time a thread is cancelled or calls pthread_exit
    (CPython does so for daemon threads at exit); once files are out of reach that
    aborts the process. Modules in ``modules`` are imported for the same reason.
    It also asks the kernel's Landlock ABI once (cached), which warms the raw-call
    path: a pooled isolate pays for that while it waits, not on a call's path.
    """
    global _LIBGCC
    if _LIBGCC is None:
        try:
            _LIBGCC = ctypes.CDLL("libgcc_s.so.1")
        except OSError:  # not glibc, or statically linked: nothing to preload
            _LIBGCC = False
        kernel_abi()
    for module in modules:
        importlib.import_module(module)


_LIBGCC: ctypes.CDLL | bool | None = None

"""A compiled policy: plain data an isolate can load with ctypes alone, and its status."""

from __future__ import annotations

import ctypes
import importlib
import threading
from collections.abc import Collection
from dataclasses import dataclass

from . import _kernel
from ._landlock_sys import LandlockPlan, LandlockStatus, apply_plan


@dataclass(frozen=True)
class Status:
    """What the kernel actually enforces after a context was applied.

    ``enforcement`` is ``"full"`` when seccomp and every Landlock right asked for are in
    force, ``"partial"`` when Landlock had to drop rights (``landlock.dropped`` lists
    them), ``"none"`` when nothing could be enforced.
    """

    seccomp: bool
    all_threads: bool
    landlock: LandlockStatus | None = None

    @property
    def enforcement(self) -> str:
        if self.landlock is None or self.landlock.enforcement == "full":
            return "full" if self.seccomp else "none"
        if self.landlock.enforcement == "none" and not self.seccomp:
            return "none"
        return "partial"

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
    Policy objects that produced it.
    """

    bpf: bytes
    landlock: LandlockPlan | None = None
    #: Modules to import before loading: ones the policy's calls load lazily, which a
    #: confined process could no longer read (``encodings.idna`` for socket addresses).
    preload: tuple[str, ...] = ()

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
        if self.landlock is not None:
            apply_plan(self.landlock)
        return threading.get_native_id()

    def apply_with_listener(
        self, *, all_threads: bool = False, listener: bool = True, covered: Collection[int] = ()
    ) -> tuple[Status, int | None]:
        """Like ``apply``; with ``listener`` also return the USER_NOTIF descriptor."""
        preload_runtime(self.preload)
        landlock = None
        if self.landlock is not None:
            landlock = apply_plan(self.landlock, all_threads=all_threads, covered=covered)
        fd = _kernel.load_seccomp(self.bpf, all_threads=all_threads, listener=listener)
        return Status(seccomp=True, all_threads=all_threads, landlock=landlock), fd


def preload_runtime(modules: tuple[str, ...] = ()) -> None:
    """Load now what the process would otherwise load lazily after confinement.

    glibc dlopens libgcc_s the first time a thread is cancelled or calls pthread_exit
    (CPython does so for daemon threads at exit); once files are out of reach that
    aborts the process. Modules in ``modules`` are imported for the same reason.
    """
    global _LIBGCC
    if _LIBGCC is None:
        try:
            _LIBGCC = ctypes.CDLL("libgcc_s.so.1")
        except OSError:  # not glibc, or statically linked: nothing to preload
            _LIBGCC = False
    for module in modules:
        importlib.import_module(module)


_LIBGCC: ctypes.CDLL | bool | None = None

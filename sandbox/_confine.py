"""Applying a compiled policy from plain data: the one sequence every confined process
runs. ``CompiledPolicy.apply`` comes here, and so does an isolate, which is sent the same
data (the BPF program, and its Landlock plan already fitted to this kernel by its parent:
``_landlock_plan.resolve``) and never builds a CompiledPolicy.

Lean on purpose: an isolate imports this before it is confined, where every module costs
start-up time, so it imports only the raw modules (no dataclasses, enum or typing).
"""

from __future__ import annotations

import errno
import os
import sys

from ._errors import SandboxError
from ._kernel import load_seccomp, rehearse_seccomp
from ._kernel import preload_runtime as _preload
from ._kernel_ns import drop_capabilities_of, keep_only_capabilities
from ._landlock_sys import enforce_resolved, enforcement_of, for_threads, kernel_abi
from ._landlock_sys import rehearse as rehearse_landlock
from ._uapi import CAP_PERFMON, CAP_SYS_ADMIN

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import Final

    from ._landlock_sys import Resolved

#: Capabilities with which a process in a Landlock domain may still read /proc/PID/environ
#: and maps of processes outside it (measured on Linux 6.18).
PTRACE_BYPASS: Final = (CAP_SYS_ADMIN, CAP_PERFMON)


def confine(
    bpf: bytes,
    landlock: Resolved,
    *,
    self_pid: int | None = None,
    preload: tuple[str, ...] = (),
    all_threads: bool = False,
    listener: bool = False,
    covered: Collection[int] = (),
    capabilities: tuple[int, ...] | None = None,
    for_exec: bool = False,
    fallback: bytes | None = None,
) -> tuple[tuple[str, int, tuple[str, ...]], int | None, tuple[int, ...] | None]:
    """Drop capabilities, then Landlock, then seccomp (last, so Landlock's own syscalls
    stay allowed). Returns what Landlock enforces (enforcement, abi, dropped), with
    ``listener`` the USER_NOTIF descriptor, and the capabilities kept.

    ``capabilities``: None drops only the ptrace-bypassing two (``Policy.apply`` in a
    thread of a program that keeps its own); a tuple drops every capability but those,
    locked against regaining any (isolates and ``isolates run``: ``for_exec`` keeps them
    across the exec). ``self_pid``: the process SELF_PID rules were resolved to;
    ``covered``: threads that applied the Landlock plan themselves already. ``fallback``:
    the program to load, without a listener, when a listener is asked for and one is
    already installed above us (the descriptor returned is then None)."""
    check_pid(self_pid)
    preload_runtime(preload)
    # CAP_SYS_ADMIN or CAP_PERFMON let a domain still read other processes'
    # /proc/PID/environ and maps: nothing isolates confines keeps them.
    kept = None
    if capabilities is None:
        drop_capabilities_of(PTRACE_BYPASS)
    else:
        kept = keep_only_capabilities(
            tuple(c for c in capabilities if c not in PTRACE_BYPASS), for_exec=for_exec
        )
    landlock = for_threads(landlock, all_threads, covered)
    if landlock[8] and landlock[4]:  # Compat.HARD, and something is missing
        from ._landlock_plan import refuse_hard  # its words: only a failing isolate pays

        refuse_hard(landlock)
    enforced = enforce_resolved(landlock)
    try:
        fd = load_seccomp(bpf, all_threads=all_threads, listener=listener)
    except SandboxError as exc:
        if not (listener and fallback is not None and exc.errno == errno.EBUSY):
            raise
        fd = load_seccomp(fallback, all_threads=all_threads)  # its answers, in the kernel
    return enforced, fd, kept


def enforce_landlock(
    landlock: Resolved, *, all_threads: bool = False
) -> tuple[str, int, tuple[str, ...]]:
    """Enforce a fitted plan alone, without seccomp (``apply_plan`` from plain data): what
    ``isolates run`` loads as its own domain beneath the policy's. Refuses a Compat.HARD
    plan the kernel cannot fully enforce before anything is enforced."""
    landlock = for_threads(landlock, all_threads)
    if landlock[8] and landlock[4]:
        from ._landlock_plan import refuse_hard

        refuse_hard(landlock)
    return enforce_resolved(landlock)


def landlock_enforcement(
    landlock: Resolved, *, all_threads: bool = False
) -> tuple[str, int, tuple[str, ...]]:
    """What enforcing ``landlock`` here will report (enforcement, abi, dropped), without
    enforcing it."""
    return enforcement_of(for_threads(landlock, all_threads))


def program_for_pid(program: bytes, pid_slots: Collection[int], pid: int) -> bytes:
    """``program`` with its SELF_PID comparisons made for process ``pid``: the ``k`` word
    (the last 4 bytes of an 8-byte ``sock_filter``) of each instruction in ``pid_slots``,
    which the compiler noted (``CompiledPolicy.pid_slots``). A test holds this equal to
    compiling for ``pid``."""
    if not pid_slots:
        return program
    patched = bytearray(program)
    for pc in pid_slots:
        patched[8 * pc + 4 : 8 * pc + 8] = pid.to_bytes(4, sys.byteorder)
    return bytes(patched)


def check_pid(self_pid: int | None) -> None:
    """A program with SELF_PID rules applies only in the process it was compiled for."""
    if self_pid is not None and self_pid != os.getpid():
        raise SandboxError(
            errno.ESRCH,
            f"this filter was compiled for process {self_pid}, whose SELF_PID rules "
            f"(e.g. Signals.allow_kill_self) would let process {os.getpid()} signal it; "
            "compile the policy in the process that applies it (policy.apply() does)",
        )


def preload_runtime(modules: tuple[str, ...] = ()) -> None:
    """Load now what a confined process could no longer load (libgcc_s, ``modules``: see
    ``_kernel.preload_runtime``), and ask the kernel's Landlock ABI once (cached), which
    warms the raw-call path: a pooled isolate pays for that while it waits, not on a
    call's path."""
    _preload(modules)
    kernel_abi()


def rehearse() -> None:
    """Everything ``confine`` does, but load nothing: read the capabilities, build a
    Landlock ruleset and close it unenforced, build a BPF program and ask seccomp(2) a
    question. A process that will confine itself soon (a pooled isolate) pays the
    first-time costs of that path now: in a forked isolate, the pages it touches being
    copied. Nothing here changes the process (but the cached O_PATH "/" it keeps)."""
    drop_capabilities_of(())
    rehearse_landlock()
    rehearse_seccomp()
    for_threads((0, 0, 0, 0, (), (), (), 0, False), True)

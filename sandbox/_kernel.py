"""Raw syscalls: the generic ``syscall`` and ``prctl`` callers, loading a seccomp filter,
and the seccomp user-notification calls. The other modules that call the kernel (each
with its own safety argument) are _landlock_sys.py, _kernel_ns.py and _kernel_trace.py;
they make their raw calls through the glibc handle (``_libc``) and the ``syscall`` and
``_prctl`` callers here. _compiled.py, the one other module that imports ctypes, only
loads libgcc_s (its own safety argument says why).

Safety argument, kept next to the code it covers:

- Every call goes through glibc (``prctl``, ``syscall``, ``ioctl``) via ctypes with
  ``use_errno=True`` and the errno is read *only* when the return value says the call
  failed; a stale errno after a successful call is never reported as an error.
- Syscall numbers come from the shipped table for the native CPU (_uapi), read once:
  a policy may deny uname(2).
- Buffers handed to the kernel (the BPF program) are ctypes objects kept alive in a local
  variable until the call returns; the kernel copies the program, so nothing is retained.
- Nothing here can widen privileges: NO_NEW_PRIVS is one-way, filters only stack.
- ``preload_runtime`` loads libgcc_s with ``ctypes.CDLL`` (a dlopen, the one glibc would
  do itself later, once files are out of reach) and keeps the handle for the life of the
  process; nothing is called through it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from . import _uapi as uapi
from ._errors import SandboxError
from ._uapi import (
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    SECCOMP_FILTER_FLAG_NEW_LISTENER,
    SECCOMP_FILTER_FLAG_TSYNC,
    SECCOMP_FILTER_FLAG_TSYNC_ESRCH,
    SECCOMP_GET_ACTION_AVAIL,
    SECCOMP_IOCTL_NOTIF_ID_VALID,
    SECCOMP_IOCTL_NOTIF_RECV,
    SECCOMP_IOCTL_NOTIF_SEND,
    SECCOMP_IOCTL_NOTIF_SET_FLAGS,
    SECCOMP_SET_MODE_FILTER,
    SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
    SECCOMP_USER_NOTIF_FLAG_CONTINUE,
)

# Imported by an isolate before it is confined, where every module costs start-up time:
# typing only for the type checker (mypy honours a module-level TYPE_CHECKING = False).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

_libc: Final = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def syscall_number(name: str) -> int:
    nr = uapi.syscall_number(name)
    if nr is None:
        raise SandboxError(
            errno.ENOSYS, f"isolates does not know the number of {name} on {uapi.MACHINE}"
        )
    return nr


def syscall(name: str, *args: Any) -> int:
    """Make a raw syscall; return its result or raise OSError with the call's errno."""
    ctypes.set_errno(0)
    res = int(_libc.syscall(ctypes.c_long(syscall_number(name)), *args))
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return res


def _prctl(option: int, arg2: int, arg3: int = 0) -> int:
    res = int(_libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0))
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")
    return res


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: required before an unprivileged process may load a filter."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_not_dumpable() -> None:
    """PR_SET_DUMPABLE 0: no process without CAP_SYS_PTRACE may ptrace us, open our
    /proc/PID/mem, list /proc/PID/fd or take our descriptors (pidfd_getfd), whatever
    Landlock and Yama say; and no core file. What a parent holding a confined program's
    seccomp listener needs: that program runs as the same user."""
    _prctl(PR_SET_DUMPABLE, 0)


def set_parent_death_signal(sig: int) -> None:
    """PR_SET_PDEATHSIG: the kernel sends ``sig`` when the thread that forked us exits."""
    _prctl(PR_SET_PDEATHSIG, sig)


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def _program(bpf: bytes) -> tuple[ctypes.Array[_SockFilter], _SockFprog]:
    """The program as the kernel reads it (keep both alive until the call returns)."""
    if not bpf or len(bpf) % ctypes.sizeof(_SockFilter):
        raise SandboxError(errno.EINVAL, f"not a BPF program: {len(bpf)} bytes")
    count = len(bpf) // ctypes.sizeof(_SockFilter)
    program = (_SockFilter * count).from_buffer_copy(bpf)
    return program, _SockFprog(count, ctypes.cast(program, ctypes.POINTER(_SockFilter)))


class _Rlimit(ctypes.Structure):
    _fields_ = (("cur", ctypes.c_uint64), ("max", ctypes.c_uint64))


def lower_rlimits(limits: list[tuple[int, int, int]]) -> None:
    """prlimit64(2) on this process for each (resource, soft, hard), never above the hard
    limit it has now (a privileged caller could raise it: this only lowers). The raw call
    spares an isolate importing ``resource``."""
    for which, soft, hard in limits:
        old = _Rlimit()
        syscall("prlimit64", ctypes.c_long(0), ctypes.c_long(which), None, ctypes.byref(old))
        new = _Rlimit(min(soft, old.max), min(hard, old.max))
        syscall("prlimit64", ctypes.c_long(0), ctypes.c_long(which), ctypes.byref(new), None)


def rehearse_seccomp() -> None:
    """Build a program and call seccomp(2) without loading anything (GET_ACTION_AVAIL only
    asks whether an action exists): the first-time costs of the path, paid now."""
    program, fprog = _program(struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000))  # ret ALLOW
    action = ctypes.c_uint32(0x7FFF0000)
    try:
        syscall("seccomp", SECCOMP_GET_ACTION_AVAIL, 0, ctypes.byref(action))
    except OSError:  # no seccomp here: load_seccomp will say so
        pass
    del program, fprog


def load_seccomp(bpf: bytes, *, all_threads: bool = False, listener: bool = False) -> int | None:
    """Attach the BPF program ``bpf`` to this thread (or all threads); return a listener fd.

    Sets NO_NEW_PRIVS first. With ``listener`` the filter's USER_NOTIF decisions go to the
    returned descriptor. Raises SandboxError saying what the kernel refused.
    """
    _alive, fprog = _program(bpf)  # the array fprog points into, alive until the call
    flags = SECCOMP_FILTER_FLAG_TSYNC if all_threads else 0
    if listener:
        # With TSYNC, a listener needs TSYNC_ESRCH: the result is the fd, not a thread id.
        flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER
        flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH if all_threads else 0
    try:
        set_no_new_privs()
        res = syscall("seccomp", SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
    except OSError as exc:
        raise _explain_seccomp(exc) from None
    if all_threads and not listener and res > 0:
        raise SandboxError(errno.EBUSY, f"seccomp TSYNC: thread {res} could not be synchronised")
    return res if listener else None


def _explain_seccomp(exc: OSError) -> SandboxError:
    reasons = {
        errno.ENOSYS: "this kernel has no seccomp(2) (CONFIG_SECCOMP_FILTER, Linux 3.17+)",
        errno.EINVAL: "the kernel refused the filter or its flags (CONFIG_SECCOMP_FILTER; "
        "TSYNC needs Linux 3.17, user notification 5.0, TSYNC with a listener 5.7)",
        errno.EACCES: "the caller lacks CAP_SYS_ADMIN and NO_NEW_PRIVS is not set",
        errno.EBUSY: "a filter with a notification listener is already installed above this "
        "process (the kernel allows one per filter stack: under `isolates trace`?)",
        errno.ENOMEM: "the filter stack is over the kernel's limit of instructions",
        errno.EFAULT: "the kernel could not read the filter",
        errno.EPERM: "a filter already loaded here forbids seccomp(2) or prctl(2)",
        errno.ESRCH: "another thread could not be synchronised (TSYNC)",
    }
    err = exc.errno or 0
    return SandboxError(err, f"loading the seccomp filter failed: {reasons.get(err, exc)}")


# Seccomp user notification (Linux 5.0+): the supervisor's side of a NOTIFY filter.
_NOTIF = struct.Struct("=QII iIQ 6Q")  # id, pid, flags, then seccomp_data
_NOTIF_RESP = struct.Struct("=QqiI")  # id, val, error, flags


class Notification:
    """A syscall a filter handed to its listener: who made it, which, with what.

    A plain class rather than a dataclass: this module is on an isolate's start-up path,
    and dataclasses import inspect."""

    __slots__ = ("arch", "args", "id", "nr", "pid")

    def __init__(self, id: int, pid: int, nr: int, arch: int, args: tuple[int, ...]) -> None:
        self.id, self.pid, self.nr, self.arch, self.args = id, pid, nr, arch, args

    def _fields(self) -> tuple[int, int, int, int, tuple[int, ...]]:
        return (self.id, self.pid, self.nr, self.arch, self.args)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Notification) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "Notification(id={}, pid={}, nr={}, arch={:#x}, args={})".format(*self._fields())


def receive_notification(listener: int) -> Notification:
    """Read one pending notification (the buffer must be zeroed: the kernel checks)."""
    buf = ctypes.create_string_buffer(_NOTIF.size)
    _ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, buf)
    nid, pid, _flags, nr, arch, _ip, *args = _NOTIF.unpack(buf.raw)
    return Notification(nid, pid, nr, arch, tuple(args))


def deny_notification(listener: int, notification_id: int, err: int) -> None:
    """Answer a notification: the syscall fails with ``err`` and never runs."""
    buf = ctypes.create_string_buffer(_NOTIF_RESP.pack(notification_id, 0, -err, 0))
    _ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, buf)


def notification_valid(listener: int, notification_id: int) -> bool:
    """Whether the call behind ``notification_id`` is still parked: what was read of its
    process (/proc/PID/mem) since the notification came was read of that process, not
    of one that took its pid after it died."""
    buf = ctypes.create_string_buffer(struct.pack("=Q", notification_id))
    return bool(_libc.ioctl(listener, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_ID_VALID), buf) == 0)


def continue_notification(listener: int, notification_id: int) -> None:
    """Answer a notification: let the syscall run as if the filter had allowed it.

    The arguments in memory may change between our look and the kernel's: this stands
    in for a security decision only where that decision reads registers alone, as a
    seccomp filter's own do (the orchestrator's processes limit); the tracer observes.
    """
    resp = _NOTIF_RESP.pack(notification_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
    _ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, ctypes.create_string_buffer(resp))


def wake_synchronously(listener: int) -> bool:
    """Ask the kernel to hand the CPU straight to the caller when its call is answered,
    and to us when one is parked (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, Linux 6.6): a
    round trip then costs a switch, not two wake-ups. False on older kernels (no harm:
    only slower)."""
    flags = ctypes.c_ulong(SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
    return bool(_libc.ioctl(listener, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_SET_FLAGS), flags) == 0)


def _ioctl(fd: int, request: int, buf: ctypes.Array[ctypes.c_char]) -> None:
    if _libc.ioctl(fd, ctypes.c_ulong(request), buf) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ioctl({request:#x}): {os.strerror(err)}")


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
        __import__(module)  # importlib itself is one more module to import


_LIBGCC: ctypes.CDLL | bool | None = None

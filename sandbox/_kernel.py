"""Raw syscalls: prctl, seccomp(2), unshare. The only place the sandbox calls the kernel.

Safety argument, kept next to the code it covers:

- Every call goes through glibc (``prctl``, ``unshare``, ``syscall``) via ctypes with
  ``use_errno=True`` and the errno is read *only* when the return value says the call
  failed; a stale errno after a successful call is never reported as an error.
- Buffers handed to the kernel (the BPF program) are ctypes objects kept alive in a local
  variable until the call returns; the kernel copies the program, so nothing is retained.
- Nothing here can widen privileges: NO_NEW_PRIVS is one-way, filters only stack.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass
from typing import Any, Final

from ._errors import SandboxError

_libc: Final = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

PR_SET_PDEATHSIG: Final = 1
PR_GET_SECCOMP: Final = 21
PR_SET_NO_NEW_PRIVS: Final = 38
PR_GET_NO_NEW_PRIVS: Final = 39

SECCOMP_SET_MODE_FILTER: Final = 1
SECCOMP_GET_ACTION_AVAIL: Final = 2
SECCOMP_FILTER_FLAG_TSYNC: Final = 1 << 0
SECCOMP_FILTER_FLAG_LOG: Final = 1 << 1
SECCOMP_FILTER_FLAG_NEW_LISTENER: Final = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH: Final = 1 << 4

# Numbers of the syscalls glibc does not wrap, per architecture (asm/unistd.h);
# mount_setattr and the landlock calls have one number everywhere.
_NUMBERS: Final = {
    "x86_64": {
        "seccomp": 317,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
        "pivot_root": 155,
        "capset": 126,
        "capget": 125,
        "mount_setattr": 442,
    },
    "aarch64": {
        "seccomp": 277,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
        "pivot_root": 41,
        "capset": 91,
        "capget": 90,
        "mount_setattr": 442,
    },
}


#: Read once: a policy may deny uname(2), and every raw call needs its number.
MACHINE: Final = os.uname().machine


def syscall_number(name: str) -> int:
    try:
        return _NUMBERS[MACHINE][name]
    except KeyError:
        raise SandboxError(
            errno.ENOSYS, f"isolates does not know the number of {name} on {MACHINE}"
        ) from None


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


def load_seccomp(bpf: bytes, *, all_threads: bool = False, listener: bool = False) -> int | None:
    """Attach the BPF program ``bpf`` to this thread (or all threads); return a listener fd.

    Sets NO_NEW_PRIVS first. With ``listener`` the filter's USER_NOTIF decisions go to the
    returned descriptor. Raises SandboxError saying what the kernel refused.
    """
    if not bpf or len(bpf) % ctypes.sizeof(_SockFilter):
        raise SandboxError(errno.EINVAL, f"not a BPF program: {len(bpf)} bytes")
    count = len(bpf) // ctypes.sizeof(_SockFilter)
    program = (_SockFilter * count).from_buffer_copy(bpf)
    fprog = _SockFprog(count, ctypes.cast(program, ctypes.POINTER(_SockFilter)))
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
        errno.EBUSY: "a filter with a notification listener is already installed",
        errno.ENOMEM: "the filter stack is over the kernel's limit of instructions",
        errno.EFAULT: "the kernel could not read the filter",
        errno.EPERM: "a filter already loaded here forbids seccomp(2) or prctl(2)",
        errno.ESRCH: "another thread could not be synchronised (TSYNC)",
    }
    err = exc.errno or 0
    return SandboxError(err, f"loading the seccomp filter failed: {reasons.get(err, exc)}")


# Seccomp user notification (Linux 5.0+): the supervisor's side of a NOTIFY filter.
SECCOMP_IOCTL_NOTIF_RECV: Final = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
SECCOMP_IOCTL_NOTIF_SEND: Final = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
_NOTIF = struct.Struct("=QII iIQ 6Q")  # id, pid, flags, then seccomp_data
_NOTIF_RESP = struct.Struct("=QqiI")  # id, val, error, flags


@dataclass(frozen=True)
class Notification:
    """A syscall a filter handed to its listener: who made it, which, with what."""

    id: int
    pid: int
    nr: int
    arch: int
    args: tuple[int, ...]


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


SECCOMP_USER_NOTIF_FLAG_CONTINUE: Final = 1


def continue_notification(listener: int, notification_id: int) -> None:
    """Answer a notification: let the syscall run as if the filter had allowed it.

    Only safe for observing (the tracer): the arguments may change between our look and
    the kernel's, so this never stands in for a security decision.
    """
    resp = _NOTIF_RESP.pack(notification_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
    _ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, ctypes.create_string_buffer(resp))


def _ioctl(fd: int, request: int, buf: ctypes.Array[ctypes.c_char]) -> None:
    if _libc.ioctl(fd, ctypes.c_ulong(request), buf) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ioctl({request:#x}): {os.strerror(err)}")

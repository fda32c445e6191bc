"""Raw calls for ``isolates trace``: a filter that hands every syscall to a listener.

The tracer forks a child that runs ``exec_traced``: it loads ``notify_program()`` with a
listener, passes the listener to the tracer (``Handoff``), then execs the command; the
tracer answers each notification "continue". Everything here is small on purpose.

Safety argument, kept next to the code it covers:

- The filter only ever answers USER_NOTIF or ALLOW: it can deny nothing by itself. The
  tracer decides, and it lets every call run (CONTINUE), except clone3 which it answers
  ENOSYS as every isolates policy does. It is an observer, never a sandbox: CONTINUE
  is unsafe for security decisions (arguments may change after the look) and not used
  as one.
- The filter's one exception is ``sendmsg`` whose flags register carries ``MARKER`` in
  its upper 32 bits. The kernel reads the flags as an ``unsigned int`` and ignores those
  bits, so the call behaves as usual; a C program passes a zero-extended ``int`` there
  and never matches by accident. Without the exception the child's handoff would wait
  for an answer from a listener nobody holds yet: it is the listener it sends. A program
  that forges the marker only hides that call from its own trace.
- Between loading the filter and the handoff the child runs one prepared foreign call
  and no Python that allocates descriptors or memory on purpose (``Handoff`` builds its
  buffers first), so no notified call can precede the handoff.
- The listener is close-on-exec (the kernel creates it so): the traced program never holds
  it. Buffers passed to the kernel are ctypes objects owned by ``Handoff`` for as long as
  the call runs; the kernel copies them.
- ``set_child_subreaper``: orphans of the traced program are reparented to the tracer,
  which reaps them, so the filter's last user goes away and its listener reports POLLHUP.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import sys
from typing import Final, NoReturn

from . import _kernel
from ._syscalls import number
from ._uapi import NATIVE_ARCH, PR_SET_CHILD_SUBREAPER, SECCOMP_RET_ALLOW, SECCOMP_RET_USER_NOTIF

#: Upper half of sendmsg's flags register that lets the handoff through unnotified.
MARKER: Final = 0x15A7E5
_LD_ABS_W, _JEQ_K, _RET_K = 0x20, 0x15, 0x06
_INSN: Final = struct.Struct("=HBBI")
_ARCH, _NR = 4, 0
_ARG2_HIGH: Final = 16 + 2 * 8 + (4 if sys.byteorder == "little" else 0)


def notify_program() -> bytes:
    """``USER_NOTIF`` for every syscall of every architecture, but the marked sendmsg."""
    insns = (
        (_LD_ABS_W, 0, 0, _ARCH),
        (_JEQ_K, 0, 5, NATIVE_ARCH),  # another ABI (i386 int 0x80): notify
        (_LD_ABS_W, 0, 0, _NR),
        (_JEQ_K, 0, 3, number("sendmsg")),
        (_LD_ABS_W, 0, 0, _ARG2_HIGH),
        (_JEQ_K, 0, 1, MARKER),
        (_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF),
    )
    return b"".join(_INSN.pack(*insn) for insn in insns)


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_Iovec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _Cmsg(ctypes.Structure):
    """A cmsghdr carrying one descriptor (CMSG_SPACE(sizeof(int)) on 64-bit Linux)."""

    _fields_ = (
        ("len", ctypes.c_size_t),
        ("level", ctypes.c_int),
        ("type", ctypes.c_int),
        ("fd", ctypes.c_int),
        ("pad", ctypes.c_int),
    )


class Handoff:
    """A prepared ``sendmsg(sock, 1 byte + SCM_RIGHTS fd, MARKER << 32)``.

    Everything is allocated here, so ``send`` is one foreign call once the filter is on.
    """

    def __init__(self, sock: int) -> None:
        self._byte = ctypes.create_string_buffer(b"L", 1)
        self._iov = _Iovec(ctypes.cast(self._byte, ctypes.c_void_p), 1)
        self._cmsg = _Cmsg(16 + 4, socket.SOL_SOCKET, socket.SCM_RIGHTS, -1, 0)
        control = ctypes.cast(ctypes.pointer(self._cmsg), ctypes.c_void_p)
        iov = ctypes.pointer(self._iov)
        self._msg = _Msghdr(None, 0, iov, 1, control, ctypes.sizeof(_Cmsg), 0)
        nr, flags = ctypes.c_long(number("sendmsg")), ctypes.c_ulong(MARKER << 32)
        self._args = (nr, ctypes.c_long(sock), ctypes.byref(self._msg), flags)
        self._call = _kernel._libc.syscall

    def send(self, fd: int) -> bool:
        """Send ``fd``; True when the kernel accepted the message."""
        self._cmsg.fd = fd
        return bool(self._call(*self._args) == 1)


def set_child_subreaper() -> None:
    """PR_SET_CHILD_SUBREAPER: our descendants' orphans become our children."""
    _kernel._prctl(PR_SET_CHILD_SUBREAPER, 1)


def exec_traced(
    sock: socket.socket, program: bytes, path: str, argv: list[str], env: dict[str, str]
) -> NoReturn:
    """In a forked child: load ``program`` with a listener, send the listener over
    ``sock``, exec ``path``. Failures before the filter are sent as ``b"E" + reason``.

    Nothing notified may come before the handoff (the tracer could not answer it yet):
    everything the handoff needs is prepared first.
    """
    try:
        _kernel.set_parent_death_signal(signal.SIGKILL)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess: not ignored after exec
            signal.signal(sig, signal.SIG_DFL)
        handoff = Handoff(sock.fileno())
        listener = _kernel.load_seccomp(program, listener=True)
    except BaseException as exc:  # no filter yet: tell the tracer why, freely
        sock.sendall(b"E" + str(exc).encode())
        os._exit(126)
    if listener is None or not handoff.send(listener):
        os._exit(126)  # unreachable in practice; the tracer times out and says so
    try:
        os.execve(path, argv, env)
    except OSError as exc:
        os.write(2, f"isolates trace: cannot execute {path}: {exc.strerror}\n".encode())
    os._exit(126)

"""Raw namespace calls: unshare, mount, umount2, pivot_root, mount_setattr, capset, id maps.

The few kernel calls that build an isolate's namespaces, used by
``isolates.orchestrator`` before Landlock and seccomp are loaded. Policy (what to
mount where, when to fork) lives there; this module only talks to the kernel.

Safety argument, kept next to the code it covers:

- Every call goes through glibc (``unshare``, ``mount``, ``umount2``, ``syscall``) via
  ctypes with ``use_errno=True``; errno is read only when the return value says the call
  failed, so a stale errno is never reported.
- Strings and structs handed to the kernel are ctypes objects held in locals until the
  call returns; the kernel copies them and keeps no pointer.
- Nothing here can widen privileges beyond the caller's: the kernel checks each call
  against the capabilities the caller holds in the namespaces it owns. ``drop_capabilities``
  and ``drop_capabilities_of`` only ever clear sets (capset with bits removed, PR_CAPBSET_DROP,
  PR_CAP_AMBIENT_LOWER); they never raise one.
- The id maps written are the caller's own uid and gid (one line each), the only maps an
  unprivileged process may write; ``setgroups`` is denied first, as the kernel requires.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

from ._kernel import _libc, _prctl, syscall
from ._uapi import AT_FDCWD as _AT_FDCWD
from ._uapi import (
    CAP_SETPCAP,
    LINUX_CAPABILITY_VERSION_3,
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_LOWER,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_GET_SECUREBITS,
    PR_SET_SECUREBITS,
    SECURE_LOCKED_NO_PRIVILEGE,
)
from ._uapi import CLONE_NEWIPC as CLONE_NEWIPC
from ._uapi import CLONE_NEWNET as CLONE_NEWNET
from ._uapi import CLONE_NEWNS as CLONE_NEWNS
from ._uapi import CLONE_NEWPID as CLONE_NEWPID
from ._uapi import CLONE_NEWUSER as CLONE_NEWUSER
from ._uapi import CLONE_NEWUTS as CLONE_NEWUTS

# Imported by an isolate before it is confined, where every module costs start-up time:
# typing only for the type checker (mypy honours a module-level TYPE_CHECKING = False).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

MS_NOSUID: Final = 2
MS_NODEV: Final = 4
MS_NOEXEC: Final = 8
MS_BIND: Final = 4096
MS_REC: Final = 16384
MS_PRIVATE: Final = 1 << 18
MNT_DETACH: Final = 2

MOUNT_ATTR_RDONLY: Final = 0x1
MOUNT_ATTR_NOSUID: Final = 0x2
_AT_RECURSIVE: Final = 0x8000


def _check(res: int, what: str) -> int:
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return res


def _path(p: str | None) -> bytes | None:
    return None if p is None else os.fsencode(p)


def unshare(flags: int) -> None:
    """unshare(2): move this process into new namespaces (``CLONE_NEWPID``: its children)."""
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    """mount(2); the caller needs CAP_SYS_ADMIN over the mount namespace's user namespace."""
    res = _libc.mount(
        _path(source), _path(target), _path(fstype), ctypes.c_ulong(flags), _path(data)
    )
    _check(res, f"mount {source or fstype} on {target}")


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(_path(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2): make ``new_root`` this mount namespace's root, the old one ``put_old``."""
    syscall("pivot_root", _path(new_root), _path(put_old))


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def restrict_mount(path: str, attrs: int, *, recursive: bool) -> None:
    """mount_setattr(2) (Linux 5.12): add ``MOUNT_ATTR_*`` restrictions, whole subtree too.

    Unlike a ``MS_REMOUNT``, it leaves the flags the kernel locked in a user namespace
    alone and reaches every submount of a recursive bind.
    """
    attr = _MountAttr(attrs, 0, 0, 0)
    flags = _AT_RECURSIVE if recursive else 0
    syscall("mount_setattr", _AT_FDCWD, _path(path), flags, ctypes.byref(attr), ctypes.sizeof(attr))


def write_id_maps(uid_inside: int, gid_inside: int, uid: int, gid: int) -> None:
    """Map one id each (ours) into the user namespace we just entered; deny setgroups."""
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid_inside} {uid} 1\n"),
        ("gid_map", f"{gid_inside} {gid} 1\n"),
    ):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def drop_capabilities() -> None:
    """capset(2) with empty effective, permitted and inheritable sets (ambient follows)."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)  # two 32-bit words per set
    data = (_CapData * 2)()
    syscall("capset", ctypes.byref(header), ctypes.byref(data))


def drop_capabilities_of(caps: tuple[int, ...]) -> None:
    """Remove each of ``caps`` from this thread: effective, permitted, inheritable,
    ambient and (when it may) the bounding set. Only ever clears bits. A thread that
    holds none of them is left as it is: under NO_NEW_PRIVS, which every policy sets,
    an execve cannot give back what the permitted set lacks."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    try:
        syscall("capget", ctypes.byref(header), ctypes.byref(data))
    except OSError as exc:
        # A filter already here denies capget: isolates loaded it, and dropped these
        # capabilities then (a later thread inherits the sets it was started with).
        if exc.errno == errno.EPERM:
            return
        raise
    held = [cap for cap in caps if _has(data, cap)]
    for cap in held:
        try:  # needs CAP_SETPCAP; without it the bounding set cannot matter to us
            _prctl(PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, cap)
        word, bit = divmod(cap, 32)
        mask = ~(1 << bit) & 0xFFFFFFFF
        data[word].effective &= mask
        data[word].permitted &= mask
        data[word].inheritable &= mask
    if held:
        syscall("capset", ctypes.byref(header), ctypes.byref(data))


def keep_only_capabilities(keep: tuple[int, ...], *, for_exec: bool = False) -> tuple[int, ...]:
    """Drop every capability of this thread but ``keep``: effective, permitted,
    inheritable, ambient and the bounding set, and lock the securebits so that neither
    an exec as root nor a uid change brings any back. Returns the capabilities kept (those
    of ``keep`` the thread held). With ``for_exec`` the kept ones are also raised in the
    ambient set, the only way they survive an execve as root under SECBIT_NOROOT.

    Only ever clears bits (but the ambient raise, of capabilities already permitted). The
    bounding set and securebits need CAP_SETPCAP: done first, while it may be held; a
    thread without it had no capability to give back anyway."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    syscall("capget", ctypes.byref(header), ctypes.byref(data))
    kept = tuple(cap for cap in keep if data[cap // 32].permitted >> cap % 32 & 1)
    if _has(data, CAP_SETPCAP):
        _lock_securebits(ambient=for_exec and bool(kept))
        _drop_bounding(kept)
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    wanted = sum(1 << cap for cap in kept)
    for word in (0, 1):
        bits = wanted >> (32 * word) & 0xFFFFFFFF
        data[word].effective = data[word].permitted = bits
        data[word].inheritable = bits if for_exec else 0
    syscall("capset", ctypes.byref(header), ctypes.byref(data))
    if for_exec:
        for cap in kept:
            _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
    return kept


def _lock_securebits(*, ambient: bool) -> None:
    bits = SECURE_LOCKED_NO_PRIVILEGE
    if ambient:  # the kept capabilities are raised after this: leave raising open
        bits &= ~((1 << 6) | (1 << 7))
    current = _prctl(PR_GET_SECUREBITS, 0)
    if current | bits != current:
        _prctl(PR_SET_SECUREBITS, current | bits)


def _drop_bounding(kept: tuple[int, ...]) -> None:
    """PR_CAPBSET_DROP every capability but ``kept``, up to the kernel's last (dropping
    one not in the set is a no-op; EINVAL marks the end)."""
    cap = 0
    while True:
        if cap not in kept:
            try:
                _prctl(PR_CAPBSET_DROP, cap)
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    return
                raise
        cap += 1
        if cap > 63:  # the sets are 64 bits wide: no kernel has more
            return


def _has(data: ctypes.Array[_CapData], cap: int) -> bool:
    word, bit = divmod(cap, 32)
    return bool((data[word].effective | data[word].permitted | data[word].inheritable) >> bit & 1)


def loopback_up() -> None:
    """Set IFF_UP on ``lo`` (SIOCGIFFLAGS, then SIOCSIFFLAGS on a throwaway socket)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    import socket  # only isolates with a network namespace need it

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = fcntl.ioctl(sock, siocgifflags, struct.pack("16sh22x", b"lo", 0))
        flags = struct.unpack("16sh22x", req)[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sh22x", b"lo", flags | iff_up))


def sethostname(name: str) -> None:
    import socket

    socket.sethostname(name)

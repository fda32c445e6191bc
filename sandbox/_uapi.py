"""Linux's numbers, in one place: the constants of the kernel's UAPI headers that isolates
compares, passes or returns. Pure data: importing this module touches nothing.

Each group names the header it comes from. Syscall numbers are not here: they are the
table in _syscall_table.py (``syscall_number`` looks them up for the native CPU).
"""

from __future__ import annotations

import os

from ._syscall_table import TABLES

# Imported by an isolate before it is confined, where every module costs start-up time:
# typing only for the type checker (mypy honours a module-level TYPE_CHECKING = False).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# -- seccomp (include/uapi/linux/seccomp.h) ------------------------------------------------
SECCOMP_RET_KILL_PROCESS: Final = 0x80000000
SECCOMP_RET_KILL_THREAD: Final = 0x00000000
SECCOMP_RET_TRAP: Final = 0x00030000
SECCOMP_RET_ERRNO: Final = 0x00050000
SECCOMP_RET_USER_NOTIF: Final = 0x7FC00000
SECCOMP_RET_TRACE: Final = 0x7FF00000
SECCOMP_RET_LOG: Final = 0x7FFC0000
SECCOMP_RET_ALLOW: Final = 0x7FFF0000
SECCOMP_RET_ACTION_FULL: Final = 0xFFFF0000
SECCOMP_RET_DATA: Final = 0x0000FFFF

SECCOMP_SET_MODE_FILTER: Final = 1
SECCOMP_GET_ACTION_AVAIL: Final = 2
SECCOMP_FILTER_FLAG_TSYNC: Final = 1 << 0
SECCOMP_FILTER_FLAG_LOG: Final = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW: Final = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER: Final = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH: Final = 1 << 4
SECCOMP_USER_NOTIF_FLAG_CONTINUE: Final = 1
SECCOMP_IOCTL_NOTIF_RECV: Final = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
SECCOMP_IOCTL_NOTIF_SEND: Final = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
SECCOMP_IOCTL_NOTIF_ID_VALID: Final = 0x40082102  # _IOW('!', 2, __u64)
SECCOMP_IOCTL_NOTIF_SET_FLAGS: Final = 0x40082104  # _IOW('!', 4, __u64), Linux 6.6
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: Final = 1

# -- audit (include/uapi/linux/audit.h): the architectures isolates runs on ----------------
AUDIT_ARCH: Final = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
MACHINE: Final = os.uname().machine  # what platform.machine() says, without platform
NATIVE_ARCH: Final = AUDIT_ARCH.get(MACHINE, 0)
X32_SYSCALL_BIT: Final = 0x40000000  # x86_64's x32 ABI (arch/x86/include/uapi/asm/unistd.h)

# -- prctl (include/uapi/linux/prctl.h) and capabilities (linux/capability.h) ---------------
PR_SET_PDEATHSIG: Final = 1
PR_SET_DUMPABLE: Final = 4
PR_SET_NAME: Final = 15
PR_GET_NAME: Final = 16
PR_GET_SECCOMP: Final = 21
PR_CAPBSET_DROP: Final = 24
PR_SET_CHILD_SUBREAPER: Final = 36
PR_SET_NO_NEW_PRIVS: Final = 38
PR_GET_NO_NEW_PRIVS: Final = 39
PR_CAP_AMBIENT: Final = 47
PR_CAP_AMBIENT_LOWER: Final = 3
LINUX_CAPABILITY_VERSION_3: Final = 0x20080522
PR_GET_SECUREBITS: Final = 27
PR_SET_SECUREBITS: Final = 28
PR_CAP_AMBIENT_RAISE: Final = 2
PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
#: Every capability by its capabilities(7) name, without the CAP_ prefix.
CAPABILITIES: Final = {
    name: number
    for number, name in enumerate(
        (  # noqa: SIM905  (the names as capabilities(7) lists them, in number order)
            "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
            "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK "
            "IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN "
            "SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE "
            "AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND "
            "AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE"
        ).split()
    )
}  # fmt: skip
CAP_SYS_ADMIN: Final = 21
CAP_PERFMON: Final = 38
CAP_SETPCAP: Final = 8
#: securebits (linux/securebits.h): root gains nothing at exec (NOROOT), uid changes
#: touch no capability (NO_SETUID_FIXUP), KEEP_CAPS stays off, and no ambient raise;
#: each with its _LOCKED bit, so nothing in the process can turn them back.
SECURE_LOCKED_NO_PRIVILEGE: Final = (
    (1 << 0)
    | (1 << 1)  # SECBIT_NOROOT, _LOCKED
    | (1 << 2)
    | (1 << 3)  # SECBIT_NO_SETUID_FIXUP, _LOCKED
    | (1 << 5)  # SECBIT_KEEP_CAPS_LOCKED (KEEP_CAPS itself off)
    | (1 << 6)
    | (1 << 7)  # SECBIT_NO_CAP_AMBIENT_RAISE, _LOCKED
)

# -- clone (include/uapi/linux/sched.h) ----------------------------------------------------
CLONE_VM: Final = 0x00000100
CLONE_VFORK: Final = 0x00004000
CLONE_PARENT: Final = 0x00008000
CLONE_THREAD: Final = 0x00010000
#: The namespace flags clone(2) accepts (CLONE_NEWTIME is clone3/unshare only).
CLONE_NAMESPACES: Final = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
NAMESPACE_FLAGS: Final = sum(CLONE_NAMESPACES.values())
CLONE_NEWNS: Final = CLONE_NAMESPACES["CLONE_NEWNS"]
CLONE_NEWUTS: Final = CLONE_NAMESPACES["CLONE_NEWUTS"]
CLONE_NEWIPC: Final = CLONE_NAMESPACES["CLONE_NEWIPC"]
CLONE_NEWUSER: Final = CLONE_NAMESPACES["CLONE_NEWUSER"]
CLONE_NEWPID: Final = CLONE_NAMESPACES["CLONE_NEWPID"]
CLONE_NEWNET: Final = CLONE_NAMESPACES["CLONE_NEWNET"]

# -- files (include/uapi/asm-generic/fcntl.h, linux/fcntl.h) --------------------------------
O_TMPFILE_BIT: Final = 0o20000000  # __O_TMPFILE: O_TMPFILE without its O_DIRECTORY bit
#: The open(2) flags that make an open more than a read: write access, create, truncate,
#: append, O_TMPFILE (its __O_TMPFILE bit; O_DIRECTORY alone is a read).
O_WRITE_FLAGS: Final = (
    os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | O_TMPFILE_BIT
)
AT_FDCWD: Final = -100
AT_SYMLINK_NOFOLLOW: Final = 0x100
AT_REMOVEDIR: Final = 0x200
AT_EMPTY_PATH: Final = 0x1000
F_SETFL: Final = 4
F_SETOWN: Final = 8
F_SETSIG: Final = 10
F_SETOWN_EX: Final = 15
O_ASYNC: Final = os.O_ASYNC

# -- ioctl commands (asm-generic/ioctls.h, linux/sockios.h), compared on 32 bits ------------
TCGETS: Final = 0x5401
TIOCSTI: Final = 0x5412
TIOCLINUX: Final = 0x541C
FIONREAD: Final = 0x541B
FIONBIO: Final = 0x5421
FIOASYNC: Final = 0x5452
TIOCSIG: Final = 0x40045436  # _IOW('T', 0x36, int)
FIOSETOWN: Final = 0x8901
SIOCSPGRP: Final = 0x8902

# -- sockets --------------------------------------------------------------------------------
#: socket(2)'s type with SOCK_NONBLOCK and SOCK_CLOEXEC masked off (a 32-bit argument).
SOCK_NONBLOCK: Final = os.O_NONBLOCK  # include/linux/net.h: the open(2) flags' values
SOCK_CLOEXEC: Final = os.O_CLOEXEC
SOCK_TYPE_MASK: Final = 0xFFFFFFFF & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)


def syscall_number(name: str) -> int | None:
    """The native number of syscall ``name`` from the shipped table (None if unknown)."""
    table = TABLES.get(MACHINE)
    return None if table is None else table.get(name)

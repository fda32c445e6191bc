"""Landlock's kernel interface as data: every right, grouped by the ABI that brought it.

The constants are hard-coded from include/uapi/linux/landlock.h (distribution headers stop
at an older ABI). ``LEVELS`` is the one table that says which ABI, and so which kernel,
brought each right or flag; ``fit`` uses it to cut a request down to what a running
kernel supports, naming everything it had to drop. Pure data and arithmetic: importing
this module never touches the kernel.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from . import _landlock_sys
from ._landlock_sys import CREATE_RULESET_ERRATA as CREATE_RULESET_ERRATA
from ._landlock_sys import CREATE_RULESET_VERSION as CREATE_RULESET_VERSION
from ._landlock_sys import DOMAIN as DOMAIN
from ._landlock_sys import RULE_NET_PORT as RULE_NET_PORT
from ._landlock_sys import RULE_PATH_BENEATH as RULE_PATH_BENEATH
from ._landlock_sys import TSYNC as TSYNC


class AccessFs(enum.IntFlag):
    """Filesystem rights (``LANDLOCK_ACCESS_FS_*``).

    EXECUTE, WRITE_FILE, READ_FILE, TRUNCATE and IOCTL_DEV apply to files (and to the
    files beneath a directory); every other right only makes sense on a directory: it
    governs the entries inside it (and READ_DIR the directory itself).
    """

    EXECUTE = 1 << 0  # execve a file
    WRITE_FILE = 1 << 1  # open a file for writing
    READ_FILE = 1 << 2  # open a file for reading
    READ_DIR = 1 << 3  # open or list a directory
    REMOVE_DIR = 1 << 4  # remove (or rename away) an empty directory
    REMOVE_FILE = 1 << 5  # unlink (or rename away) a non-directory
    MAKE_CHAR = 1 << 6  # create (or rename or link) a character device
    MAKE_DIR = 1 << 7  # create (or rename) a directory
    MAKE_REG = 1 << 8  # create (or rename or link) a regular file
    MAKE_SOCK = 1 << 9  # create (or rename or link) a unix socket (bind to a path)
    MAKE_FIFO = 1 << 10  # create (or rename or link) a named pipe
    MAKE_BLOCK = 1 << 11  # create (or rename or link) a block device
    MAKE_SYM = 1 << 12  # create (or rename or link) a symbolic link
    REFER = 1 << 13  # link or rename an entry into another directory (ABI 2)
    TRUNCATE = 1 << 14  # truncate(2), ftruncate(2), O_TRUNC (ABI 3)
    IOCTL_DEV = 1 << 15  # ioctl(2) on character and block devices (ABI 5)


class AccessNet(enum.IntFlag):
    """TCP rights by port (``LANDLOCK_ACCESS_NET_*``, ABI 4)."""

    BIND_TCP = 1 << 0
    CONNECT_TCP = 1 << 1


class Scope(enum.IntFlag):
    """IPC scopes (``LANDLOCK_SCOPE_*``, ABI 6): deny reaching outside the domain."""

    ABSTRACT_UNIX_SOCKET = 1 << 0  # connect/send to abstract unix sockets made outside
    SIGNAL = 1 << 1  # send signals to processes outside


#: Rights that may be granted on a file (the rest only apply beneath a directory).
FILE_RIGHTS: Final = (
    AccessFs.EXECUTE
    | AccessFs.WRITE_FILE
    | AccessFs.READ_FILE
    | AccessFs.TRUNCATE
    | AccessFs.IOCTL_DEV
)
assert FILE_RIGHTS == _landlock_sys.FILE_RIGHTS  # the kernel side's copy, as a plain int
NO_FS: Final = AccessFs(0)
NO_NET: Final = AccessNet(0)
NO_SCOPES: Final = Scope(0)
ALL_FS: Final = AccessFs(sum(AccessFs))
ALL_NET: Final = AccessNet(sum(AccessNet))


# landlock_restrict_self() flags.
LOG_SAME_EXEC_OFF: Final = 1 << 0
LOG_NEW_EXEC_ON: Final = 1 << 1
LOG_SUBDOMAINS_OFF: Final = 1 << 2

#: How a status names each restrict_self flag it had to drop.
RESTRICT_NAMES: Final = {
    LOG_SAME_EXEC_OFF: "audit(same_exec=False)",
    LOG_NEW_EXEC_ON: "audit(new_exec=True)",
    LOG_SUBDOMAINS_OFF: "audit(subdomains=False)",
    TSYNC: "all_threads",
}


@dataclass(frozen=True)
class Level:
    """What one Landlock ABI version added, and the mainline kernel that brought it."""

    abi: int
    kernel: str
    fs: AccessFs = NO_FS
    net: AccessNet = NO_NET
    scopes: Scope = NO_SCOPES
    restrict: int = 0


_FS_V1: Final = AccessFs(ALL_FS & ~(AccessFs.REFER | AccessFs.TRUNCATE | AccessFs.IOCTL_DEV))
LEVELS: Final = (
    Level(1, "5.13", fs=_FS_V1),
    Level(2, "5.19", fs=AccessFs.REFER),
    Level(3, "6.2", fs=AccessFs.TRUNCATE),
    Level(4, "6.7", net=AccessNet.BIND_TCP | AccessNet.CONNECT_TCP),
    Level(5, "6.10", fs=AccessFs.IOCTL_DEV),
    Level(6, "6.12", scopes=Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL),
    Level(7, "6.15", restrict=LOG_SAME_EXEC_OFF | LOG_NEW_EXEC_ON | LOG_SUBDOMAINS_OFF),
    Level(8, "7.0", restrict=TSYNC),
)
NEWEST: Final = LEVELS[-1].abi


def supported(abi: int) -> Level:
    """Everything ABI ``abi`` knows: the union of every level up to it."""
    fs, net, scopes, restrict = AccessFs(0), AccessNet(0), Scope(0), 0
    for level in LEVELS[: max(abi, 0)]:
        fs, net, scopes = fs | level.fs, net | level.net, scopes | level.scopes
        restrict |= level.restrict
    return Level(abi, kernel_of(abi), fs, net, scopes, restrict)


def kernel_of(abi: int) -> str:
    """The mainline kernel that brought ``abi`` ("" for 0, newest known beyond)."""
    if abi <= 0:
        return ""
    return LEVELS[min(abi, NEWEST) - 1].kernel


def introduced(name: str) -> Level:
    """The level that brought a right or flag named as ``fit`` names it."""
    for level in LEVELS:
        owned = [*_names(level.fs), *_names(level.net), *_names(level.scopes)]
        owned += [RESTRICT_NAMES[f] for f in RESTRICT_NAMES if f & level.restrict]
        if name in owned:
            return level
    raise KeyError(name)


def needs(name: str) -> str:
    """``"AccessFs.TRUNCATE (Landlock ABI 3, Linux 6.2)"``."""
    if name == DOMAIN:
        return "a Landlock domain, which confines ptrace-class access (Landlock ABI 1, Linux 5.13)"
    level = introduced(name)
    return f"{name} (Landlock ABI {level.abi}, Linux {level.kernel})"


def _names(flags: enum.IntFlag) -> list[str]:
    return [f"{type(flags).__name__}.{f.name}" for f in type(flags) if f & flags]


@dataclass(frozen=True)
class Fitted:
    """A request cut down to one ABI: what to ask the kernel for, and what was dropped."""

    fs: int
    net: int
    scopes: int
    restrict: int
    dropped: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """Nothing left for a ruleset to handle (the kernel refuses an empty ruleset)."""
        return not (self.fs or self.net or self.scopes)


def fit(fs: int, granted_fs: int, net: int, scopes: int, restrict: int, abi: int) -> Fitted:
    """Cut handled rights ``fs``/``net``, ``scopes`` and ``restrict`` flags down to ``abi``.

    ``granted_fs`` are the rights some rule grants: on ABI 1 an unsupported REFER that is
    only handled is not dropped, since ABI 1 always denies reparenting anyway.
    """
    have = supported(abi)
    lost_fs = AccessFs(fs & ~have.fs)
    if abi == 1 and not granted_fs & AccessFs.REFER:
        lost_fs &= ~AccessFs.REFER
    dropped = [
        *_names(lost_fs),
        *_names(AccessNet(net & ~have.net)),
        *_names(Scope(scopes & ~have.scopes)),
        *(RESTRICT_NAMES[f] for f in RESTRICT_NAMES if f & restrict & ~have.restrict),
    ]
    return Fitted(
        fs & have.fs, net & have.net, scopes & have.scopes, restrict & have.restrict, tuple(dropped)
    )

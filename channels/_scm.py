"""Descriptor passing (SCM_RIGHTS): the only code in channels that handles raw descriptors.

Safety argument, kept next to the code it covers:

- Descriptors are received with ``recvmsg(..., MSG_CMSG_CLOEXEC)``, so the kernel installs
  them close-on-exec atomically: none can leak into a program this process later execs
  (``socket.recv_fds`` on Python 3.11 drops its flags argument, hence the direct call).
- The control buffer is sized for ``max_fds`` descriptors (``ancillary_size``). A peer that
  sends more makes the kernel truncate (MSG_CTRUNC): the kernel closes the ones that did not
  fit, ``received_fds`` closes the ones that did, and the peer is blamed. With
  ``max_fds=0`` there is no control buffer at all and nothing is ever installed.
- Every descriptor this module returns is owned by exactly one caller; every error path
  closes what was received before raising.
"""

from __future__ import annotations

import array
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Final, Protocol

from ._errors import LocalChannelError, RemoteChannelError

#: The kernel's limit on descriptors in one SCM_RIGHTS message (SCM_MAX_FD).
SCM_MAX_FD: Final = 253
_INT: Final = array.array("i").itemsize
_CTRUNC: Final = int(socket.MSG_CTRUNC)  # a plain int: IntFlag arithmetic is slow


class HasFileno(Protocol):
    def fileno(self) -> int: ...


FdLike = int | HasFileno


def ancillary_size(max_fds: int) -> int:
    """Control-buffer bytes for up to ``max_fds`` descriptors (0: no buffer)."""
    return socket.CMSG_SPACE(max_fds * _INT) if max_fds else 0


def rights(fds: Iterable[FdLike], *, max_fds: int, name: str) -> list[tuple[int, int, bytes]]:
    """The ancillary data passing ``fds`` (ints or objects with ``fileno()``)."""
    numbers = [fd if isinstance(fd, int) else fd.fileno() for fd in fds]
    if len(numbers) > max_fds:
        raise LocalChannelError(
            f"channel {name!r} passes at most {max_fds} descriptors per message (max_fds), "
            f"not {len(numbers)}; open it with a larger max_fds on both ends"
        )
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", numbers).tobytes())]


def received_fds(
    ancdata: Sequence[tuple[int, int, bytes]], flags: int, *, max_fds: int, name: str
) -> list[int]:
    """The descriptors in ``ancdata``; closes them all and blames the peer when it sent
    more than ``max_fds`` (or the kernel had to truncate them)."""
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", data[: len(data) - len(data) % _INT]))
    if flags & _CTRUNC or len(fds) > max_fds:
        close_all(fds)
        if max_fds:
            why = f"more than the {max_fds} descriptors this channel accepts per message"
        else:
            why = "descriptors, which this channel does not accept (max_fds=0)"
        raise RemoteChannelError(f"channel {name!r}: the peer sent {why}; they were closed")
    return fds


def close_all(fds: Iterable[int]) -> None:
    """Close each descriptor, ignoring ones already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass

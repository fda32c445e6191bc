"""The syscalls channels make, as a RuleSet every worker policy can include.

Measured with ``strace -f`` on exec'd peers (tests/channels/test_rules.py proves each set
complete under ``Action.KILL_PROCESS`` and minimal, one syscall at a time):

- a blocking ``Channel``: ``sendto``/``recvfrom`` (send and recv of a record),
  ``sendmsg``/``recvmsg`` (descriptors; channels with ``max_fds`` read with recvmsg),
  ``poll`` (``recv(timeout=...)``);
- an ``AsyncChannel`` on a running asyncio or trio loop, through its shutdown: the same
  sends and receives (the loops' own wake-up sockets use sendto/recvfrom too), and
  ``epoll_wait``/``epoll_ctl``;
- *starting* an event loop (asyncio or trio): ``epoll_create1``, an AF_UNIX stream
  ``socketpair`` for its wake-ups, ``ioctl(FIONBIO)``; trio also shrinks its wake-up
  socket buffers (``setsockopt``), tries TCP_NODELAY on them (unix sockets refuse it) and
  checks its signal wake-up descriptor (``fstat`` = ``newfstatat(fd, "", AT_EMPTY_PATH)``,
  ``fcntl(F_GETFL)``). Start the loop before the policy is applied and none of these is
  needed.

Reopening an endpoint (``from_fd``, ``AsyncChannel.from_channel``) checks the socket and
sets its blocking mode (getsockopt, ioctl): do it before the policy is applied.

Every rule here is a supporting rule (``implied=True``): it adds to a policy's own rules
on the same syscall instead of conflicting with them.
"""

from __future__ import annotations

import fcntl
import os
import socket
import termios
from typing import ClassVar, Final, Self

from isolates.sandbox import Arg, Rule, RuleSet

_TYPE_MASK: Final = 0xFFFFFFFF & ~(socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
_AT_EMPTY_PATH: Final = getattr(os, "AT_EMPTY_PATH", 0x1000)


class ChannelRules(RuleSet):
    """What channels need from the kernel. ``allow_blocking()``: a blocking Channel.
    ``allow_async()``: an AsyncChannel on a running asyncio or trio loop.
    ``allow_loop_startup()``: starting such a loop after the policy is applied (with
    ``allow_async()``, which it adds to).

    ``Channel.RULES`` and ``AsyncChannel.RULES`` hold the first two.
    """

    EVERYTHING: ClassVar[tuple[str, ...]] = (
        "allow_blocking",
        "allow_async",
        "allow_loop_startup",
    )

    def allow_blocking(self) -> Self:
        return self._support("sendto", "recvfrom", "sendmsg", "recvmsg", "poll")

    def allow_async(self) -> Self:
        return self._support("sendto", "recvfrom", "sendmsg", "recvmsg", "epoll_wait", "epoll_ctl")

    def allow_loop_startup(self) -> Self:
        sol, tcp = socket.SOL_SOCKET, socket.IPPROTO_TCP
        return self._with(
            Rule("epoll_create1", implied=True),
            Rule(
                "socketpair",
                Arg(0) == socket.AF_UNIX,
                Arg(1) & _TYPE_MASK == socket.SOCK_STREAM,
                implied=True,
            ),
            Rule("ioctl", Arg(1) == termios.FIONBIO, implied=True),
            Rule("setsockopt", Arg(1) == sol, Arg(2) == socket.SO_RCVBUF, implied=True),
            Rule("setsockopt", Arg(1) == sol, Arg(2) == socket.SO_SNDBUF, implied=True),
            Rule("setsockopt", Arg(1) == tcp, Arg(2) == socket.TCP_NODELAY, implied=True),
            Rule("newfstatat", Arg(3) == _AT_EMPTY_PATH, implied=True),
            Rule("fcntl", Arg(1) == fcntl.F_GETFL, implied=True),
        )

    def _support(self, *syscalls: str) -> Self:
        return self._with(*(Rule(s, implied=True) for s in syscalls))


#: A blocking Channel, once reopened: send/recv with and without descriptors, timeouts.
BLOCKING_RULES: Final = ChannelRules.nothing().allow_blocking().named("Channel.RULES")
#: An AsyncChannel on an asyncio or trio loop started before the policy was applied.
ASYNC_RULES: Final = ChannelRules.nothing().allow_async().named("AsyncChannel.RULES")

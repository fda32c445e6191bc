"""Networking: TCP, UDP and unix sockets, as servers and clients.

Socket rules compare the domain and the type for *equality* (the type with SOCK_NONBLOCK
and SOCK_CLOEXEC masked off), never as bit subsets: a TCP rule admits AF_INET and
AF_INET6 stream sockets and nothing else (not AF_ALG, AF_PACKET, AF_NETLINK, SOCK_RAW).
"""

from __future__ import annotations

import socket
from typing import ClassVar, Final, Self

from ._rules import Arg, Rule
from ._ruleset import BuiltinRuleSet
from ._uapi import FIONBIO, FIONREAD, SOCK_TYPE_MASK

_TYPE_MASK: Final = SOCK_TYPE_MASK
_INET: Final = (socket.AF_INET, socket.AF_INET6)

#: What a connected or listening socket needs to be used, whatever its family.
_USE: Final = (
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "getsockopt",
    "setsockopt",
    "getsockname",
    "getpeername",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "fcntl",
)
#: ioctl on sockets: FIONBIO (what settimeout/setblocking use) and FIONREAD, nothing else.
_IOCTLS: Final = (FIONBIO, FIONREAD)


class Networking(BuiltinRuleSet):
    """Sockets by role. Each ``allow_*`` brings the socket() rule for exactly its families
    and type, and what using such a socket needs (send/recv, sockopts, polling).

    - ``allow_start_tcp_servers``: socket(AF_INET/AF_INET6, SOCK_STREAM), bind, listen.
    - ``allow_running_tcp_servers``: accept, accept4 (on sockets handed in already bound).
    - ``allow_tcp_servers``: both of the above.
    - ``allow_tcp_clients``: socket(AF_INET/AF_INET6, SOCK_STREAM), connect.
    - ``allow_udp_servers`` / ``allow_udp_clients``: SOCK_DGRAM, with bind or connect.
    - ``allow_unix_servers`` / ``allow_unix_clients``: AF_UNIX stream, seqpacket and
      datagram sockets, with bind+listen+accept or connect; socketpair.

    Pair it with ``Landlock().bind_tcp(port)`` / ``.connect_tcp(port)`` to limit ports.
    """

    EVERYTHING: ClassVar[tuple[str, ...]] = (
        "allow_tcp_servers",
        "allow_tcp_clients",
        "allow_udp_servers",
        "allow_udp_clients",
        "allow_unix_servers",
        "allow_unix_clients",
    )

    def allow_start_tcp_servers(self) -> Self:
        return self._sockets(_INET, socket.SOCK_STREAM, (0, socket.IPPROTO_TCP)).allow(
            "bind", "listen"
        )

    def allow_running_tcp_servers(self) -> Self:
        return self.allow("accept", "accept4")._using()

    def allow_tcp_servers(self) -> Self:
        return self.allow_start_tcp_servers().allow_running_tcp_servers()

    def allow_tcp_clients(self) -> Self:
        return (
            self._sockets(_INET, socket.SOCK_STREAM, (0, socket.IPPROTO_TCP))
            .allow("connect")
            ._using()
        )

    def allow_udp_servers(self) -> Self:
        return (
            self._sockets(_INET, socket.SOCK_DGRAM, (0, socket.IPPROTO_UDP)).allow("bind")._using()
        )

    def allow_udp_clients(self) -> Self:
        return (
            self._sockets(_INET, socket.SOCK_DGRAM, (0, socket.IPPROTO_UDP))
            .allow("connect")
            ._using()
        )

    def allow_unix_servers(self) -> Self:
        return self._unix().allow("bind", "listen", "accept", "accept4")._using()

    def allow_unix_clients(self) -> Self:
        return self._unix().allow("connect")._using()

    def _unix(self) -> Self:
        rs = self
        for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET, socket.SOCK_DGRAM):
            rs = rs._sockets((socket.AF_UNIX,), kind, (0,))
            rs = rs.allow_rule("socketpair", Arg(0) == socket.AF_UNIX, Arg(1) & _TYPE_MASK == kind)
        return rs

    def _using(self) -> Self:
        # Supporting rules: they merge with a user's own rules on the same syscalls
        # (SystemIO.everything() allows every ioctl: no conflict, no dead condition).
        support = [Rule(s, implied=True) for s in _USE]
        support += [Rule("ioctl", Arg(1) == request, implied=True) for request in _IOCTLS]
        return self._with(*support)

    def _sockets(self, families: tuple[int, ...], kind: int, protocols: tuple[int, ...]) -> Self:
        rs = self
        for family in families:
            for proto in protocols:
                rs = rs.allow_rule(
                    "socket", Arg(0) == family, Arg(1) & _TYPE_MASK == kind, Arg(2) == proto
                )
        return rs

"""Channels against their baselines, measured in one run: ``python benches/bench_channels.py``.

Round-trip latency and one-way throughput of a small Struct message, blocking and async
(and batched: ``send_many`` of ``BATCH`` messages, the peer taking them with
``recv_many``/``receive_many``),
against raw bytes over a socketpair, an asyncio Protocol over a socketpair, and
multiprocessing.Pipe with pickle; and descriptors passed per second. Two reference rows
show where the cost goes: raw bytes over SOCK_SEQPACKET (the channels' socket type), and
msgspec encoding and decoding inline on that socket, with no channel at all (the floor for
any typed channel written in Python). Everything runs
twice: unpinned, then with both processes pinned to CPU 0 (cross-core wake-ups dominate
on a small VM). Each peer is a forked process that lives for the whole suite; the cases
take turns, round after round, and the median round is reported, so background noise
hits every case alike.

Options: ``--rounds N`` (default 15), ``--quick`` (fewer messages, for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing.connection
import os
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec

from isolates.channels import AsyncChannel, Channel

TRUNC = socket.MSG_TRUNC
CLOEXEC = socket.MSG_CMSG_CLOEXEC


class Ping(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    name: str
    value: float


PING = Ping(1, "hello", 2.5)
RAW = b"x" * len(msgspec.msgpack.encode(PING))  # the same bytes on the wire
SIZES = {"rt": 2000, "tp": 20000, "fd": 5000}
BATCH = 256  # messages per send_many / most per recv_many in the batching row


# -- peers: each runs in a forked child, on its end, until EOF ------------------------------


def raw_echo(sock: socket.socket) -> None:
    buf = bytearray(65536)
    while n := sock.recv_into(buf):
        sock.send(buf[:n])


def raw_sink(sock: socket.socket) -> None:
    buf, want = bytearray(65536), SIZES["tp"] * len(RAW)
    got = 0
    while n := sock.recv_into(buf):
        got += n
        if got >= want:
            got -= want
            sock.send(b"k")


def fd_sink(sock: socket.socket) -> None:
    count = 0
    while True:
        n, anc, _, _ = sock.recvmsg_into([bytearray(64)], socket.CMSG_SPACE(4), CLOEXEC)
        if not n:
            return
        os.close(int.from_bytes(anc[0][2][:4], "little"))
        count += 1
        if count == SIZES["fd"]:
            count = 0
            sock.send(b"k")


ENCODE = msgspec.msgpack.Encoder().encode
DECODE = msgspec.msgpack.Decoder(Ping).decode


def floor_echo(sock: socket.socket) -> None:
    """msgspec inline on the raw socket: the least any typed channel can do."""
    buf = bytearray(65536)
    view = memoryview(buf)
    while n := sock.recv_into(buf):
        sock.send(ENCODE(DECODE(view[:n])))


def floor_sink(sock: socket.socket) -> None:
    buf, count = bytearray(65536), 0
    view = memoryview(buf)
    while n := sock.recv_into(buf):
        DECODE(view[:n])
        count += 1
        if count == SIZES["tp"]:
            count = 0
            sock.send(b"k")


def channel_echo(sock: socket.socket) -> None:
    ch = Channel(sock, Ping)
    for msg in ch:
        ch.send(msg)


def channel_sink(sock: socket.socket) -> None:
    ch, count = Channel(sock, Ping), 0
    for _ in ch:
        count += 1
        if count == SIZES["tp"]:
            count = 0
            ch.send(PING)


def channel_batch_sink(sock: socket.socket) -> None:
    ch, count = Channel(sock, Ping), 0
    while True:
        try:
            count += len(ch.recv_many(BATCH))
        except EOFError:
            return
        if count >= SIZES["tp"]:
            count -= SIZES["tp"]
            ch.send(PING)


def channel_fd_sink(sock: socket.socket) -> None:
    ch, count = Channel(sock, Ping, max_fds=1), 0
    while True:
        try:
            _, fds = ch.recv_with_fds()
        except EOFError:
            return
        os.close(fds[0])
        count += 1
        if count == SIZES["fd"]:
            count = 0
            ch.send(PING)


def pipe_echo(sock: socket.socket) -> None:
    conn = multiprocessing.connection.Connection(sock.detach())
    while True:
        try:
            conn.send(conn.recv())
        except EOFError:
            return


def pipe_sink(sock: socket.socket) -> None:
    conn, count = multiprocessing.connection.Connection(sock.detach()), 0
    while True:
        try:
            conn.recv()
        except EOFError:
            return
        count += 1
        if count == SIZES["tp"]:
            count = 0
            conn.send(b"k")


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set_result(None)


class _Sink(_Echo):
    got = 0

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= SIZES["tp"] * len(RAW):
            self.got -= SIZES["tp"] * len(RAW)
            self.transport.write(b"k")


def protocol_peer(sock: socket.socket, protocol: type[_Echo]) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        proto = protocol()
        proto.done = loop.create_future()  # type: ignore[attr-defined]
        await loop.connect_accepted_socket(lambda: proto, sock)
        await proto.done  # type: ignore[attr-defined]

    asyncio.run(serve())


def async_peer(sock: socket.socket, backend: str, sink: bool) -> None:
    async def serve() -> None:
        ch, count = AsyncChannel(sock, Ping), 0
        async for msg in ch:
            if not sink:
                await ch.send(msg)
                continue
            count += 1
            if count == SIZES["tp"]:
                count = 0
                await ch.send(PING)

    anyio.run(serve, backend=backend)


def async_batch_sink(sock: socket.socket, backend: str) -> None:
    async def serve() -> None:
        ch, count = AsyncChannel(sock, Ping), 0
        while True:
            try:
                count += len(await ch.receive_many(BATCH))
            except EOFError:
                return
            if count >= SIZES["tp"]:
                count -= SIZES["tp"]
                await ch.send(PING)

    anyio.run(serve, backend=backend)


# -- drivers: one batch each, returning seconds per operation -------------------------------


def rt_raw(sock: socket.socket) -> float:
    buf, n = bytearray(65536), SIZES["rt"]
    start = time.perf_counter()
    for _ in range(n):
        sock.send(RAW)
        sock.recv_into(buf)
    return (time.perf_counter() - start) / n


def rt_floor(sock: socket.socket) -> float:
    buf, n = bytearray(65536), SIZES["rt"]
    view = memoryview(buf)
    start = time.perf_counter()
    for _ in range(n):
        sock.send(ENCODE(PING))
        DECODE(view[: sock.recv_into(buf)])
    return (time.perf_counter() - start) / n


def rt_channel(ch: Channel[Ping]) -> float:
    n = SIZES["rt"]
    start = time.perf_counter()
    for _ in range(n):
        ch.send(PING)
        ch.recv()
    return (time.perf_counter() - start) / n


def rt_pipe(conn: multiprocessing.connection.Connection) -> float:
    n = SIZES["rt"]
    start = time.perf_counter()
    for _ in range(n):
        conn.send(PING)
        conn.recv()
    return (time.perf_counter() - start) / n


def tp_raw(sock: socket.socket) -> float:
    n = SIZES["tp"]
    start = time.perf_counter()
    for _ in range(n):
        sock.send(RAW)
    sock.recv(1)
    return (time.perf_counter() - start) / n


def tp_floor(sock: socket.socket) -> float:
    n = SIZES["tp"]
    start = time.perf_counter()
    for _ in range(n):
        sock.send(ENCODE(PING))
    sock.recv(1)
    return (time.perf_counter() - start) / n


def tp_channel(ch: Channel[Ping]) -> float:
    n = SIZES["tp"]
    start = time.perf_counter()
    for _ in range(n):
        ch.send(PING)
    ch.recv()
    return (time.perf_counter() - start) / n


def tp_batched(ch: Channel[Ping]) -> float:
    n = SIZES["tp"]
    chunk = [PING] * BATCH
    start = time.perf_counter()
    for _ in range(n // BATCH):
        ch.send_many(chunk)
    ch.send_many([PING] * (n % BATCH))
    ch.recv()
    return (time.perf_counter() - start) / n


def tp_pipe(conn: multiprocessing.connection.Connection) -> float:
    n = SIZES["tp"]
    start = time.perf_counter()
    for _ in range(n):
        conn.send(PING)
    conn.recv()
    return (time.perf_counter() - start) / n


def fd_raw(sock: socket.socket) -> float:
    n, fd = SIZES["fd"], sock.fileno()
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, "little"))]
    start = time.perf_counter()
    for _ in range(n):
        sock.sendmsg([RAW], rights)
    sock.recv(1)
    return (time.perf_counter() - start) / n


def fd_channel(ch: Channel[Ping]) -> float:
    n, fds = SIZES["fd"], [ch.fileno()]
    start = time.perf_counter()
    for _ in range(n):
        ch.send(PING, fds=fds)
    ch.recv()
    return (time.perf_counter() - start) / n


def on_protocol(sock: socket.socket, mode: str) -> float:
    """One asyncio-Protocol batch (``rt`` or ``tp``) on a fresh loop."""
    return asyncio.run(_protocol_batch(sock, mode))


async def _protocol_batch(sock: socket.socket, mode: str) -> float:
    loop = asyncio.get_running_loop()
    client = _Client()
    transport, _ = await loop.connect_accepted_socket(lambda: client, sock.dup())
    try:
        if mode == "rt":
            return await client.round_trips(transport, SIZES["rt"])
        return await client.stream(transport, SIZES["tp"])
    finally:
        transport.close()


class _Client(asyncio.Protocol):
    """The driving side of the Protocol baseline, with flow control as asyncio asks."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.writable = asyncio.get_running_loop().create_future()
        self.writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self.writable.set_result(None)

    async def round_trips(self, transport: Any, n: int) -> float:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for _ in range(n):
            self.reply = loop.create_future()
            transport.write(RAW)
            await self.reply
        return (time.perf_counter() - start) / n

    async def stream(self, transport: Any, n: int) -> float:
        self.reply = asyncio.get_running_loop().create_future()
        start = time.perf_counter()
        for _ in range(n):
            transport.write(RAW)
            if not self.writable.done():
                await self.writable
        await self.reply
        return (time.perf_counter() - start) / n


def on_async(sock: socket.socket, backend: str, mode: str) -> float:
    """One AsyncChannel batch on a fresh loop of ``backend``, over a duplicate of the
    driver's end (closing it at the end leaves the peer connected)."""

    async def batch() -> float:
        ch = AsyncChannel.from_fd(os.dup(sock.fileno()), Ping)
        try:
            n = SIZES[mode]
            start = time.perf_counter()
            for _ in range(n):
                await ch.send(PING)
                if mode == "rt":
                    await ch.receive()
            if mode == "tp":
                await ch.receive()
            return (time.perf_counter() - start) / n
        finally:
            await ch.aclose()

    return anyio.run(batch, backend=backend)


def on_async_batched(sock: socket.socket, backend: str) -> float:
    """Throughput with ``send_many`` on a fresh loop (see ``on_async``)."""

    async def batch() -> float:
        ch = AsyncChannel.from_fd(os.dup(sock.fileno()), Ping)
        try:
            n, chunk = SIZES["tp"], [PING] * BATCH
            start = time.perf_counter()
            for _ in range(n // BATCH):
                await ch.send_many(chunk)
            await ch.send_many([PING] * (n % BATCH))
            await ch.receive()
            return (time.perf_counter() - start) / n
        finally:
            await ch.aclose()

    return anyio.run(batch, backend=backend)


# -- the suite ----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    peer: Callable[[socket.socket], None]
    driver: Callable[[Any], float]
    wrap: Callable[[socket.socket], Any] = lambda sock: sock
    kind: int = socket.SOCK_STREAM
    times: list[float] = field(default_factory=list)


def _pipe(sock: socket.socket) -> multiprocessing.connection.Connection:
    return multiprocessing.connection.Connection(sock.detach())


SEQ = socket.SOCK_SEQPACKET
CASES = {
    "rt": [
        Case("raw socketpair bytes", raw_echo, rt_raw),
        Case("raw SOCK_SEQPACKET bytes", raw_echo, rt_raw, kind=SEQ),
        Case("msgspec inline on SEQPACKET", floor_echo, rt_floor, kind=SEQ),
        Case("Channel (blocking)", channel_echo, rt_channel, lambda s: Channel(s, Ping), SEQ),
        Case("multiprocessing.Pipe", pipe_echo, rt_pipe, _pipe),
        Case("asyncio Protocol", lambda s: protocol_peer(s, _Echo), lambda s: on_protocol(s, "rt")),
        Case("AsyncChannel asyncio", lambda s: async_peer(s, "asyncio", False),
             lambda s: on_async(s, "asyncio", "rt"), kind=SEQ),
        Case("AsyncChannel trio", lambda s: async_peer(s, "trio", False),
             lambda s: on_async(s, "trio", "rt"), kind=SEQ),
    ],
    "tp": [
        Case("raw socketpair bytes", raw_sink, tp_raw),
        Case("raw SOCK_SEQPACKET bytes", raw_sink, tp_raw, kind=SEQ),
        Case("msgspec inline on SEQPACKET", floor_sink, tp_floor, kind=SEQ),
        Case("Channel (blocking)", channel_sink, tp_channel, lambda s: Channel(s, Ping), SEQ),
        Case("Channel send_many/recv_many", channel_batch_sink, tp_batched,
             lambda s: Channel(s, Ping), SEQ),
        Case("multiprocessing.Pipe", pipe_sink, tp_pipe, _pipe),
        Case("asyncio Protocol", lambda s: protocol_peer(s, _Sink), lambda s: on_protocol(s, "tp")),
        Case("AsyncChannel asyncio", lambda s: async_peer(s, "asyncio", True),
             lambda s: on_async(s, "asyncio", "tp"), kind=SEQ),
        Case("AsyncChannel trio", lambda s: async_peer(s, "trio", True),
             lambda s: on_async(s, "trio", "tp"), kind=SEQ),
        Case("AsyncChannel asyncio send_many", lambda s: async_batch_sink(s, "asyncio"),
             lambda s: on_async_batched(s, "asyncio"), kind=SEQ),
        Case("AsyncChannel trio send_many", lambda s: async_batch_sink(s, "trio"),
             lambda s: on_async_batched(s, "trio"), kind=SEQ),
    ],
    "fd": [
        Case("raw sendmsg SCM_RIGHTS", fd_sink, fd_raw),
        Case("Channel (blocking) max_fds=1", channel_fd_sink, fd_channel,
             lambda s: Channel(s, Ping, max_fds=1), SEQ),
    ],
}  # fmt: skip


def spawn(cases: list[Case]) -> list[tuple[Case, Any, int]]:
    """Fork one peer per case; each child closes every other case's ends."""
    ends = [socket.socketpair(socket.AF_UNIX, case.kind) for case in cases]
    running = []
    for i, case in enumerate(cases):
        pid = os.fork()
        if pid == 0:
            for j, (mine, theirs) in enumerate(ends):
                mine.close()
                if j != i:
                    theirs.close()
            try:
                case.peer(ends[i][1])
            finally:
                os._exit(0)
        running.append(pid)
    out = []
    for case, (mine, theirs), pid in zip(cases, ends, running, strict=True):
        theirs.close()
        out.append((case, case.wrap(mine), pid))
    return out


def run_suite(rounds: int) -> dict[str, dict[str, float]]:
    """Median seconds per operation, per metric and case."""
    result: dict[str, dict[str, float]] = {}
    for metric, cases in CASES.items():
        peers = spawn(cases)
        for case in cases:
            case.times = []
        for _ in range(rounds):
            for case, end, _ in peers:
                case.times.append(case.driver(end))
        for _, end, _ in peers:
            end.close()
        for _, _, pid in peers:
            os.waitpid(pid, 0)
        result[metric] = {case.name: statistics.median(case.times) for case in cases}
    return result


TARGETS = {  # metric, case: (baseline, bound, "<=" or ">=")
    ("rt", "Channel (blocking)"): ("raw socketpair bytes", 1.25, "<="),
    ("rt", "AsyncChannel asyncio"): ("asyncio Protocol", 1.3, "<="),
    ("rt", "AsyncChannel trio"): ("asyncio Protocol", 1.3, "<="),
    ("tp", "Channel (blocking)"): ("raw socketpair bytes", 0.7, ">="),
    ("tp", "Channel send_many/recv_many"): ("raw socketpair bytes", 0.8, ">="),
    ("tp", "AsyncChannel asyncio"): ("multiprocessing.Pipe", 1.5, ">="),
    ("tp", "AsyncChannel trio"): ("multiprocessing.Pipe", 1.5, ">="),
    ("tp", "AsyncChannel asyncio send_many"): ("multiprocessing.Pipe", 3.0, ">="),
    ("tp", "AsyncChannel trio send_many"): ("multiprocessing.Pipe", 3.0, ">="),
}
BASELINE = {
    "rt": "raw socketpair bytes",
    "tp": "raw socketpair bytes",
    "fd": "raw sendmsg SCM_RIGHTS",
}
TITLES = {
    "rt": "round trip, us (ratio: time / baseline)",
    "tp": "one-way throughput, k msg/s (ratio: rate / baseline)",
    "fd": "descriptors passed, k/s (ratio: rate / baseline)",
}


def ratio(metric: str, results: dict[str, dict[str, float]], case: str, base: str) -> float:
    times = results[metric]
    return times[case] / times[base] if metric == "rt" else times[base] / times[case]


def show(metric: str, case: str, runs: list[dict[str, dict[str, float]]]) -> str:
    cells = []
    for results in runs:
        t = results[metric][case]
        value = t * 1e6 if metric == "rt" else 1e-3 / t
        cells.append(f"{value:9.1f} {ratio(metric, results, case, BASELINE[metric]):6.2f}x")
    line = f"  {case:30}" + "".join(f"{c:>20}" for c in cells)
    target = TARGETS.get((metric, case))
    if target is not None:
        base, bound, op = target
        got = [ratio(metric, r, case, base) for r in runs]
        ok = all(g <= bound if op == "<=" else g >= bound for g in got)
        line += f"   {op} {bound}x {base}: " + " / ".join(f"{g:.2f}x" for g in got)
        line += "  ok" if ok else "  MISSED"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="fewer messages (smoke run)")
    args = parser.parse_args()
    if args.quick:
        SIZES.update(rt=200, tp=2000, fd=500)
    everything = os.sched_getaffinity(0)
    unpinned = run_suite(args.rounds)
    os.sched_setaffinity(0, {min(everything)})
    pinned = run_suite(args.rounds)
    os.sched_setaffinity(0, everything)
    print(f"message: {PING!r}, {len(RAW)} bytes of msgpack; median of {args.rounds} rounds")
    print(f"  {'':30}{'unpinned':>20}{'pinned to one CPU':>20}   target (unpinned / pinned)")
    for metric in CASES:
        print(TITLES[metric])
        for case in CASES[metric]:
            print(show(metric, case.name, [unpinned, pinned]))


if __name__ == "__main__":
    main()

"""The privilege-separated demo: a network-facing server that cannot touch the disk, and
a writer that cannot open a socket, joined by a typed channel (``isolates demo``).

- ``server``: serves HTTP on one loopback port. Landlock lets it bind that port and no
  other, connect nowhere, and touch no file; seccomp allows running a TCP server.
- ``writer``: writes files into one data directory. Landlock allows creating and writing
  files there only; seccomp has no socket rule, and kills the process on any call outside
  its policy.
- the supervisor: spawns both, waits until both are confined, confines itself (it may
  talk to the server's port, read the data directory and print), then releases them.

Read it top to bottom: it is meant to be copied.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import msgspec

from isolates.orchestrator import IsolateViolation, Supervisor, Worker, WorkerContext, WorkerFailed
from isolates.sandbox import Action, Landlock, Networking, Policy, SystemIO, Threads

# -- the typed channel between server and writer --------------------------------------


class WriteRequest(msgspec.Struct, tag="write", forbid_unknown_fields=True):
    name: str
    body: bytes


class Written(msgspec.Struct, tag="written", forbid_unknown_fields=True):
    name: str
    size: int


class Refused(msgspec.Struct, tag="refused", forbid_unknown_fields=True):
    name: str
    reason: str


Message = WriteRequest | Written | Refused

# -- the server worker: network only -------------------------------------------------


def serve(ctx: WorkerContext, port: int) -> list[str]:
    """Serve until the supervisor asks to stop: PUT /<name> stores the body through the
    writer; GET /probe tries to read /etc/passwd (and reports what happened)."""
    writes = ctx.channel("writes")
    attempts: list[str] = []
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(0.05)
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:  # idle: the moment to see whether we are asked to stop
                if ctx.stopping:
                    break
                continue
            with conn:
                _handle(conn, writes, attempts)
    return attempts


def _handle(conn: socket.socket, writes: Any, attempts: list[str]) -> None:
    method, path, body = _read_request(conn)
    if method == "GET" and path == "/probe":
        outcome = _try_to_read("/etc/passwd")
        attempts.append(f"read /etc/passwd: {outcome}")
        conn.sendall(_response(403, outcome.encode()))
    elif method == "PUT":
        writes.send(WriteRequest(path.lstrip("/"), body))
        reply = writes.recv()  # the writer answers every request (or dies: EOF)
        status = 201 if isinstance(reply, Written) else 400
        conn.sendall(_response(status, msgspec.json.encode(reply)))
    else:
        conn.sendall(_response(404, b"not found"))


def _try_to_read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f"read {len(f.read())} bytes (NOT confined!)"
    except OSError as exc:
        return f"denied ({type(exc).__name__}: {exc.strerror})"


def _read_request(conn: socket.socket) -> tuple[str, str, bytes]:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = [*lines[0].split(" "), "", "", ""][:3]
    length = next(
        (int(h.split(":")[1]) for h in lines[1:] if h.lower().startswith("content-length")), 0
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return method, path, body


def _response(status: int, body: bytes) -> bytes:
    head = f"HTTP/1.0 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


# -- the writer worker: one directory, no network --------------------------------------


def write_files(ctx: WorkerContext, directory: str, phone_home: bool) -> int:
    """Store each WriteRequest as a file in ``directory``; return how many were written."""
    writes = ctx.channel("writes")
    count = 0
    for request in writes:
        if not isinstance(request, WriteRequest):
            continue
        name = os.path.basename(request.name) or "unnamed"
        with open(os.path.join(directory, name), "wb") as f:
            f.write(request.body)
        writes.send(Written(name, len(request.body)))
        count += 1
    if phone_home:  # a compromised writer would try this: its policy kills it
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("93.184.215.14", 80))
    return count


# -- policies --------------------------------------------------------------------------


def server_policy(port: int) -> Policy:
    return Policy(
        Networking.nothing().allow_tcp_servers(),
        Landlock().bind_tcp(port).deny_fs(),  # no other port, no outbound TCP, no files
        Threads.nothing().allow_sleep(),
    )


def writer_policy(directory: str) -> Policy:
    return Policy(
        SystemIO.nothing().allow_close(),
        Landlock().write(directory).deny_tcp(),  # create and write files there, nowhere else
        default=Action.KILL_PROCESS,
    )


def supervisor_policy(port: int, directory: str) -> Policy:
    return Policy(
        SystemIO.nothing().allow_stdout().allow_stderr().allow_metadata().allow_close(),
        Networking.nothing().allow_tcp_clients(),
        Landlock().read(directory).connect_tcp(port),
        Threads.nothing().allow_sleep(),
    )


# -- the demo --------------------------------------------------------------------------


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = _parser().parse_args(argv)
    if args.directory is None:
        return _in_a_fresh_directory(argv if argv is not None else sys.argv[1:])
    directory = args.directory
    port = args.port or _free_port()
    sup = Supervisor(policy=supervisor_policy(port, directory))
    server = sup.add_worker("server", serve, args=(port,), policy=server_policy(port))
    writer = sup.add_worker(
        "writer", write_files, args=(directory, True), policy=writer_policy(directory)
    )
    sup.connect(server, writer, Message, name="writes")
    out(f"isolates demo: server on 127.0.0.1:{port}, writer in {directory}")
    sup.start()
    out(f"supervisor confined, then released both workers ({_us(sup.release_seconds)})")
    _exercise(port, directory, out)
    outcome = _finish(sup, out)
    _report(sup, [server, writer], out)
    return outcome


def _in_a_fresh_directory(argv: list[str]) -> int:
    """The demo in a new process and a new directory, removed when it ends: a supervisor
    confines its own process for good, so that process cannot remove it itself."""
    with tempfile.TemporaryDirectory(prefix="isolates-demo-") as directory:
        command = [sys.executable, "-m", "isolates.orchestrator.demo", *argv]
        return subprocess.run([*command, "--directory", directory], check=False).returncode


def _exercise(port: int, directory: str, out: Callable[[str], None]) -> None:
    for name, body in (("hello.txt", b"hello, world\n"), ("data.bin", b"\x00" * 1024)):
        status, reply = _http(port, "PUT", f"/{name}", body)
        out(f"  PUT /{name} -> {status} {reply.decode()}")
    out(f"files written: {sorted(os.listdir(directory))}")
    status, reply = _http(port, "GET", "/probe", b"")
    out(f"  GET /probe -> {status}: the server {reply.decode()}")


def _finish(sup: Supervisor, out: Callable[[str], None]) -> int:
    sup.request_stop("server")  # the server stops; the writer sees EOF and phones home
    try:
        sup.join(timeout=30)
    except IsolateViolation as exc:
        out(f"writer tried to connect out -> IsolateViolation: {exc}")
        return 0
    except WorkerFailed as exc:
        out(f"unexpected failure: {exc}")
        return 1
    out("the writer was not stopped from connecting out: not confined!")
    return 1


def _report(sup: Supervisor, workers: list[Worker], out: Callable[[str], None]) -> None:
    out("enforcement:")
    out(f"  supervisor: {sup.status}")
    for w in workers:
        out(f"  {w.name}: {w.status}")


def _http(port: int, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    deadline = time.monotonic() + 5
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except ConnectionRefusedError:  # the server may not be listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    with conn:
        head = f"{method} {path} HTTP/1.0\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head_bytes, _, reply = data.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ")[1]), reply


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _us(seconds: float | None) -> str:
    return f"GO sent to every worker in {seconds * 1e6:.0f} us" if seconds else ""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="isolates demo", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    p.add_argument("--directory", help="the writer's data directory (default: a new one)")
    return p


if __name__ == "__main__":
    sys.exit(main())

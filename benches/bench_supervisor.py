"""Supervisor costs, each against a baseline in the same run:

- barrier release: time from the supervisor's own confinement to GO sent to every
  worker, for 1, 4 and 16 workers (target: <= 1 ms + 0.1 ms per worker);
- the demo's HTTP server with its separated writer (a channel round trip per request)
  against the same server writing files in-process (target: >= 0.8x);
- messages per second through a three-stage pipeline of isolates against the same three
  stages as threads in one process.

Supervisors confine themselves, so each measurement runs in a forked child.

    python benches/bench_supervisor.py
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _pipeline
from _util import in_fork, table, verdict

from isolates.orchestrator import Supervisor, demo
from isolates.sandbox import Policy, SystemIO

REQUESTS = 400
ROUNDS = 5
MESSAGES = 50_000


def release(workers: int) -> float:
    def run() -> float:
        sup = Supervisor(policy=Policy(SystemIO.nothing().allow_stderr()))
        for i in range(workers):
            sup.add_worker(f"w{i}", _pipeline.nothing)
        sup.run(timeout=120)
        assert sup.release_seconds is not None
        return sup.release_seconds

    return sorted(in_fork(run) for _ in range(5))[2]


def separated_server() -> float:
    def run() -> float:
        directory = tempfile.mkdtemp()
        port = demo._free_port()
        sup = Supervisor()
        s = sup.add_worker("server", demo.serve, args=(port,), policy=demo.server_policy(port))
        w = sup.add_worker("writer", demo.write_files, args=(directory, False),
                           policy=demo.writer_policy(directory))  # fmt: skip
        sup.connect(s, w, demo.Message, name="writes")
        sup.start()
        rate = _load(port)
        sup.stop()
        return rate

    return in_fork(run)


def in_process_server() -> float:
    """The same HTTP handling, writing the file itself, in a thread of this process."""
    directory = tempfile.mkdtemp()
    port = demo._free_port()
    stop = threading.Event()

    class Direct:
        def send(self, request: demo.WriteRequest) -> None:
            with open(os.path.join(directory, request.name), "wb") as f:
                f.write(request.body)
            self.reply = demo.Written(request.name, len(request.body))

        def recv(self) -> object:
            return self.reply

    def serve() -> None:
        with socket.create_server(("127.0.0.1", port)) as listener:
            listener.settimeout(0.05)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    demo._handle(conn, Direct(), [])

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        return _load(port)
    finally:
        stop.set()
        thread.join()


def _load(port: int) -> float:
    demo._http(port, "PUT", "/warmup", b"x")
    start = time.perf_counter()
    for i in range(REQUESTS):
        demo._http(port, "PUT", f"/f{i % 50}", b"x" * 256)
    return REQUESTS / (time.perf_counter() - start)


def pipeline() -> float:
    def run() -> float:
        sup = Supervisor()
        a = sup.add_worker("source", _pipeline.source, args=(MESSAGES,))
        b = sup.add_worker("double", _pipeline.double)
        c = sup.add_worker("sink", _pipeline.sink)
        sup.connect(a, b, _pipeline.Number, name="a")
        sup.connect(b, c, _pipeline.Number, name="b")
        sup.start()
        start = time.perf_counter()
        results = sup.join(timeout=300)
        assert results["sink"] == MESSAGES * (MESSAGES - 1)
        return MESSAGES / (time.perf_counter() - start)

    return in_fork(run)


def threads() -> float:
    start = time.perf_counter()
    assert _pipeline.threaded(MESSAGES) == MESSAGES * (MESSAGES - 1)
    return MESSAGES / (time.perf_counter() - start)


def main() -> None:
    rows = []
    for n in (1, 4, 16):
        t = release(n)
        target = 1e-3 + 1e-4 * n
        rows.append([str(n), f"{t * 1e3:.3f} ms", f"<= {target * 1e3:.1f} ms", verdict(t, target)])
    table("Barrier release after the supervisor confines itself (median of 5)",
          ["workers", "GO to all", "target", ""], rows)  # fmt: skip

    pairs = [(separated_server(), in_process_server()) for _ in range(ROUNDS)]
    ratios = sorted(s / d for s, d in pairs)
    sep, direct = pairs[[s / d for s, d in pairs].index(ratios[ROUNDS // 2])]
    table(f"Demo server, {REQUESTS} sequential PUTs ({os.cpu_count()} cores), median of "
          f"{ROUNDS} alternating rounds (ratios {ratios[0]:.2f}x to {ratios[-1]:.2f}x)",
          ["server", "requests/s", "ratio", "target", ""], [
              ["server + separated writer (isolates)", f"{sep:.0f}", f"{sep / direct:.2f}x",
               ">= 0.8x", verdict(sep / direct, 0.8, lower_is_better=False)],
              ["same server writing in-process", f"{direct:.0f}", "1.00x", "", ""],
          ])  # fmt: skip

    iso, thr = pipeline(), threads()
    table(f"Three-stage pipeline, {MESSAGES} messages",
          ["stages as", "messages/s", "ratio"], [
              ["isolates joined by channels", f"{iso:.0f}", f"{iso / thr:.2f}x"],
              ["threads in one process (SimpleQueue)", f"{thr:.0f}", "1.00x"],
          ])  # fmt: skip


if __name__ == "__main__":
    main()

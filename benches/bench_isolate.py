"""@isolate start-up and call latency, against Python's own ways of running a function in
another process, all measured in this run:

- cold first result (no pool): a fresh parent process calls a trivial function once;
  against multiprocessing's spawn Process, ProcessPoolExecutor (forkserver) and
  anyio.to_process.run_sync, each also from a fresh parent;
- warm call: with the pool warm, one call (a fresh isolate each time) against a warm
  ProcessPoolExecutor.submit (which reuses its worker; ours never do);
- exec-to-READY: spawn an isolate and wait until it is confined, against a bare
  ``python -I -S -c pass``;
- executor throughput: ``BENCH_EXECUTOR_CALLS`` (default 2,000) trivial calls through
  ``IsolateExecutor(max_workers=2)`` against ``ProcessPoolExecutor(2,
  max_tasks_per_child=1)``, the stdlib's own fresh process per task.

    python benches/bench_isolate.py
    BENCH_EXECUTOR_CALLS=200 python benches/bench_isolate.py   # a quicker run
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import table, verdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROUNDS = 9
EXECUTOR_CALLS = int(os.environ.get("BENCH_EXECUTOR_CALLS", "2000"))

COLD = {
    "isolate (no pool)": """
        from isolates.orchestrator import POOL, isolate
        from _targets import trivial
        POOL.resize(0)
        f = isolate(trivial)
        start = time.perf_counter(); f(1)
    """,
    "multiprocessing spawn Process": """
        import multiprocessing as mp
        from _targets import to_queue
        ctx = mp.get_context("spawn"); q = ctx.Queue()
        start = time.perf_counter()
        p = ctx.Process(target=to_queue, args=(q, 1)); p.start(); q.get(); p.join()
    """,
    "ProcessPoolExecutor (forkserver)": """
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from _targets import trivial
        start = time.perf_counter()
        with ProcessPoolExecutor(1, mp_context=mp.get_context("forkserver")) as ex:
            ex.submit(trivial, 1).result()
    """,
    "anyio.to_process.run_sync": """
        import anyio, anyio.to_process
        from _targets import trivial
        async def main():
            global start
            start = time.perf_counter()
            await anyio.to_process.run_sync(trivial, 1)
        anyio.run(main)
    """,
}


def cold(code: str) -> float:
    script = "import time, sys\n" + textwrap.dedent(code) + "\nprint(time.perf_counter() - start)"
    samples = []
    for _ in range(ROUNDS):
        out = subprocess.run([sys.executable, "-c", script], cwd=HERE, capture_output=True,
                             text=True, check=True)  # fmt: skip
        samples.append(float(out.stdout.split()[-1]))
    return statistics.median(samples)


def warm_calls() -> tuple[float, float]:
    from concurrent.futures import ProcessPoolExecutor

    from _targets import trivial

    from isolates.orchestrator import POOL, isolate

    f = isolate(trivial)
    POOL.resize(2)
    POOL.warm()
    ours = []
    for _ in range(40):
        while POOL.idle < POOL.size:  # the pool refills in the background
            time.sleep(0.005)
        start = time.perf_counter()
        f(1)
        ours.append(time.perf_counter() - start)
    with ProcessPoolExecutor(1) as ex:
        ex.submit(trivial, 1).result()
        theirs = [_timed(lambda: ex.submit(trivial, 1).result()) for _ in range(40)]
    return statistics.median(ours), statistics.median(theirs)


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def exec_to_ready() -> tuple[float, float, float]:
    from _targets import trivial

    from isolates.orchestrator._call import IsolatedCall, IsolatePlan, Options
    from isolates.orchestrator._core.runtime import spawn_isolate

    plan = IsolatePlan(Options(), trivial)

    def ready() -> float:
        start = time.perf_counter()
        proc = spawn_isolate()
        proc.boot(IsolatedCall(trivial, (1,), {}, plan).boot_message(proc.pid))
        proc.wait_ready(None)
        elapsed = time.perf_counter() - start
        proc.kill()
        proc.reap()
        return elapsed

    bare = [sys.executable, "-I", "-S", "-c", "pass"]
    # Any child answering in msgspec over a socket, via ctypes syscalls, imports these:
    floor = [sys.executable, "-I", "-c", "import msgspec, socket, pickle, ctypes"]
    ready()
    ours = statistics.median(ready() for _ in range(15))
    base = statistics.median(_timed(lambda: subprocess.run(bare)) for _ in range(15))
    transport = statistics.median(_timed(lambda: subprocess.run(floor)) for _ in range(15))
    return ours, base, transport


def executor_throughput(calls: int) -> tuple[float, float]:
    """Calls per second of ours and of the stdlib's fresh-process-per-task pool."""
    from concurrent.futures import Executor, ProcessPoolExecutor

    from _targets import trivial

    from isolates.orchestrator import IsolateExecutor

    def rate(executor: Executor) -> float:
        start = time.perf_counter()
        with executor:
            results = list(executor.map(trivial, range(calls)))
        elapsed = time.perf_counter() - start
        assert results == [x + 1 for x in range(calls)]
        return calls / elapsed

    ours = rate(IsolateExecutor(max_workers=2))
    theirs = rate(ProcessPoolExecutor(2, max_tasks_per_child=1))
    return ours, theirs


def main() -> None:
    results = {name: cold(code) for name, code in COLD.items()}
    ours = results["isolate (no pool)"]
    spawn = results["multiprocessing spawn Process"]
    rows = [[name, f"{t * 1e3:.1f} ms", f"{ours / t:.2f}x"] for name, t in results.items()]
    rows[0] += ["<= 0.6x spawn", verdict(ours / spawn, 0.6)]
    for row in rows[1:]:
        row += ["", ""]
    table(f"Cold first result (median of {ROUNDS} fresh parents)",
          ["how", "first result", "isolate / this", "target", ""], rows)  # fmt: skip

    warm, ppe = warm_calls()
    table("Warm call (median of 40)", ["how", "latency", "ratio", "target", ""], [
        ["isolate, warm pool (fresh process per call)", f"{warm * 1e3:.2f} ms",
         f"{warm / ppe:.1f}x", "<= 2 ms", verdict(warm, 2e-3)],
        ["ProcessPoolExecutor.submit (reused worker)", f"{ppe * 1e3:.2f} ms", "1.0x", "", ""],
    ])  # fmt: skip

    ready, bare, transport = exec_to_ready()
    flags = "-I -S" if "-S" in _child_flags() else "-I (site needed: editable install)"
    table("Exec to READY (median of 15)", ["what", "time", "vs bare", "vs bare + imports",
                                           "target", ""], [
        [f"isolate spawned, booted, confined ({flags})", f"{ready * 1e3:.1f} ms",
         f"{ready / bare:.2f}x", f"{ready / transport:.2f}x", "<= 1.5x bare + imports",
         verdict(ready / transport, 1.5)],
        ["python -I -S -c pass (bare)", f"{bare * 1e3:.1f} ms", "1.00x", "", "", ""],
        ["bare + imports: python -I -c 'import msgspec, socket, pickle, ctypes'",
         f"{transport * 1e3:.1f} ms", f"{transport / bare:.2f}x", "1.00x", "", ""],
    ])  # fmt: skip

    ours_rate, ppe_rate = executor_throughput(EXECUTOR_CALLS)
    table(f"Executor throughput ({EXECUTOR_CALLS} trivial calls, 2 workers, fresh process "
          "per call)", ["how", "calls/s", "ratio", "target", ""], [
        ["IsolateExecutor(max_workers=2)", f"{ours_rate:.1f}", f"{ours_rate / ppe_rate:.2f}x",
         ">= 5x", verdict(ours_rate / ppe_rate, 5.0, lower_is_better=False)],
        ["ProcessPoolExecutor(2, max_tasks_per_child=1)", f"{ppe_rate:.1f}", "1.00x", "", ""],
    ])  # fmt: skip


def _child_flags() -> list[str]:
    from isolates.orchestrator._core.spawn import command

    return command(3)[1:3]


if __name__ == "__main__":
    main()

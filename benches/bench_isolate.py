"""@isolate start-up, call latency and memory, against Python's own and third-party ways
of running a function in another process, all measured in this run. Every timing is the
median of alternating rounds: one sample of each contender, then the next round, so a
machine that slows down mid-run slows every contender alike.

- cold first result (no pool): a fresh parent process calls a trivial function once;
  against multiprocessing's spawn Process, ProcessPoolExecutor (forkserver),
  anyio.to_process.run_sync, loky and trio-parallel, each also from a fresh parent;
- warm call: one call, a fresh isolate each time, through the fork server and through
  exec (warm pool), against a warm ProcessPoolExecutor (which reuses its worker) and one
  with ``max_tasks_per_child=1`` (the stdlib's own fresh process per task);
- executor throughput: ``BENCH_EXECUTOR_CALLS`` (default 2,000) trivial calls through
  ``IsolateExecutor(max_workers=2)`` in each start mode against ``ProcessPoolExecutor(2,
  max_tasks_per_child=1)``;
- exec-to-READY: spawn an isolate and wait until it is confined, against a bare
  ``python -I -S -c pass``;
- limits: the warm call (fork server) with every limit set against none (target
  <= 1.05x), and what the processes limit costs a clone: a child forking
  ``FORKS`` children one by one with the limit and without;
- denial reporting: a loop of allowed calls inside an isolate with its denials reported
  and without (target: no slower, <= 1.02x), and what reporting costs a denied call;
- memory: VmRSS and Pss (shared pages split among their users, fairer for forked
  children) of an idle pooled isolate and of the fork server, next to a bare interpreter.

A row that needs the start-mode API (``start=``, ``FORK_SERVER``, ``POOL.pids``) prints
"n/a (API missing)" where that API is not there.

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
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _targets import allowed_calls, denied_calls, fork_many, trivial
from _util import table, verdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROUNDS = 9
WARM_CALLS = 40
READY_ROUNDS = 15
EXECUTOR_CALLS = int(os.environ.get("BENCH_EXECUTOR_CALLS", "2000"))
#: How long a ProcessPoolExecutor(max_tasks_per_child=1) needs to have its next worker
#: up (spawn and imports, measured here at about 0.2 s): it replaces the worker in the
#: background, as our pool does, so a warm call waits for that too.
PPE_RESPAWN = 0.3

NA = "n/a (API missing)"
#: What a call into a start-mode API that is not there yet raises (ImportError: a
#: missing name in ``from isolates.orchestrator import ...``).
API_MISSING = (AttributeError, TypeError, ImportError)
#: The exit status of a fresh parent that found the start-mode API missing.
MISSING_RC = 3

T = TypeVar("T")
Sample = Callable[[], float | None]


def attempt(fn: Callable[[], T]) -> T | None:
    """``fn()``, or None if it needs the start-mode API and that is not there yet."""
    try:
        return fn()
    except API_MISSING as missing:
        print(f"(n/a: {type(missing).__name__}: {missing})", file=sys.stderr)
        return None


def alternate(contenders: Mapping[str, Sample | None], rounds: int) -> dict[str, float | None]:
    """Each contender's median sample, taken one round of every contender at a time, in
    the reverse order every other round (what runs just after another pays for its
    leftovers). A contender that is None, or whose sample is None (API missing), has no
    median."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    live = {name: fn for name, fn in contenders.items() if fn is not None}
    for round_ in range(rounds):
        order = list(live.items())
        for name, fn in order if round_ % 2 == 0 else order[::-1]:
            sample = fn()
            if sample is None:
                del live[name]
            else:
                samples[name].append(sample)
    return {name: statistics.median(s) if s else None for name, s in samples.items()}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- formatting ----------------------------------------------------------------------


def ms(seconds: float | None, digits: int = 1) -> str:
    return NA if seconds is None else f"{seconds * 1e3:.{digits}f} ms"


def over(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def times(ratio: float | None, digits: int = 2) -> str:
    return "" if ratio is None else f"{ratio:.{digits}f}x"


def check(value: float | None, target: float, lower_is_better: bool = True) -> str:
    return "" if value is None else verdict(value, target, lower_is_better)


# -- cold first result ---------------------------------------------------------------


@dataclass(frozen=True)
class Cold:
    """A fresh parent's script: it sets ``start`` just before the work it times."""

    code: str
    new_api: bool = False  # needs the start-mode API: exit MISSING_RC if it is absent


def _ours(start: str | None = None) -> Cold:
    """Our first result; with ``start="fork-server"`` the server's start is timed too."""
    kwarg = "" if start is None else f", start={start!r}"
    server = start == "fork-server"
    code = f"""
        from isolates.orchestrator import POOL, isolate
        {"from isolates.orchestrator import FORK_SERVER" if server else ""}
        from _targets import fork_many, trivial
        POOL.resize(0)
        f = isolate(trivial{kwarg})
        start = time.perf_counter()
        {"FORK_SERVER.start()" if server else ""}
        f(1)
    """
    return Cold(code, new_api=start is not None)


COLD = {
    "isolate (no pool), default start": _ours(),
    "isolate (no pool), start='exec'": _ours("exec"),
    "isolate (no pool), start='fork-server'": _ours("fork-server"),
    "multiprocessing spawn Process": Cold("""
        import multiprocessing as mp
        from _targets import to_queue
        ctx = mp.get_context("spawn"); q = ctx.Queue()
        start = time.perf_counter()
        p = ctx.Process(target=to_queue, args=(q, 1)); p.start(); q.get(); p.join()
    """),
    "ProcessPoolExecutor (forkserver)": Cold("""
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from _targets import fork_many, trivial
        start = time.perf_counter()
        with ProcessPoolExecutor(1, mp_context=mp.get_context("forkserver")) as ex:
            ex.submit(trivial, 1).result()
    """),
    "anyio.to_process.run_sync": Cold("""
        import anyio, anyio.to_process
        from _targets import fork_many, trivial
        async def main():
            global start
            start = time.perf_counter()
            await anyio.to_process.run_sync(trivial, 1)
        anyio.run(main)
    """),
    "loky get_reusable_executor": Cold("""
        from loky import get_reusable_executor
        from _targets import fork_many, trivial
        start = time.perf_counter()
        get_reusable_executor(max_workers=1).submit(trivial, 1).result()
    """),
    "trio_parallel.run_sync (in trio.run)": Cold("""
        import trio, trio_parallel
        from _targets import fork_many, trivial
        async def main():
            global start
            start = time.perf_counter()
            await trio_parallel.run_sync(trivial, 1)
        trio.run(main)
    """),
}

_ON_MISSING = f"""
except (AttributeError, TypeError, ImportError) as missing:  # API_MISSING
    print(missing, file=sys.stderr); sys.exit({MISSING_RC})
"""


def cold_script(cold: Cold) -> str:
    body = textwrap.dedent(cold.code)
    if cold.new_api:
        body = "try:" + textwrap.indent(body, "    ") + _ON_MISSING
    return f"import sys, time\n{body}\nprint(time.perf_counter() - start)\n"


def cold_once(cold: Cold) -> float | None:
    """One fresh parent's first result, in seconds; None if it found the API missing."""
    argv = [sys.executable, "-c", cold_script(cold)]
    out = subprocess.run(argv, cwd=HERE, capture_output=True, text=True)
    if cold.new_api and out.returncode == MISSING_RC:
        print(f"(n/a: {out.stderr.strip()})", file=sys.stderr)
        return None
    if out.returncode != 0:
        raise RuntimeError(f"cold run failed ({out.returncode}):\n{out.stderr}")
    return float(out.stdout.split()[-1])


def cold_table() -> None:
    results = alternate({name: partial(cold_once, cold) for name, cold in COLD.items()}, ROUNDS)
    spawn = results["multiprocessing spawn Process"]
    rows = []
    for name, seconds in results.items():
        ratio = over(seconds, spawn)
        target = ["<= 0.5x spawn", check(ratio, 0.5)] if name.startswith("isolate") else ["", ""]
        rows.append([name, ms(seconds), times(ratio), *target])
    table(f"Cold first result (median of {ROUNDS} fresh parents each, alternating)",
          ["how", "first result", "vs spawn Process", "target", ""], rows)  # fmt: skip


# -- warm call -----------------------------------------------------------------------


class Quiet:
    """Waits until nothing starts a process in the background: our pool is full, and the
    ``max_tasks_per_child=1`` executor has had time to replace its worker. Every warm
    sample waits for this, so no contender's call shares the cores with another's refill.
    """

    def __init__(self) -> None:
        self.respawned_at = 0.0  # when the last replaced worker will be up

    def __call__(self) -> None:
        from isolates.orchestrator import FORK_SERVER, POOL

        deadline = time.monotonic() + 10.0
        for pool in (POOL, FORK_SERVER.pool):
            while pool.idle < pool.size and time.monotonic() < deadline:
                time.sleep(0.002)
        time.sleep(max(0.0, self.respawned_at - time.monotonic()))

    def respawning(self) -> None:
        self.respawned_at = time.monotonic() + PPE_RESPAWN


def _isolate_warm(**start: str) -> Callable[[], object]:
    from isolates.orchestrator import isolate

    f = isolate(trivial, **start)
    f(1)
    return lambda: f(1)


def _fork_server_warm() -> Callable[[], object]:
    from isolates.orchestrator import FORK_SERVER

    FORK_SERVER.start()
    return _isolate_warm(start="fork-server")


def _ppe_warm(ex: ProcessPoolExecutor, quiet: Quiet | None = None) -> Callable[[], object]:
    """A call on ``ex``, warmed; with ``quiet``, ``ex`` replaces its worker after each."""
    ex.submit(trivial, 1).result()
    if quiet is None:
        return lambda: ex.submit(trivial, 1).result()

    def call_then_respawn() -> None:
        ex.submit(trivial, 1).result()
        quiet.respawning()  # the worker exits after its one task; a new one starts

    quiet.respawning()
    return call_then_respawn


WARM_FORK_SERVER = "isolate, start='fork-server' (fresh process per call)"
WARM_EXEC = "isolate, start='exec', warm pool (fresh process per call)"
WARM_DEFAULT = "isolate, default start, warm pool (fresh process per call)"
WARM_PPE = "ProcessPoolExecutor.submit (reused worker)"
WARM_PPE_1 = "ProcessPoolExecutor(max_tasks_per_child=1).submit (spawn, fresh worker)"


def warm_calls() -> dict[str, float | None]:
    from isolates.orchestrator import POOL

    POOL.resize(2)
    POOL.warm()
    quiet = Quiet()
    with ProcessPoolExecutor(1) as ppe, ProcessPoolExecutor(1, max_tasks_per_child=1) as ppe1:
        calls = {
            WARM_FORK_SERVER: attempt(_fork_server_warm),
            WARM_EXEC: attempt(lambda: _isolate_warm(start="exec")),
            WARM_DEFAULT: _isolate_warm(),
            WARM_PPE: _ppe_warm(ppe),
            WARM_PPE_1: _ppe_warm(ppe1, quiet),
        }
        samples = {name: _after(quiet, call) if call else None for name, call in calls.items()}
        return alternate(samples, WARM_CALLS)


def _after(quiet: Quiet, call: Callable[[], object]) -> Sample:
    def sample() -> float:
        quiet()
        return _timed(call)

    return sample


def warm_table() -> None:
    t = warm_calls()
    ppe = t[WARM_PPE]
    fork_ratio = over(t[WARM_FORK_SERVER], ppe)
    fork_ok = f"{check(t[WARM_FORK_SERVER], 1e-3)}, {check(fork_ratio, 6.0)}"
    table(f"Warm call (median of {WARM_CALLS}, alternating)",
          ["how", "latency", "vs reused worker", "target", ""], [
        [WARM_FORK_SERVER, ms(t[WARM_FORK_SERVER], 2), times(fork_ratio, 1),
         "<= 1 ms, <= 6x reused worker", fork_ok if t[WARM_FORK_SERVER] else ""],
        [WARM_EXEC, ms(t[WARM_EXEC], 2), times(over(t[WARM_EXEC], ppe), 1), "<= 2 ms",
         check(t[WARM_EXEC], 2e-3)],
        [WARM_DEFAULT, ms(t[WARM_DEFAULT], 2), times(over(t[WARM_DEFAULT], ppe), 1), "", ""],
        [WARM_PPE, ms(ppe, 2), "1.0x", "", ""],
        [WARM_PPE_1, ms(t[WARM_PPE_1], 2), times(over(t[WARM_PPE_1], ppe), 1), "", ""],
    ])  # fmt: skip


# -- executor throughput -------------------------------------------------------------


def rate(make: Callable[[], Executor], calls: int) -> float:
    """Calls per second through the executor ``make()`` returns, start-up included."""
    start = time.perf_counter()
    with make() as executor:
        results = list(executor.map(trivial, range(calls)))
    elapsed = time.perf_counter() - start
    assert results == [x + 1 for x in range(calls)]
    return calls / elapsed


def _isolate_executor(**start: Any) -> Callable[[], Executor]:
    from isolates.orchestrator import IsolateExecutor

    IsolateExecutor(max_workers=1, **start).shutdown()  # a missing ``start=`` fails here
    if start.get("start") == "fork-server":
        from isolates.orchestrator import FORK_SERVER

        FORK_SERVER.start()
    return lambda: IsolateExecutor(max_workers=2, **start)


def executor_row(start: dict[str, Any], calls: int, theirs: float) -> list[str]:
    make = attempt(partial(_isolate_executor, **start))
    ours = rate(make, calls) if make else None
    ratio = over(ours, theirs)
    label = "".join(f", start={mode!r}" for mode in start.values())
    return [f"IsolateExecutor(max_workers=2{label})", NA if ours is None else f"{ours:.1f}",
            times(ratio), ">= 5x", check(ratio, 5.0, lower_is_better=False)]  # fmt: skip


def executor_table(calls: int) -> None:
    theirs = rate(lambda: ProcessPoolExecutor(2, max_tasks_per_child=1), calls)
    starts: list[dict[str, Any]] = [{}, {"start": "exec"}, {"start": "fork-server"}]
    rows = [executor_row(start, calls, theirs) for start in starts]
    rows.append(["ProcessPoolExecutor(2, max_tasks_per_child=1)", f"{theirs:.1f}", "1.00x", "", ""])
    table(f"Executor throughput ({calls} trivial calls, 2 workers, fresh process per call)",
          ["how", "calls/s", "ratio", "target", ""], rows)  # fmt: skip


# -- exec to READY -------------------------------------------------------------------


def _ready_sample() -> Callable[[], float]:
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

    ready()
    return ready


BARE = [sys.executable, "-I", "-S", "-c", "pass"]
# Any child answering in msgspec over a socket, via ctypes syscalls, imports these:
FLOOR = [sys.executable, "-I", "-c", "import msgspec, socket, pickle, ctypes"]


def ready_table() -> None:
    t = alternate({
        "ours": attempt(_ready_sample),
        "bare": lambda: _timed(lambda: subprocess.run(BARE)),
        "floor": lambda: _timed(lambda: subprocess.run(FLOOR)),
    }, READY_ROUNDS)  # fmt: skip
    flags = " ".join(_child_flags())
    if "-S" not in flags:
        flags += " (site needed: editable install)"
    ratio = over(t["ours"], t["bare"])
    table(f"Exec to READY (median of {READY_ROUNDS}, alternating)",
          ["what", "time", "vs bare", "vs bare + imports", "target", ""], [
        [f"lean isolate spawned, booted, confined ({flags})", ms(t["ours"]), times(ratio),
         times(over(t["ours"], t["floor"])), "<= 2x bare", check(ratio, 2.0)],
        ["python -I -S -c pass (bare)", ms(t["bare"]), "1.00x", "", "", ""],
        ["bare + imports: python -I -c 'import msgspec, socket, pickle, ctypes'",
         ms(t["floor"]), times(over(t["floor"], t["bare"])), "1.00x", "", ""],
    ])  # fmt: skip


def _child_flags() -> list[str]:
    from isolates.orchestrator._core.spawn import command

    return [flag for flag in command(3)[1:3] if flag.startswith("-")]


# -- memory --------------------------------------------------------------------------


def _proc_kb(pid: int, file: str, key: str) -> int:
    """A ``key:  N kB`` line of /proc/PID/FILE, in kB."""
    with open(f"/proc/{pid}/{file}") as lines:
        for line in lines:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/{file}")


def memory_row(what: str, pid: int | str | None, bare_kb: int) -> list[str]:
    """``pid``'s memory; a string says why there is no process (None: API missing)."""
    if not isinstance(pid, int):
        return [what, pid or NA, "", "", ""]
    rss = _proc_kb(pid, "status", "VmRSS")
    pss = _proc_kb(pid, "smaps_rollup", "Pss")
    return [what, str(pid), f"{rss / 1024:.1f} MiB", f"{pss / 1024:.1f} MiB",
            times(over(rss, bare_kb))]  # fmt: skip


def _pooled_pid() -> int:
    from isolates.orchestrator import POOL

    POOL.resize(max(POOL.size, 1))
    POOL.warm()
    pids: tuple[int, ...] = POOL.pids
    return pids[0]


def _fork_server_pid() -> int | str:
    from isolates.orchestrator import FORK_SERVER

    FORK_SERVER.start()
    pid: int | None = FORK_SERVER.pid
    return "not running after start()" if pid is None else pid


def memory_table() -> None:
    sleeper = [
        "import sys, time",
        "sys.stdout.write('up\\n'); sys.stdout.flush()",
        "time.sleep(60)",
    ]
    with subprocess.Popen([*BARE[:-1], "; ".join(sleeper)], stdout=subprocess.PIPE) as bare:
        assert bare.stdout is not None
        bare.stdout.readline()  # it has started and sleeps
        bare_kb = _proc_kb(bare.pid, "status", "VmRSS")
        rows = [memory_row("python -I -S, sleeping (bare)", bare.pid, bare_kb),
                memory_row("one idle pooled isolate", attempt(_pooled_pid), bare_kb),
                memory_row("fork server", attempt(_fork_server_pid), bare_kb)]  # fmt: skip
        bare.kill()
    table("Memory (idle processes; Pss splits shared pages among their users)",
          ["process", "pid", "VmRSS", "Pss", "RSS vs bare"], rows)  # fmt: skip


def _stop_fork_server() -> None:
    from isolates.orchestrator import FORK_SERVER

    FORK_SERVER.stop()


# -- limits ----------------------------------------------------------------------------

FORKS = 200
LIMIT_ROUNDS = 100
LIMITED = "memory, cpu_time, processes, open_files, file_size"


def _limited_calls() -> dict[str, float | None]:
    from isolates.orchestrator import FORK_SERVER, Limits, isolate
    from isolates.sandbox import Policy, Processes

    FORK_SERVER.start()
    every = Limits(memory="1G", cpu_time=60, processes=64, open_files=256, file_size="1G")
    plain = isolate(start="fork-server")(trivial)
    limited = isolate(start="fork-server", limits=every)(trivial)
    forks = Policy(Processes.everything())
    forking = isolate(forks, start="exec")(fork_many)
    counted = isolate(forks, start="exec", limits=Limits(processes=8))(fork_many)
    for f in (plain, limited):
        f(1)
    for g in (forking, counted):
        g(1)
    return alternate({
        "plain": lambda: _timed(lambda: plain(1)),
        "limited": lambda: _timed(lambda: limited(1)),
        "forking": lambda: _timed(lambda: forking(FORKS)),
        "counted": lambda: _timed(lambda: counted(FORKS)),
    }, LIMIT_ROUNDS)  # fmt: skip


def limits_table() -> None:
    t = attempt(_limited_calls)
    if t is None:
        print(f"Limits: {NA}")
        return
    ratio = over(t["limited"], t["plain"])
    forking, counted = t["forking"], t["counted"]
    per_clone = None if forking is None or counted is None else (counted - forking) / FORKS
    table(f"Limits (median of {LIMIT_ROUNDS}, alternating)",
          ["call", "latency", "ratio", "target", ""], [
        ["warm call, fork server, no limits", ms(t["plain"], 2), "1.00x", "", ""],
        [f"the same with {LIMITED}", ms(t["limited"], 2), times(ratio), "<= 1.05x",
         check(ratio, 1.05)],
        [f"{FORKS} forks one by one, no limit (exec)", ms(forking), "1.00x", "", ""],
        ["the same under processes=8", ms(counted), times(over(counted, forking)), "", ""],
        ["a counted clone costs", ms(per_clone, 3), "", "documented", ""],
    ])  # fmt: skip


# -- denial reporting ------------------------------------------------------------------

CALLS_IN_LOOP = 200_000
DENIED_IN_LOOP = 2_000


def _denial_loops() -> dict[str, float | None]:
    from isolates.orchestrator import isolate
    from isolates.sandbox import Policy

    allowed = Policy("getppid")
    loops = {
        "allowed, reported": isolate(allowed, start="exec")(allowed_calls),
        "allowed, not reported": isolate(allowed, start="exec", report_denials=False)(
            allowed_calls
        ),
        "denied, reported": isolate(start="exec")(denied_calls),
        "denied, not reported": isolate(start="exec", report_denials=False)(denied_calls),
    }
    counts = {name: CALLS_IN_LOOP if name.startswith("allowed") else DENIED_IN_LOOP
              for name in loops}  # fmt: skip
    return alternate(
        {name: partial(f, counts[name]) for name, f in loops.items()}, LIMIT_ROUNDS // 5
    )


def denials_table() -> None:
    t = attempt(_denial_loops)
    if t is None:
        print(f"Denial reporting: {NA}")
        return
    ratio = over(t["allowed, reported"], t["allowed, not reported"])
    per = None
    if t["denied, reported"] is not None and t["denied, not reported"] is not None:
        per = (t["denied, reported"] - t["denied, not reported"]) / DENIED_IN_LOOP
    table(f"Denial reporting (inside the isolate, median of {LIMIT_ROUNDS // 5}, alternating)",
          ["loop", "time", "ratio", "target", ""], [
        [f"{CALLS_IN_LOOP:,} allowed calls, denials not reported",
         ms(t["allowed, not reported"]), "1.00x", "", ""],
        ["the same, denials reported", ms(t["allowed, reported"]), times(ratio), "<= 1.02x",
         check(ratio, 1.02)],
        [f"{DENIED_IN_LOOP:,} denied calls, not reported", ms(t["denied, not reported"]),
         "1.00x", "", ""],
        ["the same, reported", ms(t["denied, reported"]),
         times(over(t["denied, reported"], t["denied, not reported"])), "", ""],
        ["reporting costs a denied call", ms(per, 3), "", "documented", ""],
    ])  # fmt: skip


def main() -> None:
    cold_table()
    warm_table()
    executor_table(EXECUTOR_CALLS)
    ready_table()
    limits_table()
    denials_table()
    memory_table()
    attempt(_stop_fork_server)


if __name__ == "__main__":
    main()

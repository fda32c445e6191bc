"""Policy cost: compile (cold and cached), load, and the run-time cost of a filter.

    python benches/bench_policy.py

Every load happens in a forked child. Ratios compare against a baseline measured in the
same run: the same loop in a child with no filter.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from _util import in_fork, median_time, table, verdict

from isolates.sandbox import (
    Networking,
    Pipes,
    Policy,
    Processes,
    RuleSet,
    Signals,
    SystemIO,
    Threads,
    Time,
)

KINDS = (SystemIO, Networking, Threads, Time, Pipes, Processes, Signals)
LOOP = 200_000


def big_policy() -> Policy:
    """About 150 rules: every builtin's everything() plus a few conditional extras."""
    extra = RuleSet.nothing().allow("getppid", "uname", "sysinfo", "getuid", "getgid")
    return Policy(*(k.everything() for k in KINDS), extra)


def cold_compile() -> float:
    big_policy().compile()  # warm libseccomp and the syscall table once
    return median_time(lambda: big_policy().compile(), 30) - median_time(big_policy, 30)


def cached_compile(policy: Policy) -> float:
    policy.compile()
    return median_time(policy.compile, 1000)


def load_once() -> float:
    compiled = big_policy().compile()
    start = time.perf_counter()
    compiled.apply()
    return time.perf_counter() - start


def getppid_loop(policy: Policy | None) -> float:
    if policy is not None:
        policy.apply()
    getppid = os.getppid
    start = time.perf_counter()
    for _ in range(LOOP):
        getppid()
    return time.perf_counter() - start


def open_close_loop(policy: Policy | None) -> float:
    if policy is not None:
        policy.apply()
    start = time.perf_counter()
    for _ in range(LOOP // 4):
        os.close(os.open("/dev/null", os.O_RDONLY))
    return time.perf_counter() - start


def ratio(loop: object, policy: Policy, rounds: int = 5) -> tuple[float, float]:
    policy.compile()
    base = min(in_fork(lambda: loop(None)) for _ in range(rounds))  # type: ignore[operator]
    confined = min(in_fork(lambda: loop(policy)) for _ in range(rounds))  # type: ignore[operator]
    return base, confined


def main() -> None:
    policy = big_policy()
    rules = len(policy.entries())
    cold = cold_compile()
    cached = cached_compile(policy)
    load = sorted(in_fork(load_once) for _ in range(21))[10]
    rows = [
        [f"cold compile ({rules} rules)", f"{cold * 1e3:.3f} ms", "<= 3 ms",
         verdict(cold, 3e-3)],
        ["cached compile", f"{cached * 1e6:.2f} us", "", ""],
        ["load (apply) in a fresh child", f"{load * 1e3:.3f} ms", "", ""],
        ["cached compile + load", f"{(cached + load) * 1e3:.3f} ms", "<= 0.5 ms",
         verdict(cached + load, 0.5e-3)],
    ]  # fmt: skip
    table("Compile and load", ["what", "median", "target", ""], rows)

    loops = []
    for name, loop in (("getppid", getppid_loop), ("open+close /dev/null", open_close_loop)):
        base, confined = ratio(loop, policy)
        r = confined / base
        loops.append([name, f"{base * 1e3:.1f} ms", f"{confined * 1e3:.1f} ms", f"{r:.3f}x",
                      "<= 1.05x", verdict(r, 1.05)])  # fmt: skip
    table(
        f"Syscall loop, {LOOP} getppid / {LOOP // 4} open+close, best of 5, same run",
        ["loop", "no policy", f"{rules}-rule policy", "ratio", "target", ""],
        loops,
    )


if __name__ == "__main__":
    main()

"""Policy cost: our compiler against libseccomp (time, instructions run per call), compile
(cold and cached), load, and the run-time cost of a filter.

    python benches/bench_policy.py      (pip install '.[bench]': libseccomp is the peer)

Every load happens in a forked child. Ratios compare against a baseline measured in the
same run: libseccomp compiling the same rules; the same loop in a child with no filter.
"""

from __future__ import annotations

import os
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from _util import in_fork, median_time, table, verdict

from isolates.sandbox import (
    Arg,
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
from isolates.sandbox._bpf import steps
from isolates.sandbox._compiled import CompiledPolicy
from isolates.sandbox._compiler import compile_filter
from isolates.sandbox._libseccomp import to_bpf
from isolates.sandbox.lowlevel import preload_runtime, syscall_number

KINDS = (SystemIO, Networking, Threads, Time, Pipes, Processes, Signals)
LOOP = 1_000_000
ROUNDS = 15


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


def load_once(preloaded: bool) -> float:
    """One apply in a fresh child; with ``preloaded``, the one-time preload (libgcc_s,
    the idna codec: what confinement would otherwise break) is done beforehand."""
    compiled = big_policy().compile()
    if preloaded:
        preload_runtime(compiled.preload)
    start = time.perf_counter()
    compiled.apply()
    return time.perf_counter() - start


Filter = CompiledPolicy | Policy | None  # a Policy compiles in the child that applies it


def getppid_loop(policy: Filter) -> float:
    if policy is not None:
        policy.apply()
    getppid = os.getppid
    start = time.perf_counter()
    for _ in range(LOOP):
        getppid()
    return time.perf_counter() - start


def open_close_loop(policy: Filter) -> float:
    if policy is not None:
        policy.apply()
    start = time.perf_counter()
    for _ in range(LOOP // 4):
        os.close(os.open("/dev/null", os.O_RDONLY))
    return time.perf_counter() - start


#: The smallest filter there is, one instruction: "allow". What any seccomp filter costs a
#: syscall (the kernel's filtered entry path) shows against it; our policy's own cost does not.
RET_ALLOW = CompiledPolicy(bpf=struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000))


def ratio(loop: object, policy: Policy, rounds: int = ROUNDS) -> tuple[float, float, float]:
    """Medians of alternating rounds, pinned to one CPU (this VM's noise is +-10%): no
    filter, the one-instruction filter, the policy."""
    runs: list[list[float]] = [[], [], []]
    for _ in range(rounds):
        for i, filt in enumerate((None, RET_ALLOW, policy)):
            runs[i].append(in_fork(lambda filt=filt: _pinned(loop, filt)))  # type: ignore[misc]
    base, floor, confined = (statistics.median(r) for r in runs)
    return base, floor, confined


def _pinned(loop: object, compiled: Filter) -> float:
    os.sched_setaffinity(0, {0})
    return loop(compiled)  # type: ignore[operator, no-any-return]


def demo_policy() -> Policy:
    """The demo supervisor's policy: builtins with conditions, Landlock's implied rules."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from isolates.orchestrator.demo import supervisor_policy

    return supervisor_policy(8080, "/tmp")


def rules_300() -> Policy:
    """300 conditional rules (an ioctl command or a prctl option each) and the builtins."""
    rs = RuleSet.nothing()
    for i in range(150):
        rs = rs.allow_rule("ioctl", Arg(1) == 0x5400 + i).allow_rule("prctl", Arg(0) == 100 + i)
    return Policy(*(k.everything() for k in KINDS if k is not SystemIO), rs)


def compile_pair(policy: Policy, rounds: int = 31) -> tuple[float, float]:
    """Medians of alternating rounds: our compiler (guards included), libseccomp's."""
    entries, guards, default, pid = policy.entries(), policy.guards(), policy.default, 1
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(median_time(lambda: compile_filter(entries, guards, default, pid), 3))
        theirs.append(median_time(lambda: to_bpf(entries, default.seccomp_value, pid), 3))
    return statistics.median(ours), statistics.median(theirs)


HOT = (("read", (3, 0, 4096)), ("write", (1, 0, 10)), ("futex", (0, 0x80, 0)),
       ("epoll_wait", (3, 0, 8, -1)), ("openat", (-100, 0, 0x80000)))  # fmt: skip


def compiler_tables() -> None:
    rows = []
    for name, policy in (
        ("demo supervisor", demo_policy()),
        ("300 rules", rules_300()),
        (f"every builtin ({len(big_policy().entries())} rules)", big_policy()),
    ):
        ours, theirs = compile_pair(policy)
        rows.append(
            [
                name,
                f"{ours * 1e3:.2f} ms",
                f"{theirs * 1e3:.2f} ms",
                f"{ours / theirs:.2f}x",
                "<= 0.5x",
                verdict(ours / theirs, 0.5),
            ]
        )
    table(
        "Compile time: our compiler vs libseccomp (median of 31 alternating rounds)",
        ["policy", "ours", "libseccomp", "ratio", "target", ""],
        rows,
    )
    rows = []
    for name, policy in (("demo supervisor", demo_policy()), ("every builtin", big_policy())):
        ours = compile_filter(policy.entries(), policy.guards(), policy.default, 1)
        theirs = to_bpf(policy.entries(), policy.default.seccomp_value, 1)
        for call, args in HOT:
            a, b = (
                steps(ours, syscall_number(call), args),
                steps(theirs, syscall_number(call), args),
            )
            rows.append([name, call, str(a), str(b), "<= libseccomp", verdict(a, b)])
    table(
        "BPF instructions run per call (ours include the guards; libseccomp's do not)",
        ["policy", "syscall", "ours", "libseccomp", "target", ""],
        rows,
    )


def main() -> None:
    compiler_tables()
    policy = big_policy()
    rules = len(policy.entries())
    cold = cold_compile()
    cached = cached_compile(policy)
    load = statistics.median(in_fork(lambda: load_once(True)) for _ in range(21))
    first = statistics.median(in_fork(lambda: load_once(False)) for _ in range(21))
    rows = [
        [f"cold compile ({rules} rules)", f"{cold * 1e3:.3f} ms", "<= 3 ms",
         verdict(cold, 3e-3)],
        ["cached compile", f"{cached * 1e6:.2f} us", "", ""],
        ["load (apply) in a fresh child", f"{load * 1e3:.3f} ms", "", ""],
        ["  first load in a process, with its one-time preload", f"{first * 1e3:.3f} ms", "",
         ""],
        ["cached compile + load", f"{(cached + load) * 1e3:.3f} ms", "<= 0.5 ms",
         verdict(cached + load, 0.5e-3)],
    ]  # fmt: skip
    table("Compile and load", ["what", "median", "target", ""], rows)

    loops = []
    for name, loop in (("getppid", getppid_loop), ("open+close /dev/null", open_close_loop)):
        base, floor, confined = ratio(loop, policy)
        r = confined / base
        loops.append([name, f"{base * 1e3:.1f} ms", f"{floor * 1e3:.1f} ms",
                      f"{confined * 1e3:.1f} ms", f"{r:.3f}x", f"{confined / floor:.3f}x",
                      "<= 1.05x", verdict(r, 1.05)])  # fmt: skip
    table(
        f"Syscall loop, {LOOP} getppid / {LOOP // 4} open+close, one CPU, median of {ROUNDS}",
        ["loop", "no filter", "1-insn filter", f"{rules}-rule policy", "vs none",
         "vs 1-insn", "target", ""],
        loops,
    )  # fmt: skip


if __name__ == "__main__":
    main()

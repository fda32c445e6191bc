"""Our BPF compiler against the rules' own meaning (the reference decider), with libseccomp
as a second opinion: generated policies, boundary arguments, both 32-bit halves."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isolates.sandbox import Action, Arg, Policy, PolicyError, Rule, RuleSet, Signals, profiles
from isolates.sandbox._compiler import MAX_INSNS, compile_filter
from isolates.sandbox._libseccomp import to_bpf
from isolates.sandbox._merge import Entry
from isolates.sandbox._rules import OPS, Cmp
from isolates.sandbox._syscall_table import TABLES
from isolates.sandbox.lowlevel import action_of, decide_rules, evaluate, syscall_number, uapi
from tests.forked import in_child
from tests.sandbox.test_decide import POLICIES

U64 = (1 << 64) - 1
SYSCALLS = ("read", "write", "ioctl", "fcntl", "clone", "socket", "mmap", "getpriority",
            "kill", "openat", "futex", "ptrace")  # fmt: skip
EDGES = (0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 32) + 1, 1 << 63,
         U64 - 1, U64)  # fmt: skip
ACTIONS = (Action.ALLOW, Action.ERRNO(1), Action.ERRNO(13), Action.KILL_PROCESS,
           Action.KILL_THREAD, Action.TRAP, Action.LOG)  # fmt: skip

values = st.one_of(st.sampled_from(EDGES), st.integers(0, U64), st.integers(0, 300))


@st.composite
def comparisons(draw: st.DrawFn) -> Cmp:
    op = draw(st.sampled_from(sorted(OPS)))
    arg = draw(st.integers(0, 5))
    if op == "&==":
        mask = draw(st.one_of(st.sampled_from((0xFF, 0xFFFFFFFF, U64, 0xFFFF0000FFFF)),
                              st.integers(1, U64)))  # fmt: skip
        return Cmp(arg, op, draw(values) & mask, mask)
    return Cmp(arg, op, draw(values))


@st.composite
def entry_lists(draw: st.DrawFn) -> list[Entry]:
    entries = []
    for _ in range(draw(st.integers(1, 10))):
        name = draw(st.sampled_from(SYSCALLS))
        conds = tuple(draw(st.lists(comparisons(), max_size=3)))
        entries.append(Entry(name, syscall_number(name), draw(st.sampled_from(ACTIONS)), conds))
    return entries


def _inputs(entries: list[Entry]) -> Iterator[tuple[int, tuple[int, ...]]]:
    """Each named syscall (and a neighbour), with every argument at each compared value,
    beside it, and with either 32-bit half changed."""
    seen: set[int] = set()
    for e in entries:
        probes = {0, U64}
        for c in e.conditions:
            v = c.value if isinstance(c.value, int) else 0
            probes |= {v, (v + 1) & U64, (v - 1) & U64, v ^ (1 << 32), v ^ 1, v & c.mask,
                       v | ~c.mask & U64}  # fmt: skip
        for p in sorted(probes):
            for arg in {c.arg for c in e.conditions} | {0}:
                args = [0x55] * 6
                args[arg] = p
                yield e.nr, tuple(args)
        seen.add(e.nr)
    for nr in seen:
        yield nr + 1, (0,) * 6


def _agree(bpf: bytes, entries: list[Entry], guards: tuple, default: Action) -> None:  # type: ignore[type-arg]
    for nr, args in _inputs(entries):
        expected = decide_rules(entries, guards, default, nr, args)
        assert action_of(evaluate(bpf, nr, args)) == expected, (nr, args, entries)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entry_lists(), st.sampled_from(ACTIONS), st.booleans())
def test_generated_policies_decide_as_their_rules(
    entries: list[Entry], default: Action, with_guards: bool
) -> None:
    guards = Policy(default=default).guards() if with_guards else ()
    bpf = compile_filter(entries, guards, default, pid=os.getpid())
    _agree(bpf, entries, guards, default)


def _libseccomp(entries: list[Entry], default: Action) -> bytes | None:
    """libseccomp's program, compiled in a child: for some shapes it never returns
    (None then), and a hang must not take the test run with it."""
    try:
        out = in_child(to_bpf, entries, default.seccomp_value, 1, timeout=5)
    except AssertionError:  # did not finish
        return None
    if isinstance(out.error, PolicyError):
        return b""  # libseccomp refuses some shapes (two conditions on one argument...)
    return bytes(out.unwrap())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entry_lists(), st.sampled_from(ACTIONS))
def test_we_agree_with_the_rules_wherever_libseccomp_does(
    entries: list[Entry], default: Action
) -> None:
    ours = compile_filter(entries, (), default, pid=1)
    theirs = _libseccomp(entries, default)
    for nr, args in _inputs(entries):
        expected = decide_rules(entries, (), default, nr, args)
        if theirs and action_of(evaluate(theirs, nr, args)) == expected:
            assert action_of(evaluate(ours, nr, args)) == expected
        assert action_of(evaluate(ours, nr, args)) == expected  # and everywhere else


GETPRIORITY = syscall_number("getpriority")


def _rule(*conditions: Cmp) -> Entry:
    return Entry("getpriority", GETPRIORITY, Action.ALLOW, conditions)


#: Shapes libseccomp 2.5.4 gets wrong (docs/sandbox.md): rules on one syscall compare
#: the same argument with ranges, then test other arguments.
WRONG_IN_LIBSECCOMP = [_rule(Cmp(0, ">", 10), Cmp(3, "==", 7)),
                       _rule(Cmp(0, ">=", 2), Cmp(1, ">=", 7)),
                       _rule(Cmp(0, "<=", 8), Cmp(1, "==", 0))]  # fmt: skip
#: ... and one whose compile never returns: the same range shared, then other arguments.
HANGS_LIBSECCOMP = [_rule(Cmp(0, "<=", 6), Cmp(1, "==", 4)),
                    _rule(Cmp(0, "<=", 6), Cmp(2, "==", 7))]  # fmt: skip


def test_the_shapes_libseccomp_gets_wrong_are_right_here() -> None:
    default = Action.ERRNO(999)
    theirs = _libseccomp(WRONG_IN_LIBSECCOMP, default)
    assert theirs  # it compiles, but answers ALLOW for (0, 85, ...), which no rule allows
    probe = (0, 85, 85, 85, 85, 85)
    assert decide_rules(WRONG_IN_LIBSECCOMP, (), default, GETPRIORITY, probe) == default
    assert action_of(evaluate(theirs, GETPRIORITY, probe)) != default
    ours = compile_filter(WRONG_IN_LIBSECCOMP, (), default, pid=1)
    _agree(ours, WRONG_IN_LIBSECCOMP, (), default)
    assert _libseccomp(HANGS_LIBSECCOMP, default) is None  # never finished
    _agree(compile_filter(HANGS_LIBSECCOMP, (), default, pid=1), HANGS_LIBSECCOMP, (), default)


@pytest.mark.parametrize("name", POLICIES)
def test_shipped_policies_compile_to_the_same_bytes_every_time(name: str) -> None:
    first, second = POLICIES[name](), POLICIES[name]()
    assert first.compile(pid=1).bpf == second.compile(pid=1).bpf


def test_long_jumps_go_through_trampolines_and_still_decide_right() -> None:
    # 300 syscalls with a condition each: the search and the blocks span far more than
    # a conditional jump's 255 instructions.
    table = TABLES[uapi.MACHINE]
    names = sorted(table, key=table.__getitem__)[:300]
    entries = [Entry(n, table[n], Action.ALLOW, (Cmp(0, "==", i),)) for i, n in enumerate(names)]
    bpf = compile_filter(entries, (), Action.ERRNO(1), pid=1)
    assert len(bpf) // 8 > 1000
    for i, e in enumerate(entries[::17]):
        idx = names.index(e.syscall)
        assert action_of(evaluate(bpf, e.nr, (idx,))) == Action.ALLOW, e.syscall
        assert action_of(evaluate(bpf, e.nr, (idx + 1,))) == Action.ERRNO(1), (e.syscall, i)


def test_a_policy_too_large_for_the_kernel_is_a_policy_error() -> None:
    rules = [Rule("ioctl", Arg(1) & 0xFFFF == i) for i in range(5000)]
    with pytest.raises(PolicyError, match="limit of 4096"):
        Policy(RuleSet(*rules)).compile()
    assert MAX_INSNS == 4096


def test_aarch64_programs_decide_by_name_as_the_native_ones() -> None:
    policy = profiles.pledge("stdio rpath inet")
    entries, guards, default = policy.entries(), policy.guards(), policy.default
    native = compile_filter(entries, guards, default, pid=1)
    arm = compile_filter(entries, guards, default, pid=1, arch="aarch64")
    arm_arch, arm_table = uapi.AUDIT_ARCH["aarch64"], TABLES["aarch64"]
    compared = 0
    for e in entries:
        if e.syscall not in arm_table:
            continue  # x86_64 only (open, stat...): not on aarch64
        args = [0] * 6
        for c in e.conditions:
            args[c.arg] = c.value if isinstance(c.value, int) else 0
        want = action_of(evaluate(native, e.nr, args))
        got = action_of(evaluate(arm, arm_table[e.syscall], args, arch=arm_arch))
        assert got == want, e.syscall
        compared += 1
    assert compared > 50
    x86 = uapi.AUDIT_ARCH["x86_64"]
    assert action_of(evaluate(arm, 63, (), arch=x86)) == Action.KILL_PROCESS  # wrong ABI


@pytest.mark.parametrize(
    ("compiled_for", "given_to"),
    [(1000, 62), (62, 4_194_303), (2, 0x5A5A5 ^ 2), (4_194_303, 1), (59, 231)],
)
def test_a_program_patched_for_another_pid_is_the_program_compiled_for_it(
    compiled_for: int, given_to: int
) -> None:
    """``CompiledPolicy.for_pid`` (what a cached ``isolates run`` policy is loaded with)
    equals compiling for that pid, even where the pids equal a syscall number or another
    constant of the program (62 is kill, 231 exit_group, 59 execve)."""
    policies = [
        profiles.pledge("stdio rpath", None),
        Policy(Signals.nothing().allow_kill_self(), default=Action.ERRNO(1)),
    ]
    for policy in policies:
        first = policy.compile(compiled_for, all_threads=True)
        second = policy.compile(given_to, all_threads=True)
        assert first.pid_slots and first.pid_slots == second.pid_slots
        assert first.for_pid(given_to) == second.bpf
        assert first.for_pid(compiled_for) == first.bpf

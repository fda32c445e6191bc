"""The seccomp BPF evaluator: hand-assembled programs, and agreement with the kernel on
programs libseccomp compiled and on programs using every instruction class."""

from __future__ import annotations

import errno
import random
import signal
import struct

import pytest

from isolates.sandbox import Action, Arg, Policy, Rule, RuleSet
from isolates.sandbox._bpf import BPFError, action_of, decide, evaluate, evaluate_stack
from isolates.sandbox._kernel import load_seccomp
from isolates.sandbox._syscalls import number
from isolates.sandbox.lowlevel import decide_policy
from tests.forked import in_child
from tests.sandbox.syscall import raw

ALLOW, KILL, ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
NR, ARCH, IP, ARG0, ARG1 = 0, 4, 8, 16, 24  # offsets in struct seccomp_data (little endian)


def asm(*insns: tuple[int, int, int, int]) -> bytes:
    return b"".join(struct.pack("=HBBI", *i) for i in insns)


def ld(off: int) -> tuple[int, int, int, int]:
    return (0x20, 0, 0, off)


def ret(k: int) -> tuple[int, int, int, int]:
    return (0x06, 0, 0, k)


def jeq(k: int, jt: int, jf: int) -> tuple[int, int, int, int]:
    return (0x15, jt, jf, k)


# --- the instruction set, on hand-written programs ---------------------------------------


def test_ret_k_and_loads_of_nr_arch_and_ip() -> None:
    prog = asm(ld(NR), jeq(39, 0, 1), ret(ALLOW), ld(ARCH), jeq(7, 0, 1), ret(ERRNO | 1),
               ld(IP + 4), jeq(0xAB, 0, 1), ret(ERRNO | 2), ret(KILL))  # fmt: skip
    assert evaluate(prog, 39) == ALLOW
    assert evaluate(prog, 40, arch=7) == ERRNO | 1
    assert evaluate(prog, 40, arch=8, ip=0xAB << 32) == ERRNO | 2
    assert evaluate(prog, 40, arch=8, ip=0xAB) == KILL


def test_arguments_are_64_bit_split_into_host_order_words() -> None:
    low, high = ld(ARG1), ld(ARG1 + 4)
    prog = asm(low, jeq(0x9ABCDEF0, 0, 3), high, jeq(0x12345678, 0, 1), ret(ALLOW), ret(KILL))
    assert evaluate(prog, 0, (0, 0x123456789ABCDEF0)) == ALLOW
    assert evaluate(prog, 0, (0, 0x9ABCDEF0)) == KILL
    negative = asm(ld(ARG0 + 4), jeq(0xFFFFFFFF, 0, 1), ret(ALLOW), ret(KILL))
    assert evaluate(negative, 0, (-1,)) == ALLOW  # negative ints: two's complement


@pytest.mark.parametrize(
    ("code", "k", "a", "x", "expected"),
    [
        (0x04, 5, 7, 0, 12), (0x0C, 0, 7, 5, 12),  # add k, add x
        (0x14, 8, 7, 0, 0xFFFFFFFF), (0x1C, 0, 7, 8, 0xFFFFFFFF),  # sub wraps at 32 bits
        (0x24, 3, 7, 0, 21), (0x2C, 0, 0x80000000, 2, 0),  # mul wraps
        (0x34, 2, 7, 0, 3), (0x3C, 0, 7, 2, 3),  # div
        (0x44, 8, 7, 0, 15), (0x54, 6, 7, 0, 6), (0xA4, 5, 7, 0, 2),  # or, and, xor
        (0x64, 4, 1, 0, 16), (0x6C, 0, 1, 36, 16),  # lsh k, lsh x (count mod 32)
        (0x74, 1, 7, 0, 3), (0x84, 0, 1, 0, 0xFFFFFFFF),  # rsh, neg
    ],
)  # fmt: skip
def test_alu(code: int, k: int, a: int, x: int, expected: int) -> None:
    prog = asm((0x01, 0, 0, x), (0x00, 0, 0, a), (code, 0, 0, k), (0x16, 0, 0, 0))  # ret A
    assert evaluate(prog, 0) == expected


def test_division_by_x_zero_returns_zero_like_the_kernel() -> None:
    prog = asm((0x01, 0, 0, 0), (0x00, 0, 0, 9), (0x3C, 0, 0, 0), ret(ALLOW))
    assert evaluate(prog, 0) == 0  # SECCOMP_RET_KILL_THREAD


@pytest.mark.parametrize(
    ("code", "k", "x", "taken"),
    [(0x25, 5, 0, True), (0x25, 6, 0, False), (0x2D, 0, 5, True),  # jgt
     (0x35, 6, 0, True), (0x3D, 0, 7, False),  # jge
     (0x45, 2, 0, True), (0x45, 8, 0, False), (0x4D, 0, 4, True),  # jset
     (0x1D, 0, 6, True), (0x1D, 0, 5, False)],  # jeq x
)  # fmt: skip
def test_conditional_jumps(code: int, k: int, x: int, taken: bool) -> None:
    prog = asm((0x01, 0, 0, x), (0x00, 0, 0, 6), (code, 0, 1, k), ret(ALLOW), ret(KILL))
    assert evaluate(prog, 0) == (ALLOW if taken else KILL)


def test_ja_scratch_memory_tax_txa_and_len() -> None:
    prog = asm(
        (0x80, 0, 0, 0),  # A = len = 64
        (0x02, 0, 0, 3),  # M[3] = A
        (0x00, 0, 0, 1), (0x07, 0, 0, 0),  # A = 1; X = A
        (0x05, 0, 0, 1), ret(KILL),  # ja over the kill
        (0x60, 0, 0, 3), (0x0C, 0, 0, 0),  # A = M[3]; A += X
        (0x03, 0, 0, 4), (0x61, 0, 0, 4),  # M[4] = X; X = M[4]
        (0x0C, 0, 0, 0), (0x87, 0, 0, 0), (0x87, 0, 0, 0),  # A += X; A = X (txa twice)
        (0x81, 0, 0, 0),  # X = len
        (0x0C, 0, 0, 0), (0x16, 0, 0, 0),  # A += X; ret A
    )  # fmt: skip
    assert evaluate(prog, 0) == 65


@pytest.mark.parametrize(
    ("prog", "message"),
    [
        (b"", "not a BPF program"),
        (b"\x06\x00" * 3, "not a BPF program"),
        (asm((0x28, 0, 0, 0), ret(ALLOW)), "opcode 0x0028"),  # ld half-word: not for seccomp
        (asm((0x30, 0, 0, 0), ret(ALLOW)), "opcode 0x0030"),  # ld byte
        (asm((0x40, 0, 0, 0), ret(ALLOW)), "opcode 0x0040"),  # ld indirect
        (asm(ld(2), ret(ALLOW)), "offset 2"),
        (asm(ld(64), ret(ALLOW)), "offset 64"),
        (asm(jeq(0, 5, 0), ret(ALLOW)), "past the end"),
        (asm((0x05, 0, 0, 1), ret(ALLOW)), "past the end"),
        (asm(ld(0)), "does not end with a return"),
        (asm((0x02, 0, 0, 16), ret(ALLOW)), "scratch word 16"),
        (asm((0x34, 0, 0, 0), ret(ALLOW)), "divides by the constant 0"),
        (asm((0x94, 0, 0, 3), ret(ALLOW)), "opcode 0x0094"),  # mod: seccomp refuses it
        (asm((0x64, 0, 0, 32), ret(ALLOW)), "shifts"),
        (asm((0x60, 0, 0, 2), (0x16, 0, 0, 0)), "read before"),
    ],
)
def test_programs_the_kernel_refuses_raise(prog: bytes, message: str) -> None:
    with pytest.raises(BPFError, match=message):
        evaluate(prog, 0)


def test_action_of_maps_every_return_value() -> None:
    assert action_of(ALLOW) == Action.ALLOW
    assert action_of(KILL) == Action.KILL_PROCESS
    assert action_of(0) == Action.KILL_THREAD
    assert action_of(0x00030000) == Action.TRAP
    assert action_of(0x7FC00000) == Action.NOTIFY
    assert action_of(0x7FFC0000) == Action.LOG
    assert action_of(ERRNO | errno.EACCES) == Action.ERRNO(errno.EACCES)
    assert action_of(ERRNO | 0xFFFF).errno == 4095  # the kernel caps errno at MAX_ERRNO
    assert action_of(0x12340000) == Action.KILL_PROCESS  # unknown actions kill
    with pytest.raises(BPFError, match="TRACE"):
        action_of(0x7FF00000)
    for action in (Action.ALLOW, Action.LOG, Action.KILL_THREAD, Action.ERRNO(7)):
        assert action_of(action.seccomp_value) == action


def test_a_stack_of_filters_takes_the_most_restrictive_answer() -> None:
    allow, eperm, eacces, kill = (asm(ret(v)) for v in (ALLOW, ERRNO | 1, ERRNO | 13, KILL))
    assert evaluate_stack([allow, eperm], 0) == ERRNO | 1
    assert evaluate_stack([eperm, eacces], 0) == ERRNO | 13  # equals: the newest wins
    assert evaluate_stack([kill, eperm, allow], 0) == KILL
    with pytest.raises(BPFError):
        evaluate_stack([], 0)


# --- agreement with the kernel ------------------------------------------------------------

DEFAULT, DENY = errno.EL3HLT, errno.EL2HLT  # errnos none of these calls returns by itself
BIG = 1 << 33
# Syscalls whose descriptor argument is never valid here (4000+: EBADF once allowed), so
# any argument is harmless; the rules compare all six argument registers, 64 bits wide.
RULES = RuleSet(
    "getppid",
    Rule("uname", action=Action.ERRNO(DENY)),
    Rule("lseek", Arg(1) > 100),
    Rule("lseek", Arg(2) == 1, Arg(0) != 4001),
    Rule("fcntl", Arg(1) & 0xF0 == 0x10),
    Rule("fcntl", Arg(1) < 3, Arg(2) >= BIG),
    Rule("fcntl", Arg(2) <= 5, action=Action.ERRNO(DENY)),
    Rule("preadv2", Arg(0) == 4001, Arg(3) > BIG),
    Rule("preadv2", Arg(5) & 0xFF00 == 0x0100, Arg(4) <= 7),
    Rule("preadv2", Arg(1) != 0, Arg(2) >= 3, Arg(0) < 4003),
)
VALUES = (0, 1, 2, 3, 5, 6, 7, 8, 0x10, 0x1F, 0x100, 0x1FF, 100, 101, 4000, 4001, 4002,
          4003, BIG - 1, BIG, BIG + 1, (1 << 64) - 1, (1 << 32) + 4001)  # fmt: skip


def _samples(count: int) -> list[tuple[str, tuple[int, ...]]]:
    rng = random.Random(7)
    out: list[tuple[str, tuple[int, ...]]] = [("getppid", ()), ("uname", (0,))]
    for _ in range(count):
        name = rng.choice(("lseek", "fcntl", "preadv2"))
        fd = rng.choice((4000, 4001, 4002, 4003, (1 << 32) + 4001))
        out.append((name, (fd, *(rng.choice(VALUES) for _ in range(5)))))
    return out


def _verdicts(policy: Policy, samples: list[tuple[str, tuple[int, ...]]]) -> list[str]:
    policy.apply()
    seen = []
    for name, args in samples:
        try:
            raw(name, *args)
            seen.append("allow")
        except OSError as exc:
            seen.append({DEFAULT: "default", DENY: "deny"}.get(exc.errno or 0, "allow"))
    return seen


def _predicted(bpf: bytes, samples: list[tuple[str, tuple[int, ...]]]) -> list[str]:
    names = {Action.ALLOW: "allow", Action.ERRNO(DEFAULT): "default", Action.ERRNO(DENY): "deny"}
    return [names[decide(bpf, number(name), args)] for name, args in samples]


def test_the_kernel_the_evaluator_and_the_rules_agree_on_a_compiled_program() -> None:
    policy = Policy(RULES, default=Action.ERRNO(DEFAULT))
    samples = _samples(400)
    predicted = _predicted(policy.compile().bpf, samples)
    assert {"allow", "default", "deny"} <= set(predicted)  # the sample reaches every branch
    names = {Action.ALLOW: "allow", Action.ERRNO(DEFAULT): "default", Action.ERRNO(DENY): "deny"}
    by_rules = [names[decide_policy(policy, number(n), args)] for n, args in samples]
    assert by_rules == predicted  # ranges on several arguments: what libseccomp got wrong
    assert in_child(_verdicts, policy, samples).unwrap() == predicted


def test_the_evaluator_agrees_with_the_kernel_on_a_kill() -> None:
    policy = Policy(RULES, default=Action.KILL_PROCESS)
    bpf = policy.compile().bpf
    killed, allowed = ("lseek", (4000, 5, 0)), ("lseek", (4000, 500, 0))
    assert decide(bpf, number(killed[0]), killed[1]) == Action.KILL_PROCESS
    assert decide(bpf, number(allowed[0]), allowed[1]) == Action.ALLOW
    assert in_child(_verdicts, policy, [allowed]).unwrap() == ["allow"]
    assert in_child(_verdicts, policy, [allowed, killed]).signal == signal.SIGSYS


# A hand-made filter using every instruction class: for lseek it returns ERRNO with an
# errno computed from the arguments (2048 to 4095, so never 0: the call never runs);
# everything else is allowed. What errno the child sees is what the kernel computed.
_LSEEK = number("lseek")
_ARITHMETIC = asm(
    ld(NR), jeq(_LSEEK, 1, 0), ret(ALLOW),
    ld(ARG1), (0x02, 0, 0, 1),  # M[1] = low word of arg 1
    ld(ARG1 + 4), (0x07, 0, 0, 0),  # X = high word of arg 1
    (0x60, 0, 0, 1), (0x0C, 0, 0, 0),  # A = M[1] + X
    (0x24, 0, 0, 3), (0xA4, 0, 0, 0x5A5), (0x1C, 0, 0, 0),  # A = A * 3 ^ 0x5a5 - X
    (0x45, 0, 2, 1), (0x64, 0, 0, 1), (0x05, 0, 0, 1),  # odd: A <<= 1
    (0x74, 0, 0, 1),  # even: A >>= 1
    (0x2D, 0, 1, 0), (0x84, 0, 0, 0),  # if A > X: A = -A
    (0x03, 0, 0, 2), (0x61, 0, 0, 2), (0x87, 0, 0, 0),  # via M[2], X, back to A
    (0x04, 0, 0, 17), (0x34, 0, 0, 3), (0x4C, 0, 0, 0),  # (A + 17) / 3 | X
    (0x54, 0, 0, 0x7FF), (0x44, 0, 0, ERRNO | 0x800), (0x16, 0, 0, 0),  # ret ERRNO | A
)  # fmt: skip


def _errnos_under_raw_filter(bpf: bytes, values: list[int]) -> list[int]:
    load_seccomp(bpf)
    out = []
    for value in values:
        try:
            raw("lseek", 4000, value, 0)
            out.append(0)
        except OSError as exc:
            out.append(exc.errno or 0)
    return out


def test_the_evaluator_agrees_with_the_kernel_on_every_instruction_class() -> None:
    rng = random.Random(11)
    values = [rng.randrange(1 << 64) for _ in range(200)] + [0, 1, 2, (1 << 64) - 1]
    predicted = [evaluate(_ARITHMETIC, _LSEEK, (4000, v, 0)) & 0xFFFF for v in values]
    assert len(set(predicted)) > 100  # the arithmetic really depends on the argument
    assert in_child(_errnos_under_raw_filter, _ARITHMETIC, values).unwrap() == predicted

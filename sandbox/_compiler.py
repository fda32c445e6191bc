"""Our seccomp BPF compiler: a policy's guards and merged entries to a sock_filter program.

Pure Python and the standard library, no syscall: a confined thread can compile a
narrower policy for a child. The program, in order:

1. the architecture check: any other ABI of this CPU (i386 ``int 0x80`` on x86_64) is
   killed, and so is x32 (syscall numbers with bit 30 set) on x86_64;
2. a binary search on the syscall number, so a call costs about log2(syscalls named)
   comparisons, whatever the number of rules;
3. for the syscall found: its guards, first match wins (they compare the low 32 bits
   of an argument, as the kernel reads a 32-bit command); then its entries from the
   strictest action to the loosest, each a conjunction of conditions, so the first
   entry whose conditions all hold is the strictest that matches; then the default.

This is exactly the precedence of the reference decider (_decide.py); tests check the
two agree on generated policies and arguments, and check libseccomp against both.

Arguments are 64-bit and compared unsigned, as libseccomp defines its operators:
``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` on the two 32-bit halves (high half first),
and masked equality ``(arg & mask) == value`` on each half. Jumps farther than a
conditional jump's 8-bit offset go through ``ja`` trampolines (32-bit offsets); a
program over the kernel's 4096 instructions is a PolicyError. The same policy always
compiles to the same bytes.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from ._errors import PolicyError
from ._guard import Guard
from ._merge import Entry
from ._rules import SELF_PID, Action, Cmp
from ._syscall_table import TABLES
from ._uapi import AUDIT_ARCH, MACHINE, SECCOMP_RET_KILL_PROCESS, X32_SYSCALL_BIT

#: BPF_MAXINSNS: the most instructions the kernel accepts in one filter.
MAX_INSNS: Final = 4096
_U32: Final = 0xFFFFFFFF
_U64: Final = (1 << 64) - 1
# Opcodes (include/uapi/linux/bpf_common.h): loads of seccomp_data words, ALU and, jumps.
_LD_ABS: Final = 0x20
_AND_K: Final = 0x54
_JA: Final = 0x05
_JEQ: Final = 0x15
_JGT: Final = 0x25
_JGE: Final = 0x35
_JSET: Final = 0x45
_RET: Final = 0x06
_NR, _ARCH = 0, 4


def _low(arg: int) -> int:
    return 16 + 8 * arg + (0 if sys.byteorder == "little" else 4)


def _high(arg: int) -> int:
    return 16 + 8 * arg + (4 if sys.byteorder == "little" else 0)


# -- the assembler -------------------------------------------------------------------------

#: A label in the instruction list (anything hashable names it).
_LABEL: Final = -1


class _Assembler:
    """Instructions with symbolic targets; ``assemble`` lays them out, adding a ``ja``
    trampoline wherever a conditional jump would reach farther than 255.

    An instruction is a list ``[code, k, jt, jf]`` (a target is a label, or None: the
    next instruction); a label is ``[_LABEL, name]``. Lists, not objects: compiling a
    policy makes a few thousand of them.
    """

    def __init__(self) -> None:
        self.items: list[list[object]] = []
        self.pid_slots: tuple[int, ...] = ()  # set by assemble: where each PidHalf is

    def op(self, code: int, k: int = 0) -> None:
        self.items.append([code, k, None, None])

    def jump(self, code: int, k: int, jt: object, jf: object) -> None:
        self.items.append([code, k, jt, jf])

    def ja(self, target: object) -> None:
        self.items.append([_JA, 0, target, None])

    def ret(self, value: int) -> None:
        self.items.append([_RET, value, None, None])

    def place(self, label: object) -> None:
        self.items.append([_LABEL, label])

    def assemble(self) -> bytes:
        where = self._layout()
        while self._add_trampolines(where):
            where = self._layout()
        code = [item for item in self.items if item[0] != _LABEL]
        if len(code) > MAX_INSNS:
            raise PolicyError(
                f"the policy compiles to {len(code)} BPF instructions, over the kernel's "
                f"limit of {MAX_INSNS}: split it, or use fewer argument conditions"
            )
        flat: list[object] = []
        self.pid_slots = tuple(pc for pc, item in enumerate(code) if isinstance(item[1], PidHalf))
        for pc, (op, k, jt, jf) in enumerate(code):
            if op == _JA:
                flat += (op, 0, 0, where[jt] - pc - 1)
            else:
                flat += (
                    op,
                    0 if jt is None else where[jt] - pc - 1,
                    0 if jf is None else where[jf] - pc - 1,
                    k,
                )
        return struct.pack("=" + "HBBI" * len(code), *flat)

    def _layout(self) -> dict[object, int]:
        where: dict[object, int] = {}
        pc = 0
        for item in self.items:
            if item[0] == _LABEL:
                where[item[1]] = pc
            else:
                pc += 1
        return where

    def _too_far(self, where: dict[object, int]) -> bool:
        code = (i for i in self.items if i[0] != _LABEL)
        for pc, (op, _, jt, jf) in enumerate(code):
            if op != _JA and op != _RET:
                if jt is not None and where[jt] - pc > 256:
                    return True
                if jf is not None and where[jf] - pc > 256:
                    return True
        return False

    def _add_trampolines(self, where: dict[object, int]) -> bool:
        """A ``ja`` right after each conditional jump that reaches too far, aimed at its
        target (a side that fell through then names the instruction after it)."""
        if not self._too_far(where):
            return False
        out: list[list[object]] = []
        pc, added = 0, False
        for item in self.items:
            out.append(item)
            if item[0] == _LABEL:
                continue
            if item[0] not in (_JA, _RET):
                hopped = False
                for side in (2, 3):
                    target = item[side]
                    if target is not None and where[target] - pc - 1 > 255:
                        hop = ("hop", id(item), side)
                        item[side] = hop
                        out += [[_LABEL, hop], [_JA, 0, target, None]]
                        hopped = added = True
                if hopped and (item[2] is None or item[3] is None):
                    fall = ("fall", id(item))
                    item[2 if item[2] is None else 3] = fall
                    out.append([_LABEL, fall])
            pc += 1
        self.items = out
        return added


# -- conditions ----------------------------------------------------------------------------


class PidHalf(int):
    """The low half of the pid a SELF_PID condition compares with, as an instruction's
    ``k``: ``assemble`` notes where each one lands, so that a compiled program can be
    given to another process by patching those words (``CompiledPolicy.pid_slots``).
    The high half of a pid is 0 whatever the pid (pid_max is at most 2**22)."""


def _resolve(cmp: Cmp, pid: int) -> tuple[int, str, int, int]:
    if cmp.value is SELF_PID:
        return cmp.arg, cmp.op, PidHalf(pid & _U32), cmp.mask & _U64
    assert isinstance(cmp.value, int)
    return cmp.arg, cmp.op, cmp.value & _U64, cmp.mask & _U64


def _emit_cmp(a: _Assembler, cmp: tuple[int, str, int, int], ok: object, no: object) -> None:
    """Go to ``ok`` when the comparison holds, else to ``no`` (64-bit, unsigned)."""
    arg, op, value, mask = cmp
    hi, lo = value >> 32, value & _U32
    if isinstance(value, PidHalf):
        lo = PidHalf(lo)
    if op == "&==":  # a half whose mask is 0 always matches (the value fits the mask)
        halves = [
            (off, m, v)
            for off, m, v in ((_high(arg), mask >> 32, hi), (_low(arg), mask & _U32, lo))
            if m
        ]
        for index, (offset, half_mask, half) in enumerate(halves):
            a.op(_LD_ABS, offset)
            if half_mask != _U32:
                a.op(_AND_K, half_mask)
            a.jump(_JEQ, half, ok if index == len(halves) - 1 else None, no)
        if not halves:
            a.ja(ok)
    elif op in ("==", "!="):
        yes, nay = (ok, no) if op == "==" else (no, ok)
        a.op(_LD_ABS, _high(arg))
        a.jump(_JEQ, hi, None, nay)
        a.op(_LD_ABS, _low(arg))
        a.jump(_JEQ, lo, yes, nay)
    else:  # >, >=, <, <=: the high halves decide unless equal, then the low halves
        strict = op in (">", "<")
        yes, nay = (ok, no) if op in (">", ">=") else (no, ok)
        low_jump = _JGT if strict != (op in ("<", "<=")) else _JGE
        a.op(_LD_ABS, _high(arg))
        a.jump(_JGT, hi, yes, None)
        a.jump(_JEQ, hi, None, nay)
        a.op(_LD_ABS, _low(arg))
        a.jump(low_jump, lo, yes, nay)


# -- the program ----------------------------------------------------------------------------


def compile_filter(
    entries: Iterable[Entry],
    guards: Iterable[Guard],
    default: Action,
    pid: int,
    arch: str = MACHINE,
    pid_slots: list[int] | None = None,
) -> bytes:
    """The filter for ``entries`` and ``guards`` on ``arch`` (``SELF_PID`` is ``pid``).

    Syscalls are looked up by name in ``arch``'s table; those it does not have are left
    out (they cannot be called there). ``pid_slots`` receives the index of every
    instruction whose ``k`` is ``pid`` (see ``PidHalf``).
    """
    table = TABLES.get(arch)
    if arch not in AUDIT_ARCH or table is None:
        raise PolicyError(
            f"isolates compiles seccomp filters for {', '.join(AUDIT_ARCH)}, not {arch}"
        )
    blocks = _blocks(entries, guards, table)
    a = _Assembler()
    a.op(_LD_ABS, _ARCH)
    a.jump(_JEQ, AUDIT_ARCH[arch], None, "kill")
    a.op(_LD_ABS, _NR)
    if arch == "x86_64":
        a.jump(_JGE, X32_SYSCALL_BIT, "kill", None)
    _search(a, _intervals(blocks, default))
    for nr in sorted(nr for nr, block in blocks.items() if _constant(block) is None):
        a.place(("nr", nr))
        _emit_block(a, nr, blocks[nr], default, pid)
    a.place("kill")
    a.ret(SECCOMP_RET_KILL_PROCESS)
    program = a.assemble()
    if pid_slots is not None:
        pid_slots += a.pid_slots
    return program


@dataclass
class _Block:
    guards: list[Guard] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)


def _blocks(
    entries: Iterable[Entry], guards: Iterable[Guard], table: dict[str, int]
) -> dict[int, _Block]:
    blocks: dict[int, _Block] = {}
    for g in guards:
        if g.syscall in table:
            blocks.setdefault(table[g.syscall], _Block()).guards.append(g)
    for e in entries:
        if e.syscall in table:
            blocks.setdefault(table[e.syscall], _Block()).entries.append(e)
    for block in blocks.values():  # strictest first; ties keep their order (stable sort)
        block.entries.sort(key=lambda e: e.action.rank)
    return blocks


def _constant(block: _Block) -> Action | None:
    """The one answer a syscall's block gives whatever the arguments, if it has one."""
    if block.guards and block.guards[0].checks:
        return None
    if block.guards:
        return block.guards[0].action
    if block.entries and not block.entries[0].conditions:
        return block.entries[0].action
    return None


Leaf = tuple[int, Action | int]  # (first number, the answer, or the number of a block)


def _intervals(blocks: dict[int, _Block], default: Action) -> list[Leaf]:
    """Syscall numbers cut into runs that answer alike: a constant action for a run of
    numbers (the default between named ones), or one number with a block of its own."""
    leaves: list[Leaf] = [(0, default)]
    for nr in sorted(blocks):
        answer = _constant(blocks[nr])
        if answer is None and not blocks[nr].entries and not blocks[nr].guards:
            answer = default
        _append(leaves, nr, answer if answer is not None else nr)
        _append(leaves, nr + 1, default)
    return leaves


def _append(leaves: list[Leaf], start: int, answer: Action | int) -> None:
    last_start, last = leaves[-1]
    if last_start == start:
        leaves[-1] = (start, answer)
        if len(leaves) > 1 and _same(leaves[-2][1], answer):
            leaves.pop()
    elif not _same(last, answer):
        leaves.append((start, answer))


def _same(a: Action | int, b: Action | int) -> bool:
    return isinstance(a, Action) and isinstance(b, Action) and a == b


def _search(a: _Assembler, leaves: Sequence[Leaf]) -> None:
    """Binary search on the syscall number in A over the runs: a leaf knows the number
    is in its run, so it answers at once, or jumps to that number's block."""
    if len(leaves) == 1:
        answer = leaves[0][1]
        if isinstance(answer, Action):
            a.ret(answer.seccomp_value)
        else:
            a.ja(("nr", answer))
        return
    mid = len(leaves) // 2
    right = ("half", leaves[mid][0], len(leaves))
    a.jump(_JGE, leaves[mid][0], right, None)
    _search(a, leaves[:mid])
    a.place(right)
    _search(a, leaves[mid:])


def _emit_block(a: _Assembler, nr: int, block: _Block, default: Action, pid: int) -> None:
    for i, guard in enumerate(block.guards):
        nope = ("guard", nr, i)
        for c in guard.checks:
            a.op(_LD_ABS, _low(c.arg))
            if c.value is None:
                a.jump(_JSET, c.mask, None, nope)
            else:
                if c.mask != _U32:
                    a.op(_AND_K, c.mask)
                a.jump(_JEQ, c.value, None, nope)
        a.ret(guard.action.seccomp_value)
        a.place(nope)
    for i, entry in enumerate(block.entries):
        nope = ("entry", nr, i)
        conditions = [_resolve(c, pid) for c in entry.conditions]
        for j, cmp in enumerate(conditions):
            ok = ("cond", nr, i, j)
            _emit_cmp(a, cmp, ok, nope)
            a.place(ok)
        a.ret(entry.action.seccomp_value)
        a.place(nope)
        if not conditions:
            return  # an entry that always matches: what follows it is unreachable
    a.ret(default.seccomp_value)

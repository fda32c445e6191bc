"""A classic-BPF interpreter for seccomp programs: what would the kernel answer?

``evaluate(policy.compile().bpf, nr, args)`` runs a filter exactly as the kernel's
seccomp runs it on one syscall, without loading anything: the program reads a
``struct seccomp_data`` (nr u32, arch u32, instruction_pointer u64, args 6 x u64, in host
byte order) and returns a SECCOMP_RET_* value; ``action_of`` turns that value back into
an :class:`Action`. Several filters on one thread combine as the kernel combines them
(``evaluate_stack``): the most restrictive answer wins.

It implements the instructions the kernel's seccomp checker accepts (seccomp_check_filter
in kernel/seccomp.c): loads of the data (32-bit words), immediates and scratch memory,
stores, the ALU operations (no modulo: seccomp refuses BPF_MOD), jumps on constants and
on X, returns, TAX/TXA. Anything else raises :class:`BPFError`, as does a program the
kernel would refuse (a jump or a load out of bounds, no return at the end, a scratch word
read before it is written). Jumps only go forward, so every run ends.
"""

from __future__ import annotations

import struct
import sys

from . import _uapi as uapi
from ._uapi import AUDIT_ARCH as AUDIT_ARCH
from ._uapi import NATIVE_ARCH as NATIVE_ARCH

# isolates run's answering parent evaluates programs on its start (run_report.py): no
# typing (re, enum, collections come with it), and Action only names an answer.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Final

    from ._rules import Action

_U32: Final = 0xFFFFFFFF
_U64: Final = (1 << 64) - 1
_DATA_SIZE: Final = 64  # sizeof(struct seccomp_data)
_MEMWORDS: Final = 16  # BPF_MEMWORDS
_INSN: Final = struct.Struct("=HBBI")  # struct sock_filter, host byte order
_DATA: Final = struct.Struct("=IIQ6Q")  # struct seccomp_data


# Instruction classes and fields (include/uapi/linux/bpf_common.h).
_LD, _LDX, _ST, _STX, _ALU, _JMP, _RET, _MISC = range(8)
_IMM, _ABS, _MEM, _LEN = 0x00, 0x20, 0x60, 0x80
_W = 0x00
_SRC_X = 0x08
_RVAL_A = 0x10
_TAX, _TXA = 0x00, 0x80

_ALU_OPS: Final[dict[int, Callable[[int, int], int]]] = {
    0x00: lambda a, b: a + b,
    0x10: lambda a, b: a - b,
    0x20: lambda a, b: a * b,
    0x40: lambda a, b: a | b,
    0x50: lambda a, b: a & b,
    0x60: lambda a, b: a << (b & 31),  # by X: the shift count is taken mod 32, as x86 does
    0x70: lambda a, b: a >> (b & 31),
    0xA0: lambda a, b: a ^ b,
}
_DIV, _NEG, _LSH, _RSH = 0x30, 0x80, 0x60, 0x70

_JUMPS: Final[dict[int, Callable[[int, int], bool]]] = {
    0x10: lambda a, b: a == b,
    0x20: lambda a, b: a > b,
    0x30: lambda a, b: a >= b,
    0x40: lambda a, b: a & b != 0,
}
_JA = 0x00


class BPFError(ValueError):
    """The program is not one the kernel's seccomp would run (or uses what we do not)."""


def evaluate(
    bpf: bytes,
    nr: int,
    args: Sequence[int] = (),
    arch: int = NATIVE_ARCH,
    ip: int = 0,
) -> int:
    """Run the seccomp program ``bpf`` on syscall ``nr`` and return its SECCOMP_RET_* value.

    ``args`` are up to six 64-bit arguments (negative ints are taken as their two's
    complement, as the kernel sees them); missing ones are 0.
    """
    return _machine(bpf, nr, args, arch, ip).run()


def evaluate_reading(
    bpf: bytes, nr: int, args: Sequence[int] = (), arch: int = NATIVE_ARCH, ip: int = 0
) -> tuple[int, tuple[tuple[int, int], ...]]:
    """``evaluate``, and the words of ``seccomp_data`` past nr and arch that the program
    read on its way, as (offset, value): any call with the same nr, arch and those words
    gets the same answer (the program is a function of what it reads)."""
    machine = _machine(bpf, nr, args, arch, ip)
    machine.reads = []
    ret = machine.run()
    return ret, tuple(machine.reads or ())


def steps(bpf: bytes, nr: int, args: Sequence[int] = (), arch: int = NATIVE_ARCH) -> int:
    """How many instructions the kernel runs for this call (what a filter costs it)."""
    machine = _machine(bpf, nr, args, arch, 0)
    machine.run()
    return machine.executed


def _machine(bpf: bytes, nr: int, args: Sequence[int], arch: int, ip: int) -> _Machine:
    if len(args) > 6:
        raise BPFError(f"a syscall has at most 6 arguments, got {len(args)}")
    regs = [a & _U64 for a in args] + [0] * (6 - len(args))
    data = _DATA.pack(nr & _U32, arch & _U32, ip & _U64, *regs)
    return _Machine(_decode(bpf), data)


def evaluate_stack(
    programs: Iterable[bytes],
    nr: int,
    args: Sequence[int] = (),
    arch: int = NATIVE_ARCH,
    ip: int = 0,
) -> int:
    """The kernel's answer when several filters are loaded (oldest first): every filter
    runs and the most restrictive action wins; among equals, the newest filter's value."""
    best: int | None = None
    for bpf in reversed(list(programs)):
        ret = evaluate(bpf, nr, args, arch, ip)
        if best is None or _priority(ret) < _priority(best):
            best = ret
    if best is None:
        raise BPFError("evaluate_stack: no program given")
    return best


def _priority(ret: int) -> int:
    """Lower is more restrictive: the action bits as a signed 32-bit int (kernel order)."""
    action = ret & 0xFFFF0000
    return action - (1 << 32) if action & 0x80000000 else action


# SECCOMP_RET_* action values (include/uapi/linux/seccomp.h).
_KILL_PROCESS, _KILL_THREAD = uapi.SECCOMP_RET_KILL_PROCESS, uapi.SECCOMP_RET_KILL_THREAD
_TRAP, _ERRNO, _USER_NOTIF = (
    uapi.SECCOMP_RET_TRAP,
    uapi.SECCOMP_RET_ERRNO,
    uapi.SECCOMP_RET_USER_NOTIF,
)
_TRACE, _LOG, _ALLOW = uapi.SECCOMP_RET_TRACE, uapi.SECCOMP_RET_LOG, uapi.SECCOMP_RET_ALLOW
_MAX_ERRNO = 4095
#: The action values with no data, and the Action each one names (Action.<name>).
_SIMPLE: Final = {
    _KILL_PROCESS: "KILL_PROCESS",
    _KILL_THREAD: "KILL_THREAD",
    _TRAP: "TRAP",
    _USER_NOTIF: "NOTIFY",
    _LOG: "LOG",
    _ALLOW: "ALLOW",
}


def action_of(ret: int) -> Action:
    """The :class:`Action` the kernel takes for the SECCOMP_RET_* value ``ret``.

    As in the kernel, an errno above 4095 is capped at 4095 and an unknown action kills
    the process. SECCOMP_RET_TRACE has no Action (isolates never emits it): BPFError.
    """
    from ._rules import Action

    action, data = ret & 0xFFFF0000, ret & 0xFFFF
    if action == _ERRNO:
        return Action("errno", min(data, _MAX_ERRNO))  # errno 0: "succeed" without running
    if action == _TRACE:
        raise BPFError(f"{ret:#x} is SECCOMP_RET_TRACE, which no Action stands for")
    return getattr(Action, _SIMPLE.get(action, "KILL_PROCESS"))  # type: ignore[no-any-return]


def decide(bpf: bytes, nr: int, args: Sequence[int] = ()) -> Action:
    """``action_of(evaluate(bpf, nr, args))``: the Action the filter takes on this call."""
    return action_of(evaluate(bpf, nr, args))


def _decode(bpf: bytes) -> list[tuple[int, int, int, int]]:
    if not bpf or len(bpf) % _INSN.size:
        raise BPFError(
            f"not a BPF program: {len(bpf)} bytes is not a whole number of "
            f"{_INSN.size}-byte instructions"
        )
    program = [_INSN.unpack_from(bpf, off) for off in range(0, len(bpf), _INSN.size)]
    for pc, insn in enumerate(program):
        _check(pc, insn, len(program))
    if program[-1][0] not in (_RET, _RET | _RVAL_A):
        raise BPFError("the program does not end with a return, so the kernel refuses it")
    return program


def _check(pc: int, insn: tuple[int, int, int, int], length: int) -> None:
    """What the kernel checks before loading: known opcodes, jumps and loads in bounds."""
    code, jt, jf, k = insn
    if code not in _VALID:
        raise BPFError(f"instruction {pc}: opcode {code:#06x} is not a seccomp BPF instruction")
    if code & 0x07 == _JMP:
        far = pc + 1 + (k if code == _JMP | _JA else max(jt, jf))
        if far >= length:
            raise BPFError(f"instruction {pc} jumps to {far}, past the end")
    elif code == _LD | _W | _ABS and (k % 4 or k + 4 > _DATA_SIZE):
        raise BPFError(f"instruction {pc} loads offset {k}: not an aligned word of seccomp_data")
    elif code in (_LD | _MEM, _LDX | _MEM, _ST, _STX) and not 0 <= k < _MEMWORDS:
        raise BPFError(f"instruction {pc} uses scratch word {k}; 0 to 15 exist")
    elif code in (_ALU | _LSH, _ALU | _RSH) and k >= 32:
        raise BPFError(f"instruction {pc} shifts a 32-bit word by {k}")
    elif code == _ALU | _DIV and k == 0:
        raise BPFError(f"instruction {pc} divides by the constant 0")


class _Machine:
    """Accumulator A, index X, 16 words of scratch memory, a program counter."""

    def __init__(
        self,
        program: list[tuple[int, int, int, int]],
        data: bytes,
        reads: list[tuple[int, int]] | None = None,
    ) -> None:
        self.program, self.data = program, data
        self.a = self.x = 0
        self.mem: list[int | None] = [None] * _MEMWORDS
        self.executed = 0
        self.reads = reads  # with a list: the words of data read past nr and arch

    def run(self) -> int:
        pc = 0
        while True:  # _decode checked every jump lands inside and the last insn returns
            code, jt, jf, k = self.program[pc]
            self.executed += 1
            cls = code & 0x07
            if cls == _RET:
                return self.a if code & _RVAL_A else k
            if cls == _JMP:
                pc += 1 + self._jump_offset(code, jt, jf, k)
                continue
            if cls == _ALU and code & 0xF0 == _DIV and code & _SRC_X and self.x == 0:
                return 0  # the kernel's runtime answer to A / X with X == 0
            self._execute(cls, code, k)
            pc += 1

    def _jump_offset(self, code: int, jt: int, jf: int, k: int) -> int:
        if code == _JMP | _JA:
            return k
        operand = self.x if code & _SRC_X else k
        return jt if _JUMPS[code & 0xF0](self.a, operand) else jf

    def _execute(self, cls: int, code: int, k: int) -> None:
        if cls == _LD:
            self.a = self._value(code, k)
        elif cls == _LDX:
            self.x = self._value(code, k)
        elif cls == _ST:
            self.mem[k] = self.a
        elif cls == _STX:
            self.mem[k] = self.x
        elif cls == _ALU:
            self.a = self._alu(code, k)
        else:
            self.a, self.x = (self.a, self.a) if code == _MISC | _TAX else (self.x, self.x)

    def _value(self, code: int, k: int) -> int:
        mode = code & 0xE0
        if mode == _ABS:
            word = int.from_bytes(self.data[k : k + 4], sys.byteorder)
            if self.reads is not None and k >= 8:
                self.reads.append((k, word))
            return word
        if mode == _MEM:
            value = self.mem[k]
            if value is None:  # the kernel's checker refuses such a program
                raise BPFError(f"scratch word {k} is read before anything was stored in it")
            return value
        return _DATA_SIZE if mode == _LEN else k

    def _alu(self, code: int, k: int) -> int:
        op = code & 0xF0
        operand = self.x if code & _SRC_X else k
        if op == _NEG:
            return -self.a & _U32
        if op == _DIV:
            return self.a // operand
        return _ALU_OPS[op](self.a, operand) & _U32


def _valid_opcodes() -> frozenset[int]:
    """Every opcode seccomp_check_filter accepts (kernel/seccomp.c)."""
    codes = {_LD | _W | _ABS, _LD | _W | _LEN, _LDX | _W | _LEN, _LD | _IMM, _LDX | _IMM,
             _LD | _MEM, _LDX | _MEM, _ST, _STX, _RET, _RET | _RVAL_A,
             _MISC | _TAX, _MISC | _TXA, _ALU | _NEG, _JMP | _JA}  # fmt: skip
    for op in (*_ALU_OPS, _DIV):  # no BPF_MOD: seccomp refuses it
        codes |= {_ALU | op, _ALU | op | _SRC_X}
    for op in _JUMPS:
        codes |= {_JMP | op, _JMP | op | _SRC_X}
    return frozenset(codes)


_VALID: Final = _valid_opcodes()

"""Rules as plain data: an action, argument comparisons, and a rule on one syscall."""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass, field
from typing import ClassVar, Final

from . import _uapi as uapi
from ._errors import PolicyError

_U64: Final = (1 << 64) - 1


@dataclass(frozen=True)
class Action:
    """What the kernel does with a syscall: allow it, fail it with an errno, or kill.

    ``Action.ERRNO(n)`` fails the call with ``n`` (EPERM by default); ``KILL_PROCESS``
    and ``KILL_THREAD`` kill with SIGSYS; ``TRAP`` delivers SIGSYS; ``LOG`` logs to the
    audit log and allows; ``NOTIFY`` hands the call to a supervisor (see the orchestrator).
    """

    kind: str
    errno: int = 0

    ALLOW: ClassVar[Action]
    KILL_PROCESS: ClassVar[Action]
    KILL_THREAD: ClassVar[Action]
    TRAP: ClassVar[Action]
    LOG: ClassVar[Action]
    NOTIFY: ClassVar[Action]

    @classmethod
    def ERRNO(cls, errno: int = _errno.EPERM) -> Action:
        if not 0 < errno < 4096:
            raise PolicyError(f"Action.ERRNO({errno}): errno must be between 1 and 4095")
        return cls("errno", errno)

    @property
    def seccomp_value(self) -> int:
        """The SECCOMP_RET_* value a filter returns for this action."""
        if self.kind == "errno":
            return uapi.SECCOMP_RET_ERRNO | self.errno
        return _SIMPLE_RETS[self.kind]

    @property
    def rank(self) -> int:
        """How strict the kernel ranks this action (0 is the strictest): of several
        answers for one call, the strictest wins."""
        return _RANK[self.kind]

    @property
    def denies(self) -> bool:
        """True when the syscall does not run (LOG and ALLOW let it run)."""
        return self.kind not in ("allow", "log")

    def __repr__(self) -> str:
        if self.kind == "errno":
            return f"Action.ERRNO({_errno.errorcode.get(self.errno, self.errno)})"
        return f"Action.{self.kind.upper()}"


_SIMPLE_RETS: Final = {
    "allow": uapi.SECCOMP_RET_ALLOW,
    "kill_process": uapi.SECCOMP_RET_KILL_PROCESS,
    "kill_thread": uapi.SECCOMP_RET_KILL_THREAD,
    "trap": uapi.SECCOMP_RET_TRAP,
    "log": uapi.SECCOMP_RET_LOG,
    "notify": uapi.SECCOMP_RET_USER_NOTIF,
}
#: The kernel's ranking of actions (kernel/seccomp.c), strictest first.
_RANK: Final = {"kill_process": 0, "kill_thread": 1, "trap": 2, "errno": 3, "notify": 4,
                "log": 5, "allow": 6}  # fmt: skip
Action.ALLOW = Action("allow")
Action.KILL_PROCESS = Action("kill_process")
Action.KILL_THREAD = Action("kill_thread")
Action.TRAP = Action("trap")
Action.LOG = Action("log")
Action.NOTIFY = Action("notify")


class _SelfPid:
    """Placeholder for the pid of the process that loads the policy (resolved at compile)."""

    def __repr__(self) -> str:
        return "SELF_PID"

    def __reduce__(self) -> str:
        return "SELF_PID"  # unpickles to the module's singleton


SELF_PID: Final = _SelfPid()
Value = int | _SelfPid

# Comparison operators, numbered as libseccomp's enum scmp_compare.
OPS: Final = {"!=": 1, "<": 2, "<=": 3, "==": 4, ">=": 5, ">": 6, "&==": 7}


@dataclass(frozen=True)
class Cmp:
    """One comparison of a syscall argument: ``Arg(i) <op> value`` (64-bit unsigned)."""

    arg: int
    op: str
    value: Value
    mask: int = _U64

    def __repr__(self) -> str:
        if self.op == "&==":
            return f"Arg({self.arg}) & {self.mask:#x} == {_show(self.value)}"
        return f"Arg({self.arg}) {self.op} {_show(self.value)}"

    def resolve(self, pid: int) -> tuple[int, str, int, int]:
        """(arg, op, value, mask) with SELF_PID replaced by ``pid``."""
        value = pid if isinstance(self.value, _SelfPid) else self.value
        return self.arg, self.op, value & _U64, self.mask


def _show(value: Value) -> str:
    return repr(value) if isinstance(value, _SelfPid) else hex(value) if value > 9 else str(value)


def _value(v: object, what: str) -> Value:
    if isinstance(v, _SelfPid):
        return v
    if not isinstance(v, int) or isinstance(v, bool):
        raise PolicyError(f"{what}: compare with an int, not {v!r}")
    if not -(1 << 63) <= v <= _U64:
        raise PolicyError(f"{what}: {v} does not fit in 64 bits")
    # Negative values compare as their 64-bit two's complement, as the kernel sees them.
    return v & _U64


class Arg:
    """Argument ``index`` (0-5) of a syscall, for building conditions.

    ``Arg(0) == AF_UNIX``, ``Arg(2) < 4096``, ``Arg(1) & O_ACCMODE == O_RDONLY``.
    The kernel compares the raw 64-bit register; 32-bit arguments are zero-extended by
    the C library, so compare them with non-negative values or masks.
    """

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        if not 0 <= index <= 5:
            raise PolicyError(f"Arg({index}): syscalls have arguments 0 to 5")
        self.index = index

    def _cmp(self, op: str, other: object) -> Cmp:
        return Cmp(self.index, op, _value(other, f"Arg({self.index}) {op}"))

    def __eq__(self, other: object) -> Cmp:  # type: ignore[override]
        return self._cmp("==", other)

    def __ne__(self, other: object) -> Cmp:  # type: ignore[override]
        return self._cmp("!=", other)

    def __lt__(self, other: object) -> Cmp:
        return self._cmp("<", other)

    def __le__(self, other: object) -> Cmp:
        return self._cmp("<=", other)

    def __gt__(self, other: object) -> Cmp:
        return self._cmp(">", other)

    def __ge__(self, other: object) -> Cmp:
        return self._cmp(">=", other)

    def __and__(self, mask: int) -> _Masked:
        return _Masked(self.index, _value(mask, f"Arg({self.index}) & mask"))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Arg({self.index})"


class _Masked:
    """``Arg(i) & mask``, waiting for ``== value``."""

    __slots__ = ("index", "mask")

    def __init__(self, index: int, mask: Value) -> None:
        if not isinstance(mask, int):
            raise PolicyError(f"Arg({index}) & mask: the mask must be an int")
        self.index, self.mask = index, mask

    def __eq__(self, other: object) -> Cmp:  # type: ignore[override]
        value = _value(other, f"Arg({self.index}) & {self.mask:#x} ==")
        if isinstance(value, int) and value & ~self.mask:
            raise PolicyError(
                f"Arg({self.index}) & {self.mask:#x} == {value:#x} can never match: "
                "the value has bits outside the mask"
            )
        return Cmp(self.index, "&==", value, self.mask)

    def __ne__(self, other: object) -> Cmp:  # type: ignore[override]
        raise PolicyError(
            f"Arg({self.index}) & mask != value is not expressible in seccomp; "
            "write one rule per allowed value with == instead"
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Rule:
    """A rule on one syscall: its conditions are AND-ed; several rules on a syscall OR.

    ``Rule("socket", Arg(0) == AF_UNIX)`` allows ``socket`` for unix sockets only;
    ``Rule("getppid")`` allows it outright; ``action=`` makes a rule that denies instead.
    ``implied=True`` marks a supporting rule (what another right needs, like ``poll`` for
    sockets): it merges with other rules on its syscall instead of conflicting with them.
    """

    syscall: str
    conditions: tuple[Cmp, ...] = field(default=())
    action: Action = Action.ALLOW
    implied: bool = False

    def __init__(
        self,
        syscall: str,
        *conditions: Cmp,
        action: Action = Action.ALLOW,
        implied: bool = False,
    ) -> None:
        if not isinstance(syscall, str) or not syscall:
            raise PolicyError(f"Rule({syscall!r}): the syscall must be named by a string")
        for c in conditions:
            if not isinstance(c, Cmp):
                raise PolicyError(
                    f"Rule({syscall!r}, {c!r}): conditions are written like Arg(0) == 1"
                )
        if len(conditions) > 6:
            raise PolicyError(f"Rule({syscall!r}): at most 6 conditions per rule")
        object.__setattr__(self, "syscall", syscall)
        object.__setattr__(self, "conditions", tuple(conditions))
        object.__setattr__(self, "action", action)
        object.__setattr__(self, "implied", implied)

    def __repr__(self) -> str:
        parts = [repr(self.syscall), *map(repr, self.conditions)]
        if self.action != Action.ALLOW:
            parts.append(f"action={self.action!r}")
        return f"Rule({', '.join(parts)})"

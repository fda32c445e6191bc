"""The control protocol between a parent and an isolate, as typed msgspec Structs.

Parent -> isolate: Boot, Go, Stop, PeerRestarted. Isolate -> parent: Idle, Ready,
Result, Failure, Log. Every field is typed. Boot travels as plain data in a pickle
(``boot_message.for_the_isolate``, ``lean_wire.send_pickled``): the isolate, which must
start fast, decodes it without msgspec; it sends msgpack the parent decodes as these
Structs (``lean_wire.send``). Everything an isolate sends is plain data:
the parent decodes it with msgspec, checked against these types (unknown fields
refused), and never unpickles anything that came from an isolate.

The compiled policy, the namespaces and the statuses are frozen dataclasses (the
sandbox's ``CompiledPolicy`` and ``Status``, our ``Namespaces``...). A channel refuses
dataclasses (msgspec's decoder for one drops unknown fields), so each travels as its
strict Struct twin below, field for field (a test holds them to it), and ``converted``
is the one conversion, either way.

Adding a message: a Struct here with its own ``tag``, added to ``Control``; the side
that receives it handles it (the isolate in ``isolate_main``/``context``, the parent in
``process``), and anything it may carry is bounded there.
"""

from __future__ import annotations

import enum
from typing import Any, Final, TypeVar

import msgspec

from isolates.sandbox import Compat, Enforcement

T = TypeVar("T")

#: What each worker reads from the shared barrier socket when the supervisor releases it.
GO_BYTE: Final = b"G"
#: Descriptors one control message may carry (a worker's channel ends come with Boot).
MAX_BOOT_FDS: Final = 64
#: Descriptors one message on a worker's own channels may carry.
MAX_FDS: Final = 16


def converted(value: object, to: type[T]) -> T:
    """``value`` (a dataclass or its twin below) as a ``to``, nested values too: msgspec
    reads its attributes and checks them against ``to`` (ValidationError otherwise)."""
    return msgspec.convert(value, to, from_attributes=True)


# -- the sandbox's CompiledPolicy and Status ----------------------------------------------


class LandlockPlanData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    compat: Compat = Compat.BEST_EFFORT
    handled_fs: int = 0
    handled_net: int = 0
    scoped: int = 0
    restrict_flags: int = 0
    paths: tuple[tuple[str, int, bool, int, int], ...] = ()
    ports: tuple[tuple[int, int], ...] = ()


class CompiledPolicyData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    bpf: bytes
    landlock: LandlockPlanData | None = None
    preload: tuple[str, ...] = ()
    self_pid: int | None = None
    fallback_bpf: bytes | None = None
    pid_slots: tuple[int, ...] = ()


class LandlockStatusData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enforcement: Enforcement
    abi: int
    dropped: tuple[str, ...] = ()


class StatusData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seccomp: bool
    all_threads: bool
    landlock: LandlockStatusData | None = None
    capabilities: tuple[str, ...] | None = None
    limits: tuple[str, ...] | None = None  # set by the parent, never sent by an isolate


# -- the orchestrator's Namespaces and NamespaceStatus -------------------------------------


class BindData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: str
    target: str | None = None
    writable: bool = False


class MountData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ro: tuple[str, ...] = ()
    rw: tuple[str, ...] = ()
    binds: tuple[BindData, ...] = ()
    runtime: bool = True
    tmp: bool = True
    dev: bool = True
    proc: bool = True


class NamespacesData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user: bool = True
    mount: MountData | None = MountData()
    pid: bool = True
    net: bool = True
    ipc: bool = True
    uts: bool = True
    uid: int | None = None
    gid: int | None = None
    hostname: str = "isolate"


class NamespaceStatusData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    entered: tuple[str, ...]
    uid: int
    gid: int
    pid: int
    hostname: str
    capabilities: bool


# -- the messages -------------------------------------------------------------------------


class Stage(enum.StrEnum):
    """When an isolate failed: before READY (booting) or while running its function."""

    BOOT = "boot"
    RUN = "run"


class CoverageRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The parent measures coverage (coverage.py is running): the isolate records the
    lines (or, with ``arcs``, the arcs) it runs in files beneath ``roots`` and sends them
    back before its outcome (coverage.py in _core/coverage.py, the tracer in
    _core/coverage_tracer.py)."""

    roots: list[str]
    arcs: bool = False


class Boot(msgspec.Struct, tag="boot", forbid_unknown_fields=True):
    """Everything an isolate needs to become a worker (pickle is parent -> child only)."""

    name: str
    # One pickle of (function, (args, kwargs), {channel name: message type}), by reference
    # where importable, else by value: one pickle, so a class used by the function and a
    # channel is the same class in the isolate.
    payload: bytes
    sys_path: list[str]
    sources: dict[str, list[str]]  # source lines for tracebacks (files are out of reach)
    env: dict[str, str]
    cwd: str
    # Compiled for the isolate's pid, with kills turned into notifications: the isolate
    # loads it with a listener and hands that to the parent with READY.
    policy: CompiledPolicyData
    namespaces: NamespacesData | None
    channels: list[str]  # channel names, in the order of the descriptors sent with Boot
    # A Supervisor's worker: called as fn(ctx, ...) with a WorkerContext, and held at the
    # barrier after READY until GO. A single @isolate call is neither.
    supervised: bool
    # GO arrives as one byte on a socket every worker shares (the last descriptor sent
    # with Boot): one send releases them all. Without it, GO is a control message.
    barrier: bool
    # The policy lets it start processes: be a child subreaper and, after the result,
    # wait for the parent to end its process tree (orphans.py); ``reap_wait``: the
    # policy allows waitid, so it collects its dead children before that.
    reap: bool = False
    reap_wait: bool = False
    # Capabilities it keeps (numbers); every other is dropped before it is released.
    capabilities: list[int] = []
    # (resource, soft, hard): the rlimits it sets on itself before it is confined.
    rlimits: list[tuple[int, int, int]] = []
    # The function's return annotation names a type only msgspec encodes: the isolate
    # loads msgspec before it is confined (it does not otherwise: isolate_main.py).
    msgspec: bool = False
    coverage: CoverageRequest | None = None


class Idle(msgspec.Struct, tag="idle", forbid_unknown_fields=True):
    """A new interpreter finished its imports and waits for its boot message."""


class Go(msgspec.Struct, tag="go", forbid_unknown_fields=True):
    """Run now (a restarted worker; the others are released by the barrier's byte)."""


class Stop(msgspec.Struct, tag="stop", forbid_unknown_fields=True):
    """The supervisor asks the worker to stop (``ctx.stopping`` turns True)."""


class PeerRestarted(msgspec.Struct, tag="peer", forbid_unknown_fields=True):
    channel: str  # the channel whose other end was replaced (a new fd comes with it)


class Ready(msgspec.Struct, tag="ready", forbid_unknown_fields=True):
    """The isolate is confined: what seccomp and Landlock enforce, and the namespaces it
    entered (None: none asked for)."""

    status: StatusData
    namespaces: NamespaceStatusData | None


class Result(msgspec.Struct, tag="result", forbid_unknown_fields=True):
    value: bytes  # msgpack of the return value
    shape: str | None = None  # "set", "frozenset" or "tuple": what msgpack made a list of


class Failure(msgspec.Struct, tag="failure", forbid_unknown_fields=True):
    kind: str  # qualified name, e.g. "ValueError" or "mylib.errors.ParseError"
    builtin: bool  # the type lives in the builtins module
    args: list[Any]  # exc.args when they are plain data, else [str(exc)]
    message: str
    traceback: str
    stage: Stage


class Coverage(msgspec.Struct, tag="coverage", forbid_unknown_fields=True):
    """What the isolate ran, by file (a CoverageRequest asked for it): line numbers, or
    (from, to) arcs as coverage.py counts them (negative: entering or leaving code)."""

    lines: dict[str, list[int]] = {}
    arcs: dict[str, list[tuple[int, int]]] = {}


class Log(msgspec.Struct, tag="log", forbid_unknown_fields=True):
    level: int
    logger: str
    message: str
    created: float


Control = Boot | Go | Stop | PeerRestarted | Idle | Ready | Result | Failure | Log | Coverage

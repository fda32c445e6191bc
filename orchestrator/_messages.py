"""The control protocol between a supervisor and an isolate, as msgspec Structs.

Parent -> isolate: Boot, Go, Stop, PeerRestarted. Isolate -> parent: Ready, Result,
Failure, Log. Everything an isolate sends is plain data: the parent decodes it with
msgspec and never unpickles anything that came from an isolate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from isolates.sandbox import Status

if TYPE_CHECKING:
    from ._namespaces import NamespaceStatus

#: What each worker reads from the shared barrier socket when the supervisor releases it.
GO_BYTE: Final = b"G"
#: Descriptors one control message may carry (a worker's channel ends come with Boot).
MAX_BOOT_FDS: Final = 64


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
    bpf: bytes
    preload: list[str]  # modules to import before confinement (CompiledPolicy.preload)
    landlock: Any  # the LandlockPlan as plain data (msgspec builtins), or None
    namespaces: Any  # the Namespaces option as plain data, or None
    channels: list[str]  # channel names, in the order of the descriptors sent with Boot
    notify: bool  # load with a listener and hand it to the parent
    hold: bool  # wait at the barrier for GO after READY (supervised workers)
    # GO arrives as one byte on a socket every worker shares (the last descriptor sent
    # with Boot): one send releases them all. Without it, GO is a control message.
    barrier: bool
    context: bool  # call fn(ctx, ...) with a WorkerContext
    # The policy lets it start processes: be a child subreaper and, after the result,
    # wait for the parent to end its process tree (_orphans.py); ``reap_wait``: the
    # policy allows waitid, so it collects its dead children before that.
    reap: bool = False
    reap_wait: bool = False


class Idle(msgspec.Struct, tag="idle", forbid_unknown_fields=True):
    """A new interpreter finished its imports and waits for its boot message."""


class Go(msgspec.Struct, tag="go", forbid_unknown_fields=True):
    pass


class Stop(msgspec.Struct, tag="stop", forbid_unknown_fields=True):
    pass


class PeerRestarted(msgspec.Struct, tag="peer", forbid_unknown_fields=True):
    channel: str  # the channel whose other end was replaced (a new fd comes with it)


class Ready(msgspec.Struct, tag="ready", forbid_unknown_fields=True):
    """The isolate is confined. Its statuses travel as plain data (the dataclasses
    ``Status`` and ``NamespaceStatus``); read them with ``status()`` / ``namespaces()``."""

    status_data: Any
    namespaces_data: Any

    def status(self) -> Status:
        return msgspec.convert(self.status_data, Status)

    def namespaces(self) -> NamespaceStatus | None:
        if self.namespaces_data is None:
            return None
        from ._namespaces import NamespaceStatus

        return msgspec.convert(self.namespaces_data, NamespaceStatus)


class Result(msgspec.Struct, tag="result", forbid_unknown_fields=True):
    value: bytes  # msgpack of the return value


class Failure(msgspec.Struct, tag="failure", forbid_unknown_fields=True):
    kind: str  # qualified name, e.g. "ValueError" or "mylib.errors.ParseError"
    builtin: bool  # the type lives in the builtins module
    args: list[Any]  # exc.args when they are plain data, else [str(exc)]
    message: str
    traceback: str
    stage: str  # "boot" (before READY) or "run"


class Log(msgspec.Struct, tag="log", forbid_unknown_fields=True):
    level: int
    logger: str
    message: str
    created: float


ToIsolate = Boot | Go | Stop | PeerRestarted
FromIsolate = Idle | Ready | Result | Failure | Log
Control = Boot | Go | Stop | PeerRestarted | Idle | Ready | Result | Failure | Log

"""The isolate's main: read the boot message, become the worker, run once, report.

Order: boot message -> environment and sys.path -> unpickle the callable (this imports
what it needs) -> namespaces -> Landlock -> seccomp -> READY -> wait for GO -> run ->
result. Everything imported after the policy is loaded would need the policy to allow
reading Python files, so this module imports what it uses up front.

Lean on purpose: a single ``@isolate`` call imports only builtins, ctypes and the raw
sandbox modules (``lean_wire`` and ``_confine`` say how), never msgspec, typing or
dataclasses, unless the call itself needs them: msgspec is loaded before confinement
when the result may need it (``_needs_msgspec``), and a Supervisor's worker loads the
channels it uses. ``tests/orchestrator/test_lean_child.py`` holds this.

Safety argument:

- This runs in a fresh interpreter that ``spawn.py`` (or the fork server,
  ``fork_server.py``) started with nothing of the parent's but its control channel (and,
  with Boot, the worker's channel ends). It arms PR_SET_PDEATHSIG first and then checks
  its parent is still the one on its command line, so it never outlives the process
  that will read its result.
- The boot message is unpickled here because it comes from that parent over a
  socketpair only the two of them hold; nothing this process sends back is pickle.
- Unpickling imports the function's module and rebuilds its arguments before
  confinement (the parent chose them); the function itself, and anything it starts,
  runs only after namespaces -> Landlock -> seccomp are in force on every thread
  (TSYNC). Any failure before READY is reported as a boot failure and the process
  exits (``os._exit``) without running the function.
- ``os._exit`` ends every path: no atexit handler or finaliser of the function's
  objects runs after the result, and a process the function forked that returns here
  exits without speaking for the isolate (its copy of the control channel is closed
  at fork when the isolate reaps, see orphans.py).
- The only calls made after confinement are the ones the orchestrator adds to every
  policy (policies.py): the control channel's, and returning to SCHED_OTHER after the
  barrier (``_batch``), which the filter allows for this process only.
"""

from __future__ import annotations

import _pickle
import _signal  # type: ignore[import-not-found]  # signal.py imports enum: costly
import _socket
import os
import sys

from isolates.sandbox.lowlevel import (
    capability_names,
    confine,
    lower_rlimits,
    preload_runtime,
    rehearse_confinement,
    set_parent_death_signal,
)

from . import failures
from .functions import call, is_async, preload_async, unwrap
from .lean_wire import MAX_FRAME, drain, encode_value, recv_pickled, send

TYPE_CHECKING = False  # no typing at run time (see above)
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Final, NoReturn

    from isolates.channels import Channel

    from .context import WorkerContext
    from .coverage_tracer import Recorder

GO_BYTE: Final = b"G"  # wire.GO_BYTE (a test holds them equal): one byte of the barrier's send
#: Modules whose types a result may hold that only msgspec encodes: when the function's
#: own imports loaded one, msgspec is loaded too, before confinement.
#: (Enums and named tuples ``lean_wire.pack`` encodes itself.)
_RICH_TYPES: Final = ("msgspec", "dataclasses", "datetime", "uuid", "decimal")


#: This isolate's end of its control channel (set once it serves).
control_fd = -1


def main(control_fd: int, parent: int) -> NoReturn:
    set_parent_death_signal(_signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before PDEATHSIG was armed
        os._exit(1)
    sock = _socket.socket(fileno=control_fd)
    preload_runtime()  # now, while a pooled isolate waits, not on a call's path
    serve(sock)


def serve(sock: _socket.socket, *, forked: bool = False) -> NoReturn:
    """Say IDLE, wait for the boot message, run it (the fork server's children start here,
    ``forked``: they rehearse their call first, see ``warm_up``)."""
    global control_fd
    control_fd = sock.fileno()
    if forked:
        warm_up()
    try:
        send(sock, {"type": "idle"})
        boot, fds = recv_pickled(sock, MAX_FRAME)  # the parent's channel max_frame
    except (EOFError, OSError):  # a pooled isolate that was never used
        os._exit(0)
    if not isinstance(boot, dict):
        os._exit(2)
    _run(boot, fds, _Control(sock))


def warm_up() -> None:
    """Run, on made-up data, the steps a call will take, so their first-time costs (in a
    forked isolate, above all the pages they touch being copied) are paid while it waits
    in a pool, not on the call's path. (An exec'd isolate skips it: its pages are its own,
    and a cold call would wait for it.) Nothing
    here changes the process (``rehearse_confinement`` says why)."""
    sample = {"type": "ready", "status": {"seccomp": True, "landlock": {"dropped": []}}}
    _pickle.loads(_pickle.dumps({"env": {}, "payload": b"", "policy": sample}, protocol=-1))
    encode_value([1, 2.5, "x", b"y", None, (True,), sample])
    failures.format_exception(ValueError("warm-up"))
    rehearse_confinement()


class _Control:
    """The control channel as this isolate uses it: ``lean_wire`` for a single call, a
    real Channel once a Supervisor's worker has its context (it logs on it too, from any
    thread, so every send goes through the context's lock)."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.ctx: WorkerContext | None = None
        self.channel: Channel[Any] | None = None  # the ctx's control channel
        self.reaper: ModuleType | None = None  # orphans.py, for an isolate that reaps
        self.coverage: Recorder | None = None  # what it ran, when the parent measures it

    def send(self, msg: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        if self.ctx is None:
            send(self.sock, msg, fds)
        else:
            import msgspec

            from .wire import Control

            self.ctx.send_control(msgspec.convert(msg, Control), fds)

    def released(self) -> bool:
        """A restarted worker waits for a GO message (the others, for the barrier)."""
        from .wire import Go

        assert self.channel is not None
        return isinstance(self.channel.recv(), Go)

    def linger(self) -> None:
        """Read until the parent closes (a PeerRestarted meant for a worker that is done
        may still come, with a descriptor: it is closed)."""
        drain(self.sock)


def _run(boot: dict[str, Any], fds: list[int], control: _Control) -> NoReturn:
    if boot.get("coverage") is not None:  # the parent measures coverage: see below
        from .coverage_tracer import Recorder

        control.coverage = Recorder(boot["coverage"]["roots"], boot["coverage"]["arcs"])
    try:
        if boot["reap"]:  # first: importing the function's modules may start processes
            from . import orphans

            control.reaper = orphans
            orphans.become_subreaper()
        barrier = _socket.socket(fileno=fds.pop()) if boot["barrier"] else None
        fn, args, kwargs, types = _prepare(boot)
        if boot["supervised"]:
            _open_context(boot, fds, types, control)
        namespaces = _enter_namespaces(boot)
        if barrier is not None:
            _batch(True)  # see _released
        _set_limits(boot["rlimits"])
        status, listener = _confine(boot)
        if control.ctx is not None:
            control.ctx.status, control.ctx.namespaces = _statuses(status, namespaces)
    except BaseException as exc:
        _finish(control, failures.failure_of(exc, "boot"), boot, code=1)
    ready = {"type": "ready", "status": status, "namespaces": namespaces}
    control.send(ready, fds=(listener,) if listener is not None else ())
    if listener is not None:
        os.close(listener)
    if not _released(boot, barrier, control):
        os._exit(0)  # the supervisor is gone, or does not want us to run
    if boot["supervised"]:  # SIGTERM unwinds a supervised worker (finally blocks run)
        _signal.signal(_signal.SIGTERM, _terminate)
    me = os.getpid()
    if boot["reap"]:  # the control channel is ours alone: a child holding it would hide
        os.register_at_fork(after_in_child=control.sock.close)  # our death from the parent
    if control.coverage is not None:  # the call alone: a traced boot is slow (a Python
        control.coverage.start()  # call per function call), and timed by the caller
    try:
        value = call(fn, args, kwargs, control.ctx)
        reply = {"type": "result", "value": _encoded(value, boot["name"])}
        if type(value) in _SHAPES:
            reply["shape"] = type(value).__name__
    except BaseException as exc:
        reply = failures.failure_of(exc, "run")
    if os.getpid() != me:  # a process the function forked came back here: it never
        os._exit(1 if reply["type"] == "failure" else 0)  # speaks for the isolate
    _finish(control, reply, boot, code=0)


#: Containers msgpack carries as arrays: the caller gets them back as they were, when the
#: function does not annotate its return type (encode.decode_value).
_SHAPES: Final = (set, frozenset, tuple)


def _encoded(value: object, name: str) -> bytes:
    try:
        return encode_value(value)
    except TypeError as exc:  # the function's bug: say whose, and what travels
        raise TypeError(
            f"{name!r} returned {type(value).__name__!r} data that cannot travel back to "
            f"its caller ({exc}): return None, bool, int, float, str, bytes, lists, "
            "tuples, dicts, sets, msgspec Structs, dataclasses, enums or datetimes, and "
            "annotate the return type"
        ) from None


def _open_context(
    boot: dict[str, Any], fds: list[int], types: dict[str, Any], control: _Control
) -> None:
    """A Supervisor's worker: its channels, and the control channel as a real Channel."""
    from isolates.channels import Channel

    from .context import WorkerContext
    from .wire import MAX_BOOT_FDS, Control

    channel = Channel.from_fd(
        os.dup(control.sock.fileno()), Control, max_fds=MAX_BOOT_FDS, name="control"
    )
    channels = dict(zip(boot["channels"], fds, strict=True))
    _statuses(
        {"seccomp": False, "all_threads": False, "capabilities": []}, None
    )  # its imports, while we may
    control.channel = channel
    control.ctx = WorkerContext.open(boot["name"], channels, types, channel)


def _statuses(status: dict[str, Any], namespaces: dict[str, Any] | None) -> tuple[Any, Any]:
    """What READY says, as the Status and NamespaceStatus a worker's context shows."""
    import msgspec

    from isolates.sandbox import Status

    from .._namespaces.options import NamespaceStatus

    entered = None if namespaces is None else msgspec.convert(namespaces, NamespaceStatus)
    return msgspec.convert(status, Status), entered


def _released(boot: dict[str, Any], barrier: _socket.socket | None, control: _Control) -> bool:
    """Wait at the barrier: for our byte of the supervisor's one GO send (its end of
    stream instead means it died), or for a GO message (a restarted worker)."""
    if barrier is not None:
        released = barrier.recv(1) == GO_BYTE
        _batch(False)
        return released
    return not boot["supervised"] or control.released()


def _batch(waiting: bool) -> None:
    """SCHED_BATCH while at the barrier: a batch task does not preempt the task that
    woke it, so the supervisor's one send releases sixteen workers as fast as one,
    instead of being pushed off the CPU by each as it wakes. Back to SCHED_OTHER after
    (the only change the worker's policy lets it make)."""
    policy = os.SCHED_BATCH if waiting else os.SCHED_OTHER
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError:
        pass


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def _prepare(boot: dict[str, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    os.environ.clear()
    os.environ.update(boot["env"])
    os.chdir(boot["cwd"])
    sys.path[:] = boot["sys_path"]
    # Pickle here is safe: it comes from our parent, never from a peer.
    target, (args, kwargs), types = _pickle.loads(boot["payload"])
    fn = unwrap(target)
    if is_async(fn):
        preload_async()
    failures.hold_sources(fn, boot["sources"])
    if boot["msgspec"] or any(name in sys.modules for name in _RICH_TYPES):
        import msgspec  # noqa: F401  (the result may need it: see _RICH_TYPES)
    return fn, args, kwargs, types


def _enter_namespaces(boot: dict[str, Any]) -> dict[str, Any] | None:
    """Enter the namespaces asked for; what READY says of them (None: none asked for)."""
    if boot["namespaces"] is None:
        return None
    import msgspec  # only isolates that ask pay for these

    from .._namespaces.enter import enter
    from .._namespaces.options import Namespaces

    entered = enter(msgspec.convert(boot["namespaces"], Namespaces))
    return dict(msgspec.to_builtins(entered))


def _set_limits(rlimits: list[tuple[int, int, int]]) -> None:
    """The isolate's rlimits (soft == hard but for CPU time: see ``Limits.rlimits``), set
    last before confinement. Only lowered: raising one back needs CAP_SYS_RESOURCE, which
    confinement drops."""
    if rlimits:
        lower_rlimits([(int(w), int(s), int(h)) for w, s, h in rlimits])


def _confine(boot: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Landlock, then seccomp, on every thread, loaded with a listener for the parent
    (without one where one is installed above us: then the kernel kills and denies by
    itself, and the parent sees a SIGSYS death rather than a violation it names)."""
    failures.no_source_lookups()
    policy = boot["policy"]
    (enforcement, abi, dropped), listener, kept = confine(
        policy["bpf"],
        policy["landlock"],
        self_pid=policy["self_pid"],
        preload=tuple(policy["preload"]),
        all_threads=True,
        listener=True,
        capabilities=tuple(boot["capabilities"]),
        fallback=policy["fallback"],
    )
    landlock = {"enforcement": enforcement, "abi": abi, "dropped": list(dropped)}
    status = {"seccomp": True, "all_threads": True, "landlock": landlock}
    status["capabilities"] = capability_names(kept or ())
    return status, listener


def _finish(control: _Control, reply: dict[str, Any], boot: dict[str, Any], code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the policy may deny writing: the result still goes out
            pass
    if control.reaper is not None:  # before the result: the parent ends our tree as soon
        _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)  # as it has it
        control.reaper.stop_waiting_for_children(boot["reap_wait"])
    if control.coverage is not None:  # before the outcome, which ends us
        control.coverage.stop()
        try:
            control.send(control.coverage.message())
        except Exception:  # too large, or the parent is gone: the outcome still goes out
            pass
    try:
        control.send(reply)
    except Exception:
        code = 3
    if control.reaper is not None:
        control.linger()
    os._exit(code)

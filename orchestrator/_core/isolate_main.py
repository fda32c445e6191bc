"""The isolate's main: read the boot message, become the worker, run once, report.

Order: boot message -> environment and sys.path -> unpickle the callable (this imports
what it needs) -> namespaces -> Landlock -> seccomp -> READY -> wait for GO -> run ->
result. Everything imported after the policy is loaded would need the policy to allow
reading Python files, so this module imports what it uses up front.

Safety argument:

- This runs in a fresh interpreter that ``spawn.py`` started with nothing of the
  parent's but its control channel (and, with Boot, the worker's channel ends). It arms
  PR_SET_PDEATHSIG first and then checks its parent is still the one on its command
  line, so it never outlives the process that will read its result.
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

import linecache
import os
import pickle
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from isolates.channels import Channel, ChannelClosed
from isolates.sandbox import CompiledPolicy, Status
from isolates.sandbox.lowlevel import preload_runtime, set_parent_death_signal

from .context import WorkerContext
from .encode import encode_value, failure_of, restore_filenames
from .functions import call, is_async, preload_async, unwrap
from .orphans import become_subreaper, stop_waiting_for_children
from .wire import (
    GO_BYTE,
    MAX_BOOT_FDS,
    Boot,
    Control,
    Failure,
    Go,
    Idle,
    NamespaceStatusData,
    Ready,
    Result,
    Stage,
    StatusData,
    converted,
)

if TYPE_CHECKING:
    from .._namespaces.options import NamespaceStatus


def main(control_fd: int, parent: int) -> NoReturn:
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before PDEATHSIG was armed
        os._exit(1)
    control = Channel.from_fd(control_fd, Control, max_fds=MAX_BOOT_FDS, name="control")
    preload_runtime()  # now, while a pooled isolate waits, not on a call's path
    try:
        control.send(Idle())
        boot, fds = control.recv_with_fds()
    except ChannelClosed:  # a pooled isolate that was never used
        os._exit(0)
    if not isinstance(boot, Boot):
        os._exit(2)
    _run(boot, fds, control)


def _run(boot: Boot, fds: list[int], control: Channel[Any]) -> NoReturn:
    try:
        if boot.reap:  # first: importing the function's modules may start processes
            become_subreaper()
        barrier = socket.socket(fileno=fds.pop()) if boot.barrier else None
        fn, args, kwargs, types = _prepare(boot)
        ctx = None  # a single @isolate call has no context (nor a logger to set up)
        if boot.supervised:
            channels = dict(zip(boot.channels, fds, strict=True))
            ctx = WorkerContext.open(boot.name, channels, types, control)
        namespaces = _enter_namespaces(boot)
        if barrier is not None:
            _batch(True)  # see _released
        status, listener = _confine(boot)
    except BaseException as exc:
        _finish(control, failure_of(exc, Stage.BOOT), boot, code=1)
    if ctx is not None:
        ctx.status, ctx.namespaces = status, namespaces
    control.send(_ready(status, namespaces), fds=[listener] if listener is not None else ())
    if listener is not None:
        os.close(listener)
    if not _released(boot, barrier, control):
        os._exit(0)  # the supervisor is gone, or does not want us to run
    if boot.supervised:  # SIGTERM unwinds a supervised worker (finally blocks run)
        signal.signal(signal.SIGTERM, _terminate)
    me = os.getpid()
    if boot.reap:  # the control channel is ours alone: a child holding it would hide
        os.register_at_fork(after_in_child=control.close)  # our death from the parent
    try:
        value = call(fn, args, kwargs, ctx)
        reply: Result | Any = Result(encode_value(value))
    except BaseException as exc:
        reply = failure_of(exc, Stage.RUN)
    if os.getpid() != me:  # a process the function forked came back here: it never
        os._exit(1 if isinstance(reply, Failure) else 0)  # speaks for the isolate
    _finish(control, reply, boot, code=0)


def _ready(status: Status, namespaces: NamespaceStatus | None) -> Ready:
    entered = None if namespaces is None else converted(namespaces, NamespaceStatusData)
    return Ready(converted(status, StatusData), entered)


def _released(boot: Boot, barrier: socket.socket | None, control: Channel[Any]) -> bool:
    """Wait at the barrier: for our byte of the supervisor's one GO send (its end of
    stream instead means it died), or for a GO message (a restarted worker)."""
    if barrier is not None:
        released = barrier.recv(1) == GO_BYTE
        _batch(False)
        return released
    return not boot.supervised or isinstance(control.recv(), Go)


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


def _prepare(boot: Boot) -> tuple[Any, tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    os.environ.clear()
    os.environ.update(boot.env)
    os.chdir(boot.cwd)
    sys.path[:] = boot.sys_path
    # Pickle here is safe: it comes from our parent, never from a peer.
    target, (args, kwargs), types = pickle.loads(boot.payload)
    fn = unwrap(target)
    if is_async(fn):
        preload_async()
    for filename, lines in boot.sources.items():  # tracebacks without reading files
        # An mtime of None keeps linecache.checkcache from dropping the entry when the
        # policy denies stat().
        linecache.cache[filename] = (len(lines), None, lines, filename)
        restore_filenames(fn, filename)
    return fn, args, kwargs, types


def _enter_namespaces(boot: Boot) -> NamespaceStatus | None:
    if boot.namespaces is None:
        return None
    from .._namespaces.enter import enter  # only isolates that ask pay for it
    from .._namespaces.options import Namespaces

    return enter(converted(boot.namespaces, Namespaces))


def _no_source_lookups() -> None:
    """From now on tracebacks show only the source lines we hold: looking up others
    means stat() and open(), which a policy that kills on them would punish (the
    traceback of a harmless exception would end as a violation)."""
    linecache.checkcache = lambda filename=None: None
    linecache.updatecache = lambda filename, module_globals=None: []


def _confine(boot: Boot) -> tuple[Status, int | None]:
    """Landlock, then seccomp, on every thread, loaded with a listener for the parent."""
    _no_source_lookups()
    compiled = converted(boot.policy, CompiledPolicy)
    return compiled.apply_with_listener(all_threads=True, listener=True)


def _finish(control: Channel[Any], reply: Any, boot: Boot, code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the policy may deny writing: the result still goes out
            pass
    if boot.reap:  # before the result: the parent ends our tree as soon as it has it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_waiting_for_children(boot.reap_wait)
    try:
        control.send(reply)
    except Exception:
        code = 3
    if boot.reap:
        _linger(control)
    os._exit(code)


def _linger(control: Channel[Any]) -> None:
    """Stay alive, and so the subreaper of whatever we started, until the parent has
    killed it all (and then us) or closes the control channel."""
    while True:
        try:
            _, fds = control.recv_with_fds()
        except BaseException:  # ChannelClosed: the parent is done with us
            return
        for fd in fds:  # a PeerRestarted meant for a worker that is done
            os.close(fd)

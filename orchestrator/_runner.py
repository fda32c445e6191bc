"""Running one supervised worker: its isolate, its spares, its waiter thread, restarts."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from isolates.channels import Channel, open_pair
from isolates.sandbox import CompiledPolicy

from ._call import build_boot, compile_for
from ._context import MAX_FDS, is_async
from ._encode import decode_value, rebuild
from ._errors import WorkerFailed
from ._graph import ChannelSpec, Worker
from ._lifecycle import State
from ._messages import Boot, Failure, PeerRestarted
from ._orphans import reaping
from ._policies import worker_policy
from ._process import IsolateProcess

if TYPE_CHECKING:
    from ._supervisor import Supervisor


class Runner:
    """Drives one Worker through the lifecycle table, on the supervisor's behalf."""

    def __init__(self, supervisor: Supervisor, worker: Worker) -> None:
        self.sup = supervisor
        self.worker = worker
        self.proc: IsolateProcess | None = None
        self.spares: list[tuple[IsolateProcess, CompiledPolicy]] = []
        self.compiled: CompiledPolicy | None = None
        self.stopping = False
        self.thread: threading.Thread | None = None
        self._boot: Boot | None = None
        self._policy = worker_policy(worker.policy, channels=True, is_async=is_async(worker.fn))
        self._reaping = reaping(self._policy, worker.namespaces)

    # -- start ----------------------------------------------------------------------

    def spawn(self, spares: int) -> None:
        """Start the worker's interpreter (and spares for restarts), policies compiled."""
        self.proc, self.compiled = self._new_isolate()
        self.worker.pid = self.proc.pid
        self.worker.advance(State.SPAWNED)
        self.spares = [self._new_isolate() for _ in range(spares)]

    def _new_isolate(self) -> tuple[IsolateProcess, CompiledPolicy]:
        proc = IsolateProcess.spawn()
        return proc, compile_for(self._policy, proc.pid, self.worker.namespaces)

    def boot(self, ends: dict[str, Channel[Any]], barrier: socket.socket | None = None) -> None:
        """Send the boot message with this worker's channel ends (then close ours).

        The message is built once, before the supervisor confines itself (pickling and
        getcwd may be out of reach afterwards); a restart only swaps in the spare's
        compiled filter."""
        w, proc, compiled = self.worker, self._proc(), self.compiled
        assert compiled is not None
        if self._boot is None:
            types = {name: spec.message_type for name, spec in w.channels.items()}
            self._boot = build_boot(w.name, w.fn, (w.args, w.kwargs), compiled, w.namespaces,
                                    w.env, channels=types, context=True,
                                    reap=self._reaping)  # fmt: skip
        boot = msgspec.structs.replace(self._boot, bpf=compiled.bpf, barrier=barrier is not None)
        fds = [ends[name].fileno() for name in boot.channels]
        try:
            proc.boot(boot, [*fds, barrier.fileno()] if barrier is not None else fds)
        finally:
            for end in ends.values():
                end.close()
        w.advance(State.BOOTED)

    def wait_ready(self, deadline: float | None) -> None:
        try:
            ready = self._proc().wait_ready(deadline)
        except WorkerFailed:
            raise
        except Exception as exc:  # raised while booting: blame the worker, keep the cause
            raise _as_failure(self.worker.name, exc) from exc
        self.worker.status = ready.status()
        self.worker.namespace_status = ready.namespaces()
        self.worker.advance(State.READY)

    def released(self) -> None:
        """The supervisor's one barrier send released this worker."""
        self.worker.advance(State.RELEASED)

    def go(self) -> None:
        """Release this worker alone (a restart): a GO message."""
        self._proc().go()
        self.worker.advance(State.RELEASED)

    def start_waiting(self) -> None:
        self.thread = threading.Thread(
            target=self._wait_loop, name=f"isolates:{self.worker.name}", daemon=True
        )
        self.thread.start()

    # -- running --------------------------------------------------------------------

    def _wait_loop(self) -> None:
        try:
            while not self._one_run():
                pass
        finally:
            self.sup._worker_done(self.worker)

    def _one_run(self) -> bool:
        """Wait for the current isolate to end; True when the worker is done for good."""
        w, proc = self.worker, self._proc()
        try:
            outcome = proc.wait_outcome(None)
            proc.reap()
        except WorkerFailed as exc:
            return self._failed(exc)
        if isinstance(outcome, Failure):
            return self._failed(rebuild(outcome, w.name))
        try:
            w.result = decode_value(outcome.value, w.fn, w.name)
        except WorkerFailed as exc:
            return self._failed(exc)
        w.advance(State.EXITED)
        return True

    def _failed(self, exc: BaseException) -> bool:
        w = self.worker
        if self.stopping:  # asked to stop: however it ended, it stopped
            return self._mark_stopped()
        w.failure = exc if isinstance(exc, WorkerFailed) else _as_failure(w.name, exc)
        w.advance(State.FAILED)
        if w.restart.mode != "on-failure" or w.restarts >= w.restart.limit:
            return True
        try:
            self._restart()
        except WorkerFailed as again:
            if self.stopping:
                return self._mark_stopped()
            w.failure = again
            w.advance(State.FAILED)
            return True
        return False

    def _mark_stopped(self) -> bool:
        if self.worker.state is State.RELEASED:
            self.worker.advance(State.STOPPING)
        self.worker.advance(State.STOPPED)
        return True

    def _restart(self) -> None:
        w = self.worker
        w.advance(State.RESTARTING)
        time.sleep(w.restart.backoff * 2**w.restarts)
        if self.stopping:
            raise WorkerFailed(w.name, "was stopped while restarting")
        w.restarts += 1
        if self.spares:
            self.proc, self.compiled = self.spares.pop()
        else:
            self.proc, self.compiled = self._new_isolate()
        w.pid = self.proc.pid
        try:
            self.boot(self._renew_channels())
            self.wait_ready(None)
        except BaseException:  # it reported a failed boot and waits: end it, and its tree
            self.proc.kill()
            self.proc.reap()
            raise
        w.failure = None
        self.go()

    def _renew_channels(self) -> dict[str, Channel[Any]]:
        """Fresh channels for a restarted worker; each peer gets its new end."""
        ends = {}
        for name, spec in self.worker.channels.items():
            mine, theirs = open_pair(spec.message_type, max_fds=MAX_FDS, name=name)
            ends[name] = mine
            self.sup._hand_over(spec, self.worker, theirs)
        return ends

    # -- stopping -------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stopping = True
        for proc, _ in self.spares:
            proc.control.close()
            proc.reap(1.0)
        self.spares = []
        if self.proc is not None:
            self.proc.stop()

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            self.proc.signal(sig)

    def abort(self) -> None:
        """Kill and reap everything this runner started (a failed start)."""
        for proc in [self.proc, *(p for p, _ in self.spares)]:
            if proc is not None:
                proc.kill()
                proc.reap()

    def pids(self) -> list[int]:
        """The process groups this worker may have (its isolate and its spares)."""
        procs = [self.proc, *(p for p, _ in self.spares)]
        return [p.pid for p in procs if p is not None]

    def _proc(self) -> IsolateProcess:
        assert self.proc is not None, "the worker has no isolate yet"
        return self.proc


def _as_failure(name: str, exc: BaseException) -> WorkerFailed:
    failure = WorkerFailed(name, f"failed with {type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return failure


def send_peer(proc: IsolateProcess, spec: ChannelSpec, end: Channel[Any]) -> None:
    """Give a running peer the new end of a renewed channel."""
    try:
        proc.send(PeerRestarted(spec.name), fds=[end.fileno()])
    finally:
        end.close()


Callback = Callable[[Worker], None]

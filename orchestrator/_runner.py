"""Running one supervised worker: its isolate, its spares, its waiter thread, restarts.

A Runner reports what happens to its worker's Lifecycle (``_lifecycle.py``), which alone
moves the worker's state, and asks its owner (the Supervisor) for the two things it
cannot do alone through the ``Owner`` protocol.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from typing import Any, Protocol

import msgspec

from isolates.channels import Channel, ChannelError, open_pair
from isolates.sandbox import CompiledPolicy

from ._core.answers import Learned, with_denials
from ._core.boot_message import answers_for, build_boot, compile_for
from ._core.encode import decode_value, rebuild
from ._core.errors import WorkerFailed
from ._core.functions import is_async
from ._core.orphans import reaping
from ._core.policies import worker_policy
from ._core.process import IsolateProcess
from ._core.runtime import spawn_isolate
from ._core.wire import MAX_FDS, Boot, CompiledPolicyData, Failure, PeerRestarted, converted
from ._graph import ChannelSpec, Worker
from ._lifecycle import FINAL, State
from ._limits import exceeded


class Owner(Protocol):
    """What a Runner asks of the supervisor that owns it."""

    def worker_done(self, worker: Worker) -> None:
        """The worker's waiter thread is ending: its state is final for good."""

    def hand_over(self, spec: ChannelSpec, restarted: Worker, end: Channel[Any]) -> None:
        """Give the other party of ``spec`` its end of a channel renewed for ``restarted``."""


class Runner:
    """Drives one Worker through its lifecycle, on its owner's behalf."""

    def __init__(self, owner: Owner, worker: Worker, *, boot_timeout: float) -> None:
        self.owner = owner
        self.worker = worker
        self.life = worker.lifecycle
        self.boot_timeout = boot_timeout
        self.proc: IsolateProcess | None = None
        self.spares: list[tuple[IsolateProcess, CompiledPolicy]] = []
        self.compiled: CompiledPolicy | None = None
        self.thread: threading.Thread | None = None
        self._boot: Boot | None = None
        self._policy = worker_policy(worker.policy, channels=True, is_async=is_async(worker.fn))
        self._reaping = reaping(self._policy, worker.namespaces)
        if worker.learn and worker.learned is None:
            worker.learned = Learned(worker.policy, self._policy)

    # -- start ----------------------------------------------------------------------

    def spawn(self, spares: int) -> None:
        """Start the worker's interpreter (and spares for restarts), policies compiled."""
        self.proc, self.compiled = self._new_isolate()
        self.worker.pid = self.proc.pid
        self.life.spawned()
        self.spares = [self._new_isolate() for _ in range(spares)]

    def _new_isolate(self) -> tuple[IsolateProcess, CompiledPolicy]:
        """An interpreter for this worker and its policy compiled for it; with a
        processes limit, a fresh count of its own (a restart starts from zero), and a
        fresh record of its denials."""
        proc = spawn_isolate()
        w = self.worker
        ns, limit, reported = w.namespaces, w.limits.processes, w.report_denials
        answers = answers_for(self._policy, proc.pid, ns, limit, reported, w.learned)
        if answers is not None:
            proc.answer_by(answers)
        counted = limit is not None
        compiled = compile_for(
            self._policy, proc.pid, ns, counted=counted, reported=reported, learning=w.learn
        )
        return proc, compiled

    def boot(self, ends: dict[str, Channel[Any]], barrier: socket.socket | None = None) -> None:
        """Send the boot message with this worker's channel ends (then close ours)."""
        proc, compiled = self._proc(), self.compiled
        assert compiled is not None
        boot = self._boot_message(compiled, barrier=barrier is not None)
        fds = [ends[name].fileno() for name in boot.channels]
        try:
            proc.boot(boot, [*fds, barrier.fileno()] if barrier is not None else fds)
        finally:
            for end in ends.values():
                end.close()
        self.life.booted()

    def _boot_message(self, compiled: CompiledPolicy, *, barrier: bool) -> Boot:
        """Built once, before the supervisor confines itself (pickling and getcwd may be
        out of reach afterwards); a restart only swaps in the spare's compiled policy."""
        if self._boot is None:
            w = self.worker
            types = {name: spec.message_type for name, spec in w.channels.items()}
            arguments = (w.args, w.kwargs)
            self._boot = build_boot(
                w.name,
                w.fn,
                arguments,
                compiled,
                w.namespaces,
                w.env,
                channels=types,
                supervised=True,
                reap=self._reaping,
                capabilities=w.capabilities,
                rlimits=w.limits.rlimits(),
            )
        policy = converted(compiled, CompiledPolicyData)
        return msgspec.structs.replace(self._boot, policy=policy, barrier=barrier)

    def wait_ready(self, deadline: float | None) -> None:
        """READY, or the boot's failure as WorkerFailed (the caller reports it)."""
        try:
            status, namespaces = self._proc().wait_ready(deadline)
        except WorkerFailed:
            raise
        except Exception as exc:  # raised while booting: blame the worker, keep the cause
            raise _as_failure(self.worker.name, exc) from exc
        limits = self.worker.limits.in_force()
        self.worker.status = dataclasses.replace(status, limits=limits)
        self.worker.namespace_status = namespaces
        self.life.ready()

    def released(self) -> None:
        """The supervisor's one barrier send released this worker."""
        self.life.released()

    def start_waiting(self) -> None:
        self.thread = threading.Thread(
            target=self._wait_loop, name=f"isolates:{self.worker.name}", daemon=True
        )
        self.thread.start()

    def abort(self, cause: BaseException) -> None:
        """The start failed (``cause``): kill and reap everything this runner started.
        The worker whose failure ``cause`` is failed; every other one stopped."""
        for proc in [self.proc, *(p for p, _ in self.spares)]:
            if proc is not None:
                proc.kill()
                proc.reap()
        if self.worker.state in FINAL:
            return
        if isinstance(cause, WorkerFailed) and cause.name == self.worker.name:
            self._fail(cause)
        else:
            self.life.stopped()

    # -- running --------------------------------------------------------------------

    def _wait_loop(self) -> None:
        try:
            while not self._one_run():
                pass
        except BaseException as exc:  # a bug: never leave the worker alive forever
            if self.worker.state not in FINAL:
                self._fail(_as_failure(self.worker.name, exc))
            raise
        finally:
            self.owner.worker_done(self.worker)

    def _one_run(self) -> bool:
        """Wait for the current isolate to end; True when the worker is done for good."""
        w, proc = self.worker, self._proc()
        wall = w.limits.wall_time
        try:
            outcome = proc.wait_outcome(None if wall is None else time.monotonic() + wall)
            proc.reap()
            if isinstance(outcome, Failure):
                raise rebuild(outcome, w.name)
            w.result = decode_value(outcome.value, w.fn, w.name, outcome.shape)
        except Exception as exc:  # the worker's exception, or how its isolate ended
            return self._ended_without_value(exc)
        self.life.exited()
        return True

    def _ended_without_value(self, exc: BaseException) -> bool:
        """Failed for good, stopped, or restarted; True when the worker is done for good."""
        w = self.worker
        count = self.proc.processes if self.proc is not None else None
        failure = _as_failure(
            w.name, exceeded(exc, w.name, w.limits, None if count is None else count.refused)
        )
        if self.proc is not None:
            with_denials(failure, w.name, self.proc.answers)
        if self._fail(failure) is not State.FAILED:
            return True  # stopped
        if not w.restart.allows(w.restarts):
            return True
        return not self._restart()

    def _fail(self, failure: WorkerFailed) -> State:
        """Report an end without a value: FAILED with ``failure`` (or STOPPED, if a stop
        was requested). The state reached."""
        if not self.life.stopping:
            self.worker.failure = failure
        return self.life.failed()

    def _restart(self) -> bool:
        """Start the worker again; False (the failure reported) if that failed."""
        w = self.worker
        self.life.restarting()
        time.sleep(w.restart.backoff * 2**w.restarts)
        try:
            if self.life.stopping:
                raise WorkerFailed(w.name, "was stopped while restarting")
            w.restarts += 1
            self._start_again()
        except Exception as exc:
            self._fail(_as_failure(w.name, exc))
            return False
        w.failure = None
        return True

    def _start_again(self) -> None:
        """Boot a spare (or a new isolate) with fresh channels, within the boot timeout,
        and release it alone (a GO message)."""
        self.proc, self.compiled = self.spares.pop() if self.spares else self._new_isolate()
        self.worker.pid = self.proc.pid
        try:
            self.boot(self._renew_channels())
            self.wait_ready(time.monotonic() + self.boot_timeout)
            self.proc.go()
        except BaseException:  # it failed to boot, or died meanwhile: end it, and its tree
            self.proc.kill()
            self.proc.reap()
            raise
        self.life.released()

    def _renew_channels(self) -> dict[str, Channel[Any]]:
        """Fresh channels for a restarted worker; each peer gets its new end."""
        ends = {}
        for name, spec in self.worker.channels.items():
            mine, theirs = open_pair(spec.message_type, max_fds=MAX_FDS, name=name)
            ends[name] = mine
            self.owner.hand_over(spec, self.worker, theirs)
        return ends

    def give_renewed_end(self, spec: ChannelSpec, end: Channel[Any]) -> None:
        """Give this (running) worker the new end of ``spec``, renewed for its peer."""
        proc = self.proc
        try:
            if proc is not None and self.worker.state not in FINAL:
                proc.send(PeerRestarted(spec.name), fds=[end.fileno()])
        except ChannelError:  # it ended meanwhile: its own waiter thread reports that
            pass
        finally:
            end.close()

    # -- stopping -------------------------------------------------------------------

    def request_stop(self) -> None:
        self.life.stop_requested()
        for proc, _ in self.spares:
            proc.control.close()
            proc.reap(1.0)
        self.spares = []
        if self.proc is not None:
            self.proc.stop()

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            self.proc.signal(sig)

    def pids(self) -> list[int]:
        """The process groups this worker may have (its isolate and its spares)."""
        procs = [self.proc, *(p for p, _ in self.spares)]
        return [p.pid for p in procs if p is not None]

    def _proc(self) -> IsolateProcess:
        assert self.proc is not None, "the worker has no isolate yet"
        return self.proc


def _as_failure(name: str, exc: BaseException) -> WorkerFailed:
    if isinstance(exc, WorkerFailed):
        return exc
    failure = WorkerFailed(name, f"failed with {type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return failure

"""The Supervisor: declare a worker graph, start it behind a barrier, run, stop."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

import anyio

from isolates.channels import Channel, Codec, LocalChannelError, open_pair
from isolates.sandbox import Policy, PolicyError, Status
from isolates.sandbox.lowlevel import capability_numbers, lower_rlimits

from ._core.errors import WorkerFailed
from ._core.orphans import confine_to, restore
from ._core.policies import supervisor_rules
from ._core.runtime import MONITOR, SPAWNER
from ._core.wire import GO_BYTE, MAX_FDS
from ._graph import MAX_RESTARTS, ChannelSpec, GraphError, Restart, Worker, check_worker
from ._lifecycle import FINAL, State
from ._limits import Limits, unified
from ._namespaces.options import Namespaces
from ._runner import Runner

#: One party to a channel: a worker (or its name), or the supervisor itself.
Party: TypeAlias = "Worker | str | Supervisor"


class Supervisor:
    """A graph of workers, each in its own isolate, and the supervisor's own context.

    ::

        sup = Supervisor(policy=Policy(SystemIO.nothing().allow_stderr()))
        web = sup.add_worker("web", serve, policy=web_policy, namespaces=Namespaces(net=False))
        writer = sup.add_worker("writer", write_files, policy=writer_policy)
        sup.connect(web, writer, WriteRequest)
        results = sup.run()

    ``start()`` spawns every worker; each loads its own namespaces, Landlock and seccomp
    and reports READY; then the supervisor loads ``policy`` (all threads), and only then
    releases the workers (GO). If a worker fails before READY, none is released, all are
    stopped and the first cause is raised. ``policy=None`` leaves the supervisor
    unconfined (the barrier still holds). ``limits``: the default of workers declared
    without their own; ``own_limits``: this process's own rlimits (memory, CPU time, open
    files, file size, core, stack), set once every worker is READY, before its policy:
    a worker started later (a restart without a spare) inherits them as its ceiling.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        boot_timeout: float = 30.0,
        grace: float = 5.0,
        limits: Limits | None = None,
        own_limits: Limits | None = None,
    ) -> None:
        if policy is not None and not isinstance(policy, Policy):
            raise PolicyError(f"Supervisor(policy={policy!r}): a Policy or None")
        self.policy = policy
        #: The limits of a worker declared without its own.
        self.limits = unified(limits, None, ())
        #: The supervisor's own (this process's), set when its workers are READY.
        self.own_limits = _own(own_limits)
        self.boot_timeout = boot_timeout
        self.grace = grace
        self.workers: dict[str, Worker] = {}
        self.status: Status | None = None
        self.release_seconds: float | None = None
        self._specs: dict[str, ChannelSpec] = {}
        self._ours: dict[str, Channel[Any]] = {}
        self._runners: dict[str, Runner] = {}
        self._changed = threading.Condition()
        self._started = False
        self._stopped = False
        self._barrier: tuple[socket.socket, socket.socket] | None = None

    # -- declaring ------------------------------------------------------------------

    def add_worker(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        policy: Policy | None = None,
        namespaces: Namespaces | None = None,
        env: Mapping[str, str] | None = None,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        restart: Restart | str = "never",
        capabilities: Iterable[str] = (),
        limits: Limits | None = None,
        report_denials: bool = True,
        learn: bool = False,
    ) -> Worker:
        """Declare a worker: ``fn(ctx, *args, **kwargs)`` runs in its own isolate.

        ``capabilities``: the few it keeps (capabilities(7) names, e.g.
        ``{"NET_BIND_SERVICE"}``); it drops every other before it runs. ``limits``: what
        it may consume (default: the supervisor's ``limits``); its ``wall_time`` counts
        from each start, restarts included. ``report_denials``: the calls its policy
        fails with an errno are recorded (at a round trip to this process each) and
        shown on its failure; False: they fail in the kernel alone. ``learn``: what
        its policy would deny is let run (but the guards; no Landlock is loaded) and
        learned: ``worker.learned.policy()`` is the policy widened by exactly that."""
        self._not_started("add a worker")
        policy = Policy() if policy is None else policy
        check_worker(name, fn, policy, namespaces, env, self.workers)
        keep = capability_numbers(capabilities)
        bounds = unified(limits if limits is not None else self.limits, None, keep)
        worker = Worker(
            name,
            fn,
            policy,
            namespaces,
            dict(env or {}),
            tuple(args),
            dict(kwargs or {}),
            Restart.parse(restart, name),
            capabilities=keep,
            limits=bounds,
            report_denials=report_denials,
            learn=learn,
        )
        self.workers[name] = worker
        return worker

    def connect(self, a: Party, b: Party, message_type: Any, *, name: str | None = None) -> str:
        """A typed channel between two workers, or a worker and this supervisor.

        Both ends see it as ``ctx.channel(name)`` (the supervisor as ``channel(name)``);
        the default name is ``"<a>-<b>"``. Descriptors can travel on every channel.
        """
        self._not_started("connect workers")
        wa, wb = self._resolve(a), self._resolve(b)
        if (wa is None and wb is None) or wa is wb:
            raise GraphError(f"connect({a!r}, {b!r}): a channel joins two different parties")
        name = name or f"{_label(wa)}-{_label(wb)}"
        for w in (wa, wb):
            if w is not None and name in w.channels:
                raise GraphError(f"worker {w.name!r} already has a channel named {name!r}")
        try:
            Codec(message_type, name=name)  # validates the type now, without a socket
        except LocalChannelError as exc:
            raise GraphError(f"channel {name!r}: {exc}") from None
        spec = ChannelSpec(name, wa, wb, message_type)
        for w in (wa, wb):
            if w is not None:
                w.channels[name] = spec
        self._specs[name] = spec
        return name

    def _resolve(self, party: Party) -> Worker | None:
        if party is self:
            return None
        key = party.name if isinstance(party, Worker) else party
        worker = self.workers.get(key) if isinstance(key, str) else None
        if worker is None or (isinstance(party, Worker) and worker is not party):
            raise GraphError(f"connect: {party!r} is not a worker of this supervisor")
        return worker

    def channel(self, name: str) -> Channel[Any]:
        """The supervisor's end of channel ``name`` (after ``start()``)."""
        try:
            return self._ours[name]
        except KeyError:
            raise KeyError(
                f"the supervisor has no channel {name!r} (started: {self._started})"
            ) from None

    # -- starting -------------------------------------------------------------------

    def start(self) -> None:
        """Spawn every worker, wait for all READY, confine this process, release all."""
        self._not_started("start")
        self._started = True
        self._runners = {
            name: Runner(self, w, boot_timeout=self.boot_timeout)
            for name, w in self.workers.items()
        }
        try:
            self._boot_all()
            if self.own_limits is not None:
                lower_rlimits(self.own_limits.rlimits())
            if self.policy is not None:
                self.status = self._confine()
        except BaseException as exc:
            self._abort(exc)
            raise
        self.release_seconds = self._release_all()
        for runner in self._runners.values():
            runner.start_waiting()

    def _release_all(self) -> float:
        """GO: one byte per worker, in one send on the socket they all wait on; how long
        that send took (``release_seconds``)."""
        assert self._barrier is not None
        ours, theirs = self._barrier
        theirs.close()
        start = time.perf_counter()
        ours.sendall(GO_BYTE * len(self._runners))
        elapsed = time.perf_counter() - start
        ours.close()
        for runner in self._runners.values():
            runner.released()
        return elapsed

    def _confine(self) -> Status:
        """Load the supervisor's policy on every thread. Seccomp synchronises threads
        itself; Landlock (before ABI 8) binds only the thread that applies it, so our
        helper threads take it too: the spawner applies it itself, the monitor thread
        is started again from this confined one."""
        assert self.policy is not None
        groups = [pid for runner in self._runners.values() for pid in runner.pids()]
        counts = any(w.limits.processes is not None for w in self.workers.values())
        own = self.policy.extend(*supervisor_rules(groups, self.policy if counts else None))
        compiled = own.compile(all_threads=True)
        # From now on, ending a worker's process tree uses only the calls this policy
        # allows: the worker's process group, no /proc, no new pidfds (see orphans.py).
        unconfined = confine_to(groups)
        MONITOR.pause()
        try:
            covered = [SPAWNER.run(compiled.apply_landlock_here)]
            return compiled.apply(all_threads=True, covered=covered)
        except BaseException:
            restore(unconfined)
            raise
        finally:
            MONITOR.resume()

    def _boot_all(self) -> None:
        spares = MAX_RESTARTS if self.policy is not None else 0
        for runner in self._runners.values():
            limit = runner.worker.restart.limit
            runner.spawn(min(limit, spares))
        ends = self._open_channels()
        self._barrier = socket.socketpair()
        for name, runner in self._runners.items():
            runner.boot(ends[name], barrier=self._barrier[1])
        deadline = time.monotonic() + self.boot_timeout
        for runner in self._runners.values():
            runner.wait_ready(deadline)

    def _open_channels(self) -> dict[str, dict[str, Channel[Any]]]:
        ends: dict[str, dict[str, Channel[Any]]] = {name: {} for name in self.workers}
        for spec in self._specs.values():
            first, second = open_pair(spec.message_type, max_fds=MAX_FDS, name=spec.name)
            for party, end in ((spec.a, first), (spec.b, second)):
                if party is None:
                    self._ours[spec.name] = end
                else:
                    ends[party.name][spec.name] = end
        return ends

    # -- what its runners ask of it (the Runner's Owner protocol) ---------------------

    def hand_over(self, spec: ChannelSpec, restarted: Worker, end: Channel[Any]) -> None:
        """Give the other party of ``spec`` its end of a channel renewed for the
        ``restarted`` worker (called by that worker's runner)."""
        peer = spec.other(restarted)
        if peer is not None:
            self._runners[peer.name].give_renewed_end(spec, end)
            return
        old = self._ours.get(spec.name)
        self._ours[spec.name] = end
        if old is not None:
            old.close()

    def worker_done(self, worker: Worker) -> None:
        """A worker's waiter thread ends (called by its runner): wake ``join``/``stop``."""
        with self._changed:
            self._changed.notify_all()

    def _abort(self, cause: BaseException) -> None:
        for runner in self._runners.values():
            runner.abort(cause)
        for sock in self._barrier or ():
            sock.close()
        for end in self._ours.values():
            end.close()

    # -- running and stopping --------------------------------------------------------

    def join(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until every worker has ended; their results by name.

        If a worker fails for good, the others are stopped and its WorkerFailed (or
        IsolateViolation) is raised. On timeout, raises TimeoutError (workers keep running).
        """
        return self._join(None if timeout is None else time.monotonic() + timeout, timeout)

    def _join(self, deadline: float | None, timeout: float | None) -> dict[str, Any]:
        with self._changed:
            while True:
                failed = self._first_failure()
                if failed is not None or self._all_final():
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"still running after {timeout:g} s: {self._running()}")
                self._changed.wait(left)
        if failed is not None:
            self.stop()
            raise failed
        self._close_ours()
        return {name: w.result for name, w in self.workers.items()}

    def _running(self) -> str:
        """The workers not yet ended, with their states ("'web' (released)")."""
        return ", ".join(
            f"{w.name!r} ({w.state.value})" for w in self.workers.values() if w.state not in FINAL
        )

    def _first_failure(self) -> WorkerFailed | None:
        for w in self.workers.values():
            thread = self._runners[w.name].thread
            if w.state is State.FAILED and w.failure and not (thread and thread.is_alive()):
                return w.failure
        return None

    def _all_final(self) -> bool:
        return all(w.state in FINAL for w in self.workers.values()) and not any(
            r.thread is not None and r.thread.is_alive() for r in self._runners.values()
        )

    def run(self, timeout: float | None = None) -> dict[str, Any]:
        """``start()``, then ``join()``; stops every worker on Ctrl-C or any error.
        ``timeout`` counts from this call, the start included."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.start()
        try:
            return self._join(deadline, timeout)
        except BaseException:
            self.stop()
            raise

    def request_stop(self, name: str) -> None:
        """Ask one worker to stop (a Stop message: it sees ``ctx.stopping``); no escalation.

        Its peers then see its channels close. ``stop()`` stops every worker for good.
        """
        if name not in self._runners:
            raise KeyError(f"no worker {name!r} is running under this supervisor")
        self._runners[name].request_stop()

    def stop(self, grace: float | None = None) -> None:
        """A Stop message, then SIGTERM, then SIGKILL, ``grace`` seconds apart in all."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        grace = self.grace if grace is None else grace
        for runner in self._runners.values():
            runner.request_stop()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self._wait_final(grace / 2):
                break
            for runner in self._runners.values():
                runner.signal(sig)
        for runner in self._runners.values():
            if runner.thread is not None:
                runner.thread.join()
        self._close_ours()

    def _wait_final(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        with self._changed:
            while not self._all_final():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _close_ours(self) -> None:
        for end in self._ours.values():
            end.close()

    def _not_started(self, what: str) -> None:
        if self._started:
            raise RuntimeError(f"cannot {what}: the supervisor has already started")

    # -- context managers -------------------------------------------------------------

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Supervisor:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)

    async def wait(self) -> dict[str, Any]:
        """``join()`` under anyio: the results, or the first failure."""
        return await anyio.to_thread.run_sync(self.join, abandon_on_cancel=True)


def _own(limits: Limits | None) -> Limits | None:
    """The supervisor's own limits, checked: rlimits only. Nothing above it counts its
    processes (its policy bounds what it starts), and its wall time is ``run(timeout=)``."""
    if limits is None:
        return None
    checked = unified(limits, None, ())
    for field, instead in (("processes", "its policy"), ("wall_time", "run(timeout=...)")):
        if getattr(checked, field) is not None:
            raise PolicyError(
                f"Supervisor(own_limits=): Limits.{field} cannot bound the supervisor "
                f"itself; use {instead}"
            )
    return checked


def _label(w: Worker | None) -> str:
    return "supervisor" if w is None else w.name

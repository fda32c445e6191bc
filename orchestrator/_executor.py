"""``IsolateExecutor``: a ``concurrent.futures.Executor`` whose every call runs in a
fresh, sandboxed, single-use isolate (the one-call machinery of ``@isolate``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from isolates.sandbox import Landlock, Policy, PolicyError
from isolates.sandbox.lowlevel import capability_numbers

from ._call import IsolatedCall, IsolatePlan, Options, check_start
from ._core.functions import unwrap
from ._limits import Limits, unified
from ._namespaces.options import Namespaces

P = ParamSpec("P")
R = TypeVar("R")

_PLANS = 256  # functions whose plan an executor keeps


class IsolateFuture(Future[R]):
    """A Future whose ``cancel()`` also works while the call runs: it kills the isolate.

    The stdlib Future refuses to cancel a RUNNING call (a thread cannot be stopped); an
    isolate can be. So this one stays PENDING while its isolate runs (``running()`` still
    says it runs) and turns RUNNING only for the instant its outcome is set: until then
    ``cancel()`` succeeds, and SIGKILLs the isolate if it has started.
    """

    def __init__(self, call: IsolatedCall) -> None:
        super().__init__()
        self.call = call
        self.began = False  # set by the worker thread once it has taken the call

    def running(self) -> bool:
        return self.began and not self.done()

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self.call.cancel()  # kills a started isolate; one not yet started never starts
        return True


class IsolateExecutor(Executor):
    """Run each submitted call in a fresh isolate confined by ``policy``.

    Takes what ``@isolate(...)`` takes (``policy``, ``timeout``, ``env``, ``landlock``,
    ``namespaces``, ``start``, ``capabilities``, ``limits``), applied to every call, plus
    ``max_workers``: how many isolates run at once (default ``os.cpu_count()``). Results
    and errors are those of ``@isolate``: builtin exceptions re-raised, others as
    WorkerFailed with the remote traceback, seccomp violations as IsolateViolation.
    ``future.cancel()`` cancels a pending call and kills a running one.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        max_workers: int | None = None,
        timeout: float | None = None,
        namespaces: Namespaces | None = None,
        env: Mapping[str, str] | None = None,
        landlock: Landlock | None = None,
        start: str = "auto",
        capabilities: Iterable[str] = (),
        limits: Limits | None = None,
        report_denials: bool = True,
    ) -> None:
        if policy is not None and not isinstance(policy, Policy):
            raise PolicyError(f"IsolateExecutor takes a Policy, not {policy!r}")
        workers = (os.cpu_count() or 1) if max_workers is None else max_workers
        if workers <= 0:
            raise ValueError(f"max_workers must be > 0, not {max_workers}")
        base = policy or Policy()
        self._policy = base.extend(landlock) if landlock is not None else base
        self._timeout, self._env, self._namespaces = timeout, dict(env or {}), namespaces
        self._start = check_start(start)
        self._capabilities = capability_numbers(capabilities)
        self._limits = unified(limits, timeout, self._capabilities)
        self._report_denials = report_denials
        self._timeout = self._limits.wall_time
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="IsolateExecutor")
        self._plans: dict[Callable[..., Any], IsolatePlan] = {}
        self._pending: set[IsolateFuture[Any]] = set()
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Run ``fn(*args, **kwargs)`` in a fresh isolate; its Future."""
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot submit to an IsolateExecutor after shutdown()")
            future: IsolateFuture[R] = IsolateFuture(IsolatedCall(fn, args, kwargs, self._plan(fn)))
            self._pending.add(future)
            self._threads.submit(self._run, future)
        return future

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[R]:
        """As ``Executor.map``: results in order; ``chunksize`` is ignored (one isolate
        serves one call, so there is nothing to batch)."""
        return super().map(fn, *iterables, timeout=timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; ``cancel_futures`` cancels those not yet started; ``wait``
        waits until every running call has finished and its isolate is reaped."""
        with self._lock:
            self._shut = True
            pending = list(self._pending) if cancel_futures else []
        for future in pending:
            if not future.began:  # as the stdlib: a running call is left to finish
                future.cancel()
        self._threads.shutdown(wait=wait)

    def _plan(self, fn: Callable[..., Any]) -> IsolatePlan:
        # One plan per function, so its compiled filter is cached across its calls; the
        # cache is bounded, as a caller may submit a new partial() or bound method each time.
        plan = self._plans.get(fn)
        if plan is None:
            if len(self._plans) >= _PLANS:
                self._plans.clear()
            name = getattr(unwrap(fn), "__qualname__", "isolate")
            options = Options(
                self._policy,
                self._timeout,
                self._env,
                self._namespaces,
                name,
                self._start,
                self._capabilities,
                self._limits,
                self._report_denials,
            )
            plan = self._plans[fn] = IsolatePlan(options, unwrap(fn))
        return plan

    def _run(self, future: IsolateFuture[Any]) -> None:
        try:
            future.began = True
            if future.cancelled():
                return
            try:
                value = future.call.run()
            except BaseException as exc:
                _settle(future, future.set_exception, exc)
            else:
                _settle(future, future.set_result, value)
        finally:
            with self._lock:
                self._pending.discard(future)


def _settle(future: Future[Any], settle: Callable[[Any], None], outcome: Any) -> None:
    """Set the outcome unless ``cancel()`` came first (then what the killed call raised
    on dying is not its outcome: it stays cancelled)."""
    if future.set_running_or_notify_cancel():
        settle(outcome)

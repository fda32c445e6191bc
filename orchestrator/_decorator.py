"""``@isolate``: call a function in a fresh, sandboxed, single-use interpreter."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, overload

from isolates.sandbox import Landlock, Policy, PolicyError
from isolates.sandbox.lowlevel import capability_numbers

from ._call import IsolatedCall, IsolatePlan, Options, check_start
from ._core.answers import Learned
from ._core.functions import identity
from ._limits import Limits, unified
from ._namespaces.options import Namespaces

P = ParamSpec("P")
R = TypeVar("R")


class IsolatedFunction(Generic[P, R]):
    """A function that runs in a fresh isolate each time it is called.

    ``f(...)`` blocks and returns its value (or raises its exception, or WorkerFailed /
    IsolateViolation); ``await f.aio(...)`` does the same under anyio (asyncio or trio;
    cancelling kills the isolate); ``f.local(...)`` runs it here, unconfined, for tests.
    """

    def __init__(self, fn: Callable[P, R], options: Options) -> None:
        self.__wrapped__ = fn
        self.options = options
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = IsolatedCall(self, args, kwargs, self._plan).run()
        return result

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        import anyio.to_thread

        call = IsolatedCall(self, args, kwargs, self._plan)
        try:
            result: R = await anyio.to_thread.run_sync(call.run, abandon_on_cancel=True)
        except BaseException:
            call.cancel()
            raise
        return result

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__wrapped__(*args, **kwargs)

    @property
    def learned(self) -> Learned:
        """What its calls learned (``learn=True``): ``.calls``, ``.resources`` and
        ``.policy()``, the policy widened by exactly what they were let do."""
        learned = self._plan.learned
        if learned is None:
            name = getattr(self.__wrapped__, "__qualname__", "this function")
            raise AttributeError(f"{name} does not learn: decorate it with learn=True")
        return learned

    @functools.cached_property
    def _plan(self) -> IsolatePlan:
        """Worked out on the first call, not when the module defining us is imported."""
        return IsolatePlan(self.options, self.__wrapped__)

    def __reduce__(self) -> str | tuple[Any, ...]:
        # By reference when the module defines us under our name: whoever unpickles us
        # imports that module and finds us there. Otherwise by value, with our options
        # (the policy as its policy file): unpickled elsewhere (a Dask or Ray worker),
        # we are still an isolated function, under our own policy, not the bare one.
        fn = self.__wrapped__
        module = sys.modules.get(fn.__module__)
        if fn.__module__ != "__main__" and _lookup(module, fn.__qualname__) is self:
            return fn.__qualname__
        return (IsolatedFunction, (fn, self.options))

    def __reduce_for_isolate__(self) -> tuple[Any, ...]:
        """How the orchestrator pickles us into an isolate (encode.py): as the function
        we wrap, which runs there under that isolate's policy, as it always has."""
        return (identity, (self.__wrapped__,))

    def __repr__(self) -> str:
        return f"<isolated function {self.__wrapped__.__qualname__}>"


def _lookup(module: object, qualname: str) -> object:
    for part in qualname.split("."):
        module = getattr(module, part, None)
    return module


@overload
def isolate(
    policy: Callable[P, R],
    /,
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    landlock: Landlock | None = None,
    namespaces: Namespaces | None = None,
    name: str | None = None,
    start: str = "auto",
    capabilities: Iterable[str] = (),
    limits: Limits | None = None,
    report_denials: bool = True,
    learn: bool = False,
) -> IsolatedFunction[P, R]: ...
@overload
def isolate(
    policy: Policy | None = None,
    /,
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    landlock: Landlock | None = None,
    namespaces: Namespaces | None = None,
    name: str | None = None,
    start: str = "auto",
    capabilities: Iterable[str] = (),
    limits: Limits | None = None,
    report_denials: bool = True,
    learn: bool = False,
) -> Callable[[Callable[P, R]], IsolatedFunction[P, R]]: ...
def isolate(
    policy: Policy | Callable[..., Any] | None = None,
    /,
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    landlock: Landlock | None = None,
    namespaces: Namespaces | None = None,
    name: str | None = None,
    start: str = "auto",
    capabilities: Iterable[str] = (),
    limits: Limits | None = None,
    report_denials: bool = True,
    learn: bool = False,
) -> Any:
    """Run the decorated function in a fresh isolate confined by ``policy``.

    ``@isolate`` alone means ``Policy()``: compute only. ``timeout`` (seconds) kills the
    isolate and raises WorkerFailed; ``env`` is its whole environment; ``landlock`` adds
    Landlock rights (and the syscalls they need) to the policy; ``namespaces`` puts it in
    new namespaces. Arguments go in by pickle; the return value comes back as msgspec
    data, typed by the function's return annotation. ``start``: ``"fork-server"``
    (forked from a clean pre-started interpreter: fastest per call), ``"exec"`` (a fresh
    interpreter per call, which shares nothing with its siblings) or ``"auto"`` (the
    default: exec until the fork server, started after the first call, runs); see
    docs/orchestrator.md. ``capabilities``: the few the isolate keeps (capabilities(7)
    names, e.g. ``{"NET_BIND_SERVICE"}``); it drops every other before it runs, even
    when started by root. ``limits``: a ``Limits`` (memory, CPU time, processes, open
    files, file size, core, stack, wall time; ``timeout`` is its wall time); going over
    one raises ResourceExceeded.
    """
    if callable(policy) and not isinstance(policy, Policy):  # isolate(fn, timeout=...)
        return isolate(
            timeout=timeout,
            env=env,
            landlock=landlock,
            namespaces=namespaces,
            name=name,
            start=start,
            capabilities=capabilities,
            limits=limits,
            report_denials=report_denials,
            learn=learn,
        )(policy)
    if policy is not None and not isinstance(policy, Policy):
        raise PolicyError(f"@isolate takes a Policy, not {policy!r}: @isolate(Policy(...))")
    base = policy or Policy()
    full = base.extend(landlock) if landlock is not None else base
    check_start(start)
    keep = capability_numbers(capabilities)
    bounds = unified(limits, timeout, keep)

    def decorate(fn: Callable[P, R]) -> IsolatedFunction[P, R]:
        label = name or fn.__qualname__
        wall = bounds.wall_time
        options = Options(
            full, wall, dict(env or {}), namespaces, label, start, keep, bounds, report_denials,
            learn,
        )  # fmt: skip
        return IsolatedFunction(fn, options)

    return decorate

"""isolates.ray: the body of each Ray task in a fresh isolate.

A Ray worker process runs task after task of the same job, all with the worker's
rights; ``max_calls=1`` gives each task a fresh worker, but an unconfined one.
``isolated_remote`` is ``ray.remote`` whose task body runs in a fresh isolate inside the
Ray worker::

    @isolated_remote(policy=Policy(...), limits=Limits(memory="512M"), num_cpus=1)
    def parse(blob: bytes) -> dict[str, str]: ...

    ray.get(parse.remote(blob))

What is confined is the task's function, not the Ray worker: the worker still talks to
its raylet, fetches the arguments and stores the result (Ray's own IPC is left alone);
only the call ``fn(*args, **kwargs)``, its arguments already resolved, runs in the
isolate. Its value comes back as msgspec data, as from any ``@isolate`` call (nothing
the isolate sends is unpickled), then goes into Ray's object store as usual. A failure
is the task's exception on the driver (``RayTaskError`` over it), with a note naming
the Ray worker.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, overload

import ray

from isolates.orchestrator import IsolatedFunction, Limits, Namespaces, isolate
from isolates.sandbox import Landlock, Policy

__all__ = ["isolated_remote"]


@overload
def isolated_remote(fn: Callable[..., Any], /) -> Any: ...
@overload
def isolated_remote(
    *,
    policy: Policy | None = None,
    limits: Limits | None = None,
    timeout: float | None = None,
    namespaces: Namespaces | None = None,
    env: Mapping[str, str] | None = None,
    landlock: Landlock | None = None,
    start: str = "auto",
    capabilities: Iterable[str] = (),
    report_denials: bool = True,
    **ray_options: Any,
) -> Callable[[Callable[..., Any]], Any]: ...
def isolated_remote(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    policy: Policy | None = None,
    limits: Limits | None = None,
    timeout: float | None = None,
    namespaces: Namespaces | None = None,
    env: Mapping[str, str] | None = None,
    landlock: Landlock | None = None,
    start: str = "auto",
    capabilities: Iterable[str] = (),
    report_denials: bool = True,
    **ray_options: Any,
) -> Any:
    """``ray.remote`` for a function whose every call runs in a fresh isolate.

    Takes ``@isolate``'s keywords (the policy and its options) and ``ray.remote``'s
    (``num_cpus``, ``max_retries``, ``max_calls``...); ``.options()`` works on the result
    as on any remote function. Bare ``@isolated_remote`` means ``Policy()``: compute only.
    """
    options: dict[str, Any] = {
        "limits": limits,
        "timeout": timeout,
        "namespaces": namespaces,
        "env": dict(env or {}),
        "landlock": landlock,
        "start": start,
        "capabilities": tuple(capabilities),
        "report_denials": report_denials,
    }
    # The policy travels as its policy file (what a pickled Policy is too), loaded back
    # once per Ray worker to the same filter and Landlock plan.
    text = (policy or Policy()).to_toml()

    def decorate(fn: Callable[..., Any]) -> Any:
        if isinstance(fn, IsolatedFunction):
            # Two policies, the function's and isolated_remote's: say which.
            raise TypeError(
                f"{fn!r} is already @isolate'd: give its policy to isolated_remote instead"
            )
        isolate(Policy.from_toml(text), **options)(fn)  # mistakes raise here, not remotely
        body = _body(fn, text, options)
        return ray.remote(**ray_options)(body) if ray_options else ray.remote(body)

    return decorate if fn is None else decorate(fn)


def _body(fn: Callable[..., Any], text: str, options: dict[str, Any]) -> Callable[..., Any]:
    """The function Ray runs: it travels by value with what it closes over (the policy
    as text), and builds the isolated function once per Ray worker, on its first task."""
    isolated: IsolatedFunction[..., Any] | None = None

    @functools.wraps(fn)
    def body(*args: Any, **kwargs: Any) -> Any:
        nonlocal isolated
        if isolated is None:
            isolated = isolate(Policy.from_toml(text), **options)(fn)
        try:
            return isolated(*args, **kwargs)
        except Exception as exc:
            # Ray sends the driver the traceback text (the isolate's own, the
            # RemoteTraceback, is its __cause__, so it is in there) and the exception.
            context = ray.get_runtime_context()
            exc.add_note(f"in an isolate on Ray worker {context.get_worker_id()[:12]} "
                         f"(pid {os.getpid()}) on node {context.get_node_id()[:12]}")  # fmt: skip
            raise

    return body

"""The user's function as the isolate runs it: unwrapped, called (with its context first
when it is a Supervisor's worker), under anyio when it is ``async def``.

Light on purpose: the isolate imports this before confinement, and ``inspect`` alone
would cost it about 15 ms.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing at run time: see above
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final


def call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any) -> Any:
    """Run the worker's function (with its context first, if it takes one)."""
    full = (ctx, *args) if ctx is not None else args
    if is_async(fn):
        import anyio

        return anyio.run(lambda: fn(*full, **kwargs))
    return fn(*full, **kwargs)


_CO_COROUTINE: Final = 0x80  # inspect.CO_COROUTINE (inspect itself costs ~15 ms to import)


def identity(fn: Any) -> Any:
    """Unpickles an isolated function as the function it wraps (see IsolatedFunction)."""
    return fn


def unwrap(fn: Any) -> Any:
    """``inspect.unwrap``: follow ``__wrapped__`` to the function itself."""
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


def is_async(fn: Any) -> bool:
    """``inspect.iscoroutinefunction`` for functions and bound methods."""
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    return bool(code is not None and code.co_flags & _CO_COROUTINE)


def preload_async() -> None:
    """Import anyio and its asyncio backend now: imports fail once the policy is loaded."""
    import anyio
    import anyio._backends._asyncio

    anyio.get_all_backends()

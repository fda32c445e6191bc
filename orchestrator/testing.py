"""Helpers for testing code that uses isolates; also a pytest plugin (loaded by pytest
automatically once isolates is installed).

- ``in_child(fn, *args)``: run ``fn`` in a forked child and get back what happened to it
  (its value, its exception, the signal that killed it): the way to prove a denial
  without confining the test runner. Reporting uses shared memory mapped before the
  fork, so it works under any policy the child loads.
- ``@pytest.mark.isolate(policy)``: run the test function itself in a fresh isolate
  confined by ``policy`` (fixture values are pickled in; an assertion failure comes back
  as AssertionError with the isolate's traceback).
- the ``in_child`` fixture: the function above, for tests that prefer fixtures.
- ``assert_denied(fn, *args, policy=..., errno=..., syscall=...)``: run ``fn`` in a fresh
  isolate under ``policy`` and check it was denied, and how (docs/testing.md).

Safety argument (``in_child``'s fork):

- The test runner may have threads (the spawner and monitor threads of isolates, a
  timeout plugin's): the forked child has only the calling one. The at-fork hook of
  isolates' runtime resets its own threads, locks and isolates in the child; CPython
  resets the GIL, the import lock and ``threading``. A lock some other thread held at the
  fork stays held in the child, so a ``fn`` that takes it hangs: the parent's timeout
  then kills the child and raises AssertionError, never hangs the suite.
- The child never returns into the test runner: whatever ``fn`` does, it ends in
  ``os._exit`` (no atexit handler, no buffered output of the parent's flushed twice,
  no finaliser of the parent's objects), or dies of a signal.
- The result travels through an anonymous shared mapping made before the fork, written
  once by the child and read by the parent after the child is gone: no descriptor is
  involved, so it works under any policy the child loaded, and a result larger than
  the mapping is replaced by an error saying so. The parent unpickles it because it is
  its own child's, running the test's own code.
- The parent always collects the child (``waitpid``; SIGKILL past the timeout), so no
  zombie outlives a call.
"""

from __future__ import annotations

import dataclasses
import io
import mmap
import os
import pickle
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

_SHARED = 1 << 20


@dataclass
class Outcome:
    """What happened to a child: ``value``, or ``error``, or ``signal``/``exitcode``."""

    value: Any = None
    error: BaseException | None = None
    signal: int | None = None
    exitcode: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.signal is None and self.exitcode == 0

    def unwrap(self) -> Any:
        """The child's return value; any other fate raises AssertionError saying which."""
        if self.error is not None:
            raise AssertionError(f"child raised {self.error!r}") from self.error
        if self.signal is not None:
            raise AssertionError(f"child killed by {signal.Signals(self.signal).name}")
        if self.exitcode != 0:
            raise AssertionError(f"child exited with {self.exitcode}")
        return self.value


def in_child(fn: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Outcome:
    """Fork, run ``fn(*args)`` in the child, report what happened. Never confines us."""
    shared = mmap.mmap(-1, _SHARED)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _untraced()
        _report(shared, fn, args)
    try:
        status = _wait(pid, timeout)
    finally:
        result = _read(shared)
        shared.close()
    if os.WIFSIGNALED(status):
        return Outcome(signal=os.WTERMSIG(status), **result)
    return Outcome(exitcode=os.WEXITSTATUS(status), **result)


def _untraced() -> None:
    """A forked child stops any tracer it inherited (coverage.py's, under ``pytest
    --cov``): its data would die with ``os._exit`` anyway, and the tracer stats each new
    file it meets, which the child's policy may deny or kill for. What a child runs is
    the test's own policy's business alone."""
    sys.settrace(None)
    threading.settrace(None)


def _report(shared: mmap.mmap, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        payload: dict[str, Any] = {"value": fn(*args)}
    except BaseException as exc:
        payload = {"error": exc}
    try:
        data = pickle.dumps(payload)
    except Exception as exc:
        data = pickle.dumps({"error": RuntimeError(f"unpicklable result: {exc!r}")})
    if len(data) + 4 > _SHARED:
        data = pickle.dumps({"error": RuntimeError(f"result too large: {len(data)} bytes")})
    shared[: 4 + len(data)] = struct.pack("I", len(data)) + data
    os._exit(0)


def _read(shared: mmap.mmap) -> dict[str, Any]:
    (size,) = struct.unpack("I", shared[:4])
    return pickle.loads(shared[4 : 4 + size]) if size else {}  # our own child's data


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish within {timeout}s")


# -- proving a denial -------------------------------------------------------------------


def assert_denied(
    fn: Callable[..., Any],
    *args: Any,
    policy: Any,
    errno: int | None = None,
    syscall: str | None = None,
    timeout: float = 30.0,
    message: str | None = None,
    **options: Any,
) -> BaseException:
    """Run ``fn(*args)`` in a fresh isolate under ``policy`` and check it was denied: it
    raised (an OSError with ``errno``, when given; an IsolateViolation when the policy
    kills), and the call denied was ``syscall`` (when given: the violation's call, or
    one of the denials its parent recorded), and ``message`` (when given) is part of
    what it says (its text, or a note such as the denials it lists). ``options`` are
    @isolate's others (``limits``, ``start``, ``landlock``, ``capabilities``, ``name``,
    ``report_denials``...). Returns the exception; AssertionError saying what happened
    instead."""
    from ._core.errors import IsolateViolation
    from ._decorator import isolate

    limits = options.get("limits")
    if limits is not None and getattr(limits, "wall_time", None) is not None:
        timeout = limits.wall_time  # the two are one limit: the caller gave it there
    isolated = isolate(policy, timeout=timeout, **options)(fn)  # a bad option raises here
    try:
        value = isolated(*args)
    except BaseException as exc:
        _check_denial(exc, errno, syscall, IsolateViolation)
        said = "\n".join([str(exc), *getattr(exc, "__notes__", ())])
        if message is not None and message not in said:
            raise AssertionError(f"{message!r} is not in what it said: {said!r}") from exc
        return exc
    raise AssertionError(f"{_name(fn)} was not denied: it returned {value!r}")


def _check_denial(
    exc: BaseException, err: int | None, syscall: str | None, violation: type
) -> None:
    if isinstance(exc, violation):
        called = getattr(exc, "syscall", None)
        if syscall is not None and called != syscall:
            raise AssertionError(f"killed for {called}, not {syscall}: {exc}") from exc
        if err is not None:
            raise AssertionError(f"killed for {called} where errno {err} was expected") from exc
        return
    if err is not None and getattr(exc, "errno", None) != err:
        raise AssertionError(f"expected an OSError with errno {err}, got {exc!r}") from exc
    denied = [d.call.split("(", 1)[0] for d in getattr(exc, "denials", ())]
    if syscall is not None and syscall not in denied:
        raise AssertionError(
            f"{syscall} was not among the calls denied ({', '.join(denied) or 'none'}): {exc!r}"
        ) from exc


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", repr(fn))


# -- pytest plugin ----------------------------------------------------------------------


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "isolate(policy=None, **options): run this test in a fresh isolate"
    )


def pytest_pyfunc_call(pyfuncitem: Any) -> bool | None:
    marker = pyfuncitem.get_closest_marker("isolate")
    if marker is None:
        return None
    from ._decorator import isolate

    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    for name in _CAPTURES & set(kwargs):  # stand in for pytest's, inside the isolate
        kwargs[name] = _CaptureRecipe(binary=name.endswith("binary"))
    _crossable(kwargs)
    options = dict(marker.kwargs)
    policy = _writable(marker.args[0] if marker.args else options.pop("policy", None),
                       options.pop("writable", ()), kwargs)  # fmt: skip
    test = isolate(_with_output(policy), **options)(_by_value(pyfuncitem.obj))
    # A fresh interpreter, with the stdout and stderr pytest's capture has for this test.
    test.options = dataclasses.replace(test.options, pooled=False)
    test(**kwargs)
    return True


_CAPTURES = frozenset({"capsys", "capfd", "capsysbinary", "capfdbinary"})


def _with_output(policy: Any) -> Any:
    """The test's policy, plus writing to its stdout and stderr: the harness owns those
    descriptors, and what a test prints reaches pytest's report whatever its policy
    (supporting rules: a policy that denies write outright keeps denying it)."""
    from isolates.sandbox import Arg, Policy, Rule

    from ._core.policies import Orchestration

    base = policy if policy is not None else Policy()
    writes = [
        Rule(call, Arg(0) == fd, implied=True) for call in ("write", "writev") for fd in (1, 2)
    ]
    return base.extend(Orchestration(*writes, name="the test's stdout and stderr"))


class CaptureResult(NamedTuple):
    """What ``readouterr()`` returns, as pytest's: ``out`` and ``err``."""

    out: Any
    err: Any


class _CaptureRecipe:
    """Made in the test runner, where nothing is taken: it becomes a
    ``CapturedInIsolate`` when the isolate unpickles it."""

    def __init__(self, binary: bool) -> None:
        self.binary = binary

    def __reduce__(self) -> tuple[Any, ...]:
        return (CapturedInIsolate, (self.binary,))


class CapturedInIsolate:
    """``capsys``/``capfd`` inside an isolated test: made in the isolate (it travels as
    a recipe), it takes ``sys.stdout`` and ``sys.stderr`` there, and ``readouterr()``
    returns and empties what was written, as pytest's does. (Output written below
    Python's streams, to descriptors 1 and 2 directly, is not taken: it reaches pytest's
    own capture of the test, and its report.)"""

    def __init__(self, binary: bool = False) -> None:
        self.binary = binary
        self._out, self._err = io.StringIO(), io.StringIO()
        self._streams = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = self._out, self._err

    def __reduce__(self) -> tuple[Any, ...]:
        return (CapturedInIsolate, (self.binary,))

    def readouterr(self) -> CaptureResult:
        out, err = self._out.getvalue(), self._err.getvalue()
        for stream in (self._out, self._err):
            stream.seek(0)
            stream.truncate()
        if self.binary:
            return CaptureResult(out.encode(), err.encode())
        return CaptureResult(out, err)


def _by_value(fn: Any) -> Any:
    """The test function as pytest imported it, its asserts rewritten, as a copy that
    travels by value: by reference the isolate would import the module again, without
    pytest's rewriting, and a failed assert would lose its values. (A test whose globals
    do not pickle travels by reference, as before: plain asserts, but it runs.)"""
    import types

    import cloudpickle

    copy = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__, copy.__module__, copy.__doc__ = fn.__qualname__, fn.__module__, fn.__doc__
    try:
        cloudpickle.dumps(copy)
    except Exception:
        return fn
    return copy  # no __wrapped__: the isolate would follow it back to the module


def _writable(policy: Any, names: Any, fixtures: dict[str, Any]) -> Any:
    """``writable=["tmp_path"]``: the policy, plus every right beneath those fixtures'
    paths (a test's own scratch directory); the rest of the filesystem as it was."""
    if not names:
        return policy
    from isolates.sandbox import Landlock, Policy

    base = policy if policy is not None else Policy()
    grants = Landlock(name="the test's writable paths")
    for name in [names] if isinstance(names, str) else names:
        if name not in fixtures:
            import pytest

            pytest.fail(f"writable={name!r}: the test takes no fixture of that name", pytrace=False)
        grants = grants.tmp(os.fspath(fixtures[name]))
    return base.extend(grants)


def _crossable(fixtures: dict[str, Any]) -> None:
    """Every fixture value crosses into the isolate by pickle: one that cannot is named,
    with why, before anything starts."""
    import cloudpickle

    for name, value in fixtures.items():
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            import pytest

            pytest.fail(
                f"fixture {name!r} cannot cross into an isolate: its value "
                f"({type(value).__name__}) does not pickle ({type(exc).__name__}: {exc}); "
                "it holds the test runner's own state. Use it outside the isolated test, "
                "or pass what it gives (a path, a value) through a fixture of your own",
                pytrace=False,
            )


try:
    import pytest as _pytest

    @_pytest.fixture(name="in_child")
    def _in_child_fixture() -> Callable[..., Outcome]:
        return in_child
except ImportError:  # pytest is not installed: the helpers above still work
    pass

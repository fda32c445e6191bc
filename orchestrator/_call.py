"""One call in one fresh isolate: take an interpreter, boot it, run, collect, reap."""

from __future__ import annotations

import linecache
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from isolates.sandbox import CompiledPolicy, Policy

from ._context import is_async, unwrap
from ._encode import decode_value, dump, rebuild
from ._messages import Boot, Failure
from ._namespaces import Namespaces
from ._orphans import reaping
from ._policies import worker_policy
from ._pool import POOL
from ._process import IsolateProcess
from ._spawn import explicit_sys_path


@dataclass(frozen=True)
class Options:
    policy: Policy = field(default_factory=Policy)
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    namespaces: Namespaces | None = None
    name: str = "isolate"

    def full_policy(self, is_async: bool) -> Policy:
        """The policy plus what the isolate itself needs; built once, so its compiled
        filter is cached across calls."""
        cache = self.__dict__.setdefault("_full", {})
        if is_async not in cache:
            cache[is_async] = worker_policy(self.policy, channels=False, is_async=is_async)
        return cache[is_async]  # type: ignore[no-any-return]

    def reaping(self, is_async: bool) -> tuple[bool, bool]:
        """Whether the isolate may start processes, and collect them (see _orphans)."""
        cache = self.__dict__.setdefault("_reaping", {})
        if is_async not in cache:
            cache[is_async] = reaping(self.full_policy(is_async), self.namespaces)
        return cache[is_async]  # type: ignore[no-any-return]


class Call:
    """A single-use isolate running ``fn(*args, **kwargs)``; ``cancel()`` from any thread."""

    def __init__(self, target: Callable[..., Any], args: Any, kwargs: Any, options: Options):
        # ``target`` is what travels (an IsolatedFunction pickles by reference to itself
        # and the isolate unwraps it); ``fn`` is what runs.
        self.target, self.args, self.kwargs, self.options = target, args, kwargs, options
        self.fn: Callable[..., Any] = unwrap(target)
        self._proc: IsolateProcess | None = None
        self._cancelled = False

    def run(self) -> Any:
        opts = self.options
        deadline = None if opts.timeout is None else time.monotonic() + opts.timeout
        proc = self._proc = POOL.take()
        try:
            if self._cancelled:
                raise InterruptedError("cancelled")
            proc.boot(self._boot(proc.pid))
            proc.wait_ready(deadline)  # a single call holds no barrier: it runs at once
            outcome = proc.wait_outcome(deadline)
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.reap()
            POOL.replenish()  # now: starting an interpreter would take the call's core
        if isinstance(outcome, Failure):
            raise rebuild(outcome, opts.name)
        return decode_value(outcome.value, self.fn, opts.name)

    def cancel(self) -> None:
        self._cancelled = True
        if self._proc is not None:
            self._proc.kill()

    def _boot(self, pid: int) -> Boot:
        opts, asynchronous = self.options, is_async(self.fn)
        policy = opts.full_policy(asynchronous)
        compiled = compile_for(policy, pid, opts.namespaces)
        return build_boot(
            opts.name, self.target, (self.args, self.kwargs), compiled, opts.namespaces,
            opts.env, reap=opts.reaping(asynchronous),
        )  # fmt: skip


def compile_for(policy: Policy, pid: int, ns: Namespaces | None) -> CompiledPolicy:
    """Compile an isolate's policy: for the pid it will have, with kills reported."""
    pid = ns.pid_inside(pid) if ns else pid
    return policy.compile(pid=pid, notify_kills=True, all_threads=True)


def build_boot(
    name: str,
    target: Callable[..., Any],
    arguments: tuple[tuple[Any, ...], dict[str, Any]],
    compiled: CompiledPolicy,
    ns: Namespaces | None,
    env: dict[str, str],
    channels: dict[str, Any] | None = None,
    context: bool = False,
    barrier: bool = False,
    reap: tuple[bool, bool] = (False, False),
) -> Boot:
    """The boot message for one isolate (``channels``: name -> message type; ``reap``:
    what ``_orphans.reaping`` says of its policy)."""
    return Boot(
        name=name,
        payload=dump((target, arguments, channels or {})),
        sys_path=explicit_sys_path(),
        sources=sources(target),
        env=dict(env),
        cwd=os.getcwd(),
        bpf=compiled.bpf,
        preload=list(compiled.preload),
        landlock=msgspec.to_builtins(compiled.landlock),
        namespaces=msgspec.to_builtins(ns) if ns is not None else None,
        channels=list(channels or {}),
        notify=True,
        hold=context,
        barrier=barrier,
        context=context,
        reap=reap[0],
        reap_wait=reap[1],
    )


def sources(fn: object) -> dict[str, list[str]]:
    """The source lines of the file ``fn`` lives in, so the isolate's tracebacks show them
    (once confined it may not read files, and by-value code has no file at all)."""
    code = getattr(unwrap(fn), "__code__", None)
    if code is None:
        return {}
    lines = linecache.getlines(code.co_filename)
    return {code.co_filename: lines} if lines else {}

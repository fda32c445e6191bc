"""One call in one fresh isolate: take an interpreter, boot it, run, collect, reap."""

from __future__ import annotations

import inspect
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from isolates.sandbox import Policy

from ._encode import decode_value, dump, rebuild, sources
from ._messages import Boot, Failure
from ._namespaces import Namespaces
from ._policies import worker_policy
from ._pool import POOL
from ._process import IsolateProcess


@dataclass(frozen=True)
class Options:
    policy: Policy = field(default_factory=Policy)
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    namespaces: Namespaces | None = None
    name: str = "isolate"


class Call:
    """A single-use isolate running ``fn(*args, **kwargs)``; ``cancel()`` from any thread."""

    def __init__(self, target: Callable[..., Any], args: Any, kwargs: Any, options: Options):
        # ``target`` is what travels (an IsolatedFunction pickles by reference to itself
        # and the isolate unwraps it); ``fn`` is what runs.
        self.target, self.args, self.kwargs, self.options = target, args, kwargs, options
        self.fn: Callable[..., Any] = inspect.unwrap(target)
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
            proc.wait_ready(deadline)
            proc.go()
            outcome = proc.wait_outcome(deadline)
        except BaseException:
            proc.kill()
            proc.reap()
            raise
        proc.reap()
        if isinstance(outcome, Failure):
            raise rebuild(outcome, opts.name)
        return decode_value(outcome.value, self.fn, opts.name)

    def cancel(self) -> None:
        self._cancelled = True
        if self._proc is not None:
            self._proc.kill()

    def _boot(self, pid: int) -> Boot:
        opts = self.options
        ns = opts.namespaces
        is_async = inspect.iscoroutinefunction(self.fn)
        policy = worker_policy(opts.policy, channels=False, is_async=is_async)
        compiled = policy.compile(pid=ns.pid_inside(pid) if ns else pid, notify_kills=True)
        return Boot(
            name=opts.name,
            function=dump(self.target),
            arguments=dump((self.args, self.kwargs)),
            sys_path=[p for p in sys.path if p],
            sources=sources(self.fn),
            env=dict(opts.env),
            cwd=os.getcwd(),
            bpf=compiled.bpf,
            landlock=msgspec.to_builtins(compiled.landlock),
            namespaces=msgspec.to_builtins(ns) if ns is not None else None,
            channels=[],
            channel_types=dump({}),
            notify=True,
            context=False,
        )

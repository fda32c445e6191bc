"""One call of an ``@isolate`` function in one fresh isolate: take an interpreter, boot
it, run, collect, reap."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from isolates.sandbox import Policy

from ._core.answers import Answers, Learned, with_denials
from ._core.boot_message import answers_for, build_boot, compile_for
from ._core.encode import decode_value, rebuild
from ._core.functions import is_async, unwrap
from ._core.orphans import reaping
from ._core.policies import worker_policy
from ._core.process import IsolateProcess
from ._core.runtime import FORK_SERVER, FORKED, POOL, spawn_isolate
from ._core.wire import Boot, Failure
from ._limits import Limits, exceeded
from ._namespaces.options import Namespaces


@dataclass(frozen=True)
class Options:
    """What ``@isolate(...)`` was given (the policy with its ``landlock`` added)."""

    policy: Policy = field(default_factory=Policy)
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    namespaces: Namespaces | None = None
    name: str = "isolate"
    start: str = "auto"
    capabilities: tuple[int, ...] = ()  # kept; every other is dropped
    limits: Limits = field(default_factory=Limits)
    report_denials: bool = True  # its errno denials recorded, shown on a failure
    learn: bool = False  # what the policy would deny is let run and learned (answers.Learned)
    #: Take a pooled interpreter (False: spawn one now, with the stdout and stderr we have
    #: now: the pytest plugin's, whose capture swaps them per test).
    pooled: bool = True


#: How a call's isolate starts: forked from the fork server (fork_server.py), or a fresh
#: exec'd interpreter (spawn.py), from the warm pool; "auto", the default: the fork
#: server once it runs (faster per call), exec until then (faster for a process's first
#: call: the server starts in the background after it). docs/orchestrator.md compares them.
START_MODES: Final = ("auto", "fork-server", "exec")


def check_start(start: str) -> str:
    if start not in START_MODES:
        raise ValueError(f"start={start!r}: use 'auto' (the default), 'fork-server' or 'exec'")
    return start


class IsolatePlan:
    """What every call of one isolated function shares, worked out on its first call:
    its policy with what the isolate itself needs, and whether it may start processes.
    (Built once, so the compiled filter is cached across calls.)"""

    def __init__(self, options: Options, fn: Callable[..., Any]) -> None:
        self.options = options
        self.policy = worker_policy(options.policy, channels=False, is_async=is_async(fn))
        self.reaping = reaping(self.policy, options.namespaces)
        # An isolate that may start processes is ended by process group, which needs it
        # to be our own child: it is exec'd whatever was asked (fork_server.py).
        self.forkable = options.start != "exec" and not self.reaping[0]
        #: What its calls learned, with ``learn=True`` (answers.Learned).
        self.learned = Learned(options.policy, self.policy) if options.learn else None

    def answers(self, pid: int) -> Answers | None:
        """How the isolate ``pid``'s parked calls are answered (answers.py)."""
        opts = self.options
        return answers_for(
            self.policy,
            pid,
            opts.namespaces,
            opts.limits.processes,
            opts.report_denials,
            self.learned,
        )

    def forked(self) -> bool:
        """Whether this call's isolate comes from the fork server."""
        if not self.forkable:
            return False
        return self.options.start == "fork-server" or FORK_SERVER.pid is not None


class IsolatedCall:
    """A single-use isolate running ``fn(*args, **kwargs)``; ``cancel()`` from any thread."""

    def __init__(self, target: Callable[..., Any], args: Any, kwargs: Any, plan: IsolatePlan):
        # ``target`` is what travels (an IsolatedFunction pickles by reference to itself
        # and the isolate unwraps it); ``fn`` is what runs.
        self.target, self.args, self.kwargs, self.plan = target, args, kwargs, plan
        self.fn: Callable[..., Any] = unwrap(target)
        self._proc: IsolateProcess | None = None
        self._cancelled = False

    def run(self) -> Any:
        """Run the call; a failure a limit explains is ResourceExceeded."""
        opts = self.plan.options
        try:
            return self._run()
        except Exception as exc:
            count = None if self._proc is None else self._proc.processes
            refused = None if count is None else count.refused
            err = exceeded(exc, opts.name, opts.limits, refused)
            if self._proc is not None:
                with_denials(err, opts.name, self._proc.answers)
            if err is exc:
                raise
            raise err from None  # its __cause__ is the failure itself

    def _run(self) -> Any:
        opts = self.plan.options
        deadline = None if opts.timeout is None else time.monotonic() + opts.timeout
        pool = (FORKED if self.plan.forked() else POOL) if opts.pooled else None
        proc = self._proc = pool.take() if pool is not None else spawn_isolate()
        try:
            if self._cancelled:
                raise InterruptedError("cancelled")
            proc.boot(self.boot_message(proc.pid))
            answers = self.plan.answers(proc.pid)
            if answers is not None:
                proc.answer_by(answers)
            proc.wait_ready(deadline)  # a single call holds no barrier: it runs at once
            outcome = proc.wait_outcome(deadline)
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.reap()
            if pool is not None:
                pool.replenish()  # now: starting an isolate would take the call's core
            if self.plan.forkable and pool is POOL:  # "auto": the server, for next time
                FORK_SERVER.start_soon()
        if isinstance(outcome, Failure):
            raise rebuild(outcome, opts.name)
        return decode_value(outcome.value, self.fn, opts.name, outcome.shape)

    def cancel(self) -> None:
        self._cancelled = True
        if self._proc is not None:
            self._proc.kill()

    def boot_message(self, pid: int) -> Boot:
        """The Boot for the isolate of pid ``pid``."""
        plan, opts = self.plan, self.plan.options
        counted = opts.limits.processes is not None
        compiled = compile_for(
            plan.policy,
            pid,
            opts.namespaces,
            counted=counted,
            reported=opts.report_denials,
            learning=opts.learn,
        )
        arguments = (self.args, self.kwargs)
        return build_boot(
            opts.name,
            self.target,
            arguments,
            compiled,
            opts.namespaces,
            opts.env,
            reap=plan.reaping,
            capabilities=opts.capabilities,
            rlimits=opts.limits.rlimits(),
        )

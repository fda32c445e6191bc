"""Building the boot message: what one isolate needs to become a call or a worker.

Both journeys come here: an ``@isolate`` call (``_call.py``) and a Supervisor's worker
(``_runner.py``). The isolate reads the message in ``isolate_main.py``.
"""

from __future__ import annotations

import dataclasses
import linecache
import os
from collections.abc import Callable
from typing import Any

import msgspec

from isolates.sandbox import CompiledPolicy, Policy
from isolates.sandbox.lowlevel import LandlockPlan, resolve_landlock

from .._namespaces.options import Namespaces
from .answers import Answers, Denials, Learned
from .coverage import request as coverage_request
from .denials import guarded_by, guards_program
from .encode import dump, needs_msgspec
from .functions import unwrap
from .process_count import COUNTED, ProcessCount
from .resources import NAMED_CALLS
from .spawn import explicit_sys_path
from .wire import Boot, CompiledPolicyData, NamespacesData, converted


def compile_for(
    policy: Policy,
    pid: int,
    ns: Namespaces | None,
    *,
    counted: bool = False,
    reported: bool = False,
    learning: bool = False,
) -> CompiledPolicy:
    """Compile an isolate's policy: for the pid it will have, with kills reported; with
    ``counted`` its clones handed to its parent (a processes limit: process_count.py),
    with ``reported`` its errno denials (answers.py). ``learning``: every denial and
    every call naming a path goes to the parent, and no Landlock is loaded (answers.py,
    ``Learned``): no fallback either, the isolate learns or does not start."""
    pid = ns.pid_inside(pid) if ns else pid
    calls = (COUNTED if counted else frozenset()) | (NAMED_CALLS if learning else frozenset())
    compiled = policy.compile(
        pid=pid,
        notify_kills=True,
        all_threads=True,
        notify_calls=calls,
        notify_errnos=reported or learning,
    )
    return dataclasses.replace(compiled, landlock=None, fallback_bpf=None) if learning else compiled


def answers_for(
    policy: Policy,
    pid: int,
    ns: Namespaces | None,
    processes: int | None,
    reported: bool,
    learned: Learned | None = None,
) -> Answers | None:
    """How the parent answers the isolate ``pid``'s parked calls beyond its violations:
    its clones counted against ``processes``, its denials recorded, or, with ``learned``,
    what it learns (None: none of these)."""
    if processes is None and not reported and learned is None:
        return None
    # The policy alone, its kills as kills: what the kernel would say without us (the
    # same program as the isolate's fallback_bpf, so one compile serves both).
    verdict = policy.compile(pid=ns.pid_inside(pid) if ns else pid, all_threads=True).bpf
    mirror = ns is not None and ns.pid
    count = None if processes is None else ProcessCount(processes, pid, mirror=mirror)
    denials = Denials(guarded=guarded_by(guards_program(policy))) if reported else None
    inside = ns.pid_inside(pid) if ns else pid
    learning = None if learned is None else (learned, inside)
    return Answers(verdict, count=count, denials=denials, learning=learning)


def build_boot(
    name: str,
    target: Callable[..., Any],
    arguments: tuple[tuple[Any, ...], dict[str, Any]],
    compiled: CompiledPolicy,
    ns: Namespaces | None,
    env: dict[str, str],
    channels: dict[str, Any] | None = None,
    supervised: bool = False,
    reap: tuple[bool, bool] = (False, False),
    capabilities: tuple[int, ...] = (),
    rlimits: list[tuple[int, int, int]] | None = None,
) -> Boot:
    """The boot message for one isolate (``channels``: name -> message type; ``reap``:
    what ``orphans.reaping`` says of its policy). ``barrier`` is False: the Supervisor
    sets it on the messages of a first start."""
    return Boot(
        name=name,
        payload=dump((target, arguments, channels or {})),
        sys_path=explicit_sys_path(),
        sources=sources(target),
        env=dict(env),
        cwd=os.getcwd(),
        policy=converted(compiled, CompiledPolicyData),
        namespaces=None if ns is None else converted(ns, NamespacesData),
        channels=list(channels or {}),
        supervised=supervised,
        barrier=False,
        reap=reap[0],
        reap_wait=reap[1],
        msgspec=needs_msgspec(unwrap(target)),
        capabilities=list(capabilities),
        rlimits=list(rlimits or ()),
        coverage=coverage_request(),
    )


def for_the_isolate(boot: Boot) -> dict[str, Any]:
    """The Boot as the isolate reads it: plain data (it imports no msgspec to decode it),
    with its Landlock plan already fitted to this kernel (``lowlevel.confine`` takes it
    so: the isolate needs neither the plan's classes nor the ABI tables)."""
    plain: dict[str, Any] = msgspec.to_builtins(boot, builtin_types=(bytes,))
    policy = boot.policy
    plan = None if policy.landlock is None else converted(policy.landlock, LandlockPlan)
    plain["policy"] = {
        "bpf": policy.bpf,
        "landlock": resolve_landlock(plan),
        "preload": policy.preload,
        "self_pid": policy.self_pid,
        "fallback": policy.fallback_bpf,
    }
    return plain


def sources(fn: object) -> dict[str, list[str]]:
    """The source lines of the file ``fn`` lives in, so the isolate's tracebacks show them
    (once confined it may not read files, and by-value code has no file at all)."""
    code = getattr(unwrap(fn), "__code__", None)
    if code is None:
        return {}
    lines = linecache.getlines(code.co_filename)
    return {code.co_filename: lines} if lines else {}

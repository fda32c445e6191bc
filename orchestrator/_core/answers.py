"""How an isolate's parked calls are answered: by its own policy.

The filter an isolate loads hands to its listener every call its policy kills (then a
violation), every call its policy fails with an errno when its denials are reported,
and its clones under a processes limit (process_count.py). The monitor thread reads
each (monitor.py) and its isolate (process.py) asks ``Answers.answer``, which runs the
isolate's policy as compiled without any of this (its *verdict*) on the call's
registers:

- an errno: the call fails with it, as it would have without the listener, and the
  denial is recorded in words (``Denials``: the call with its path, the errno, how often);
- allowed: a clone goes to the count; another call the listener was given to decide
  (``isolates run`` parks its exec) runs;
- anything else (a kill): not answered here; the caller reports a violation and kills.

Safety argument:

- The verdict is the isolate's own program: every answer is the one the kernel would
  have given without the listener, but for the count's refusals (EAGAIN, ENOSYS, EPERM),
  which only deny. It runs on the registers the kernel parked the call with, which a
  parked thread cannot change, and no filter reads memory, so what another thread
  writes to the call's memory meanwhile cannot change the verdict.
- A call the verdict kills is never answered: it stays parked until the kill ends it.
- A call from another architecture (i386 ``int 0x80``) is never answered here: the
  verdict's numbers are native ones, and every filter kills other ABIs anyway.
- The denial log is bounded (``MAX_DENIALS`` distinct calls, counted beyond), so an
  isolate denied without end costs its parent no more memory.
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import Final

from isolates.sandbox import AccessFs, Arg, Landlock, Policy, Rule, RuleSet
from isolates.sandbox.lowlevel import (
    NATIVE_ARCH,
    Guard,
    Notification,
    continue_notification,
    deciding,
    deny_notification,
    syscall_name,
    syscall_number,
)

from .denials import Denial as Denial
from .denials import Denials as Denials
from .denials import described
from .grants import Grants, beyond, grants_of, rights_names
from .process_count import ProcessCount
from .resources import NAMED_CALLS, Resources
from .verdicts import Verdicts


class Answers:
    """Answers an isolate's parked calls by ``verdict``, its policy's program without
    the notifying; with ``count`` its clones, with ``denials`` its denials recorded."""

    def __init__(
        self,
        verdict: bytes,
        *,
        count: ProcessCount | None = None,
        denials: Denials | None = None,
        learning: tuple[Learned, int] | None = None,
    ) -> None:
        self._verdicts = Verdicts(verdict)
        self.count = count
        self.denials = denials
        self.learning = learning  # what learns, and the isolate's pid (for SELF_PID)

    def answer(self, listener: int, n: Notification) -> bool:
        """Answer ``n``; False: its verdict kills (a violation, not answered)."""
        if self.learning is not None:
            learned, pid = self.learning
            try:
                return learned.answer(listener, n, self.count, pid)
            except OSError:  # ENOENT: the caller died while parked
                return True
        if n.arch != NATIVE_ARCH:
            return False
        action = self._verdicts.of(n.nr, n.args)
        try:
            if action.kind == "errno":
                if self.denials is not None:
                    self.denials.add(described(listener, n), n.nr, action.errno, n.args)
                deny_notification(listener, n.id, action.errno)
            elif action.denies:
                return False
            elif self.count is not None and self.count.counts(n):
                self.count.answer(listener, n)
            else:
                continue_notification(listener, n.id)
        except OSError:  # ENOENT: the caller died while parked; nothing ran
            pass
        return True


def with_denials(failure: BaseException, name: str, answers: Answers | None) -> None:
    """Put the denials an isolate met on the ``failure`` it ended in: as ``.denials``
    and as a note its traceback shows (``denied by parse's policy: openat(...) ->
    EPERM``); logged too, to the "isolates" logger."""
    denials = answers.denials if answers is not None else None
    if not denials:
        return
    listed = denials.listed()
    failure.denials = listed  # type: ignore[attr-defined]
    lines = [f"denied by {name}'s policy:", *(f"  {d}" for d in listed)]
    if denials.dropped:
        lines.append(f"  and {denials.dropped} more")
    failure.add_note("\n".join(lines))
    _LOG.warning("%s", "\n".join(lines))


_LOG: Final = logging.getLogger("isolates")


# -- learning ---------------------------------------------------------------------------


class Learned:
    """What isolates learning a policy were let do beyond it (``@isolate(learn=True)``):
    the calls the policy would deny, with the arguments its rules compare, and what
    their paths and ports were; ``policy()`` is the policy widened by exactly that.

    While learning, an isolate's filter hands every denial and every call naming a path
    to its parent, which lets them run (but what the guards refuse: EPERM, never
    learned), and its Landlock is not loaded: Landlock has no mode that only reports.
    """

    def __init__(self, policy: Policy, judged_by: Policy | None = None) -> None:
        self.base = policy  # what is widened
        self._judge = judged_by or policy  # what decides (with the orchestrator's own calls)
        self._compared = _compared(self._judge)
        self._calls: set[tuple[str, tuple[tuple[int, int], ...]]] = set()
        self.resources = Resources()
        self._lock = threading.Lock()  # the monitor thread adds, the caller reads

    def answer(self, listener: int, n: Notification, count: ProcessCount | None, pid: int) -> bool:
        """Answer ``n`` of the learning isolate ``pid``; False: a call of another ABI."""
        if n.arch != NATIVE_ARCH:
            return False
        with self._lock:
            if n.nr in _NAMED:
                self.resources.record(n)  # before it runs: its memory is as the call saw it
            action, decider = deciding(self._judge, n.nr, n.args, self_pid=pid)
            if isinstance(decider, Guard):
                deny_notification(listener, n.id, action.errno if action.errno else errno.EPERM)
                return True
            if action.kind not in ("allow", "log"):
                compared = self._compared.get(n.nr, ())
                self._calls.add((syscall_name(n.nr), tuple((i, n.args[i]) for i in compared)))
        if count is not None and count.counts(n):
            count.answer(listener, n)
        else:
            continue_notification(listener, n.id)
        return True

    @property
    def calls(self) -> list[str]:
        """The calls learned, in words: ``"uname"``, ``"ioctl(arg1 == 0x5413)"``."""
        with self._lock:
            return [_spelled(name, args) for name, args in sorted(self._calls)]

    def policy(self) -> Policy:
        """The policy, plus exactly what was learned: a "learned" RuleSet of supporting
        rules, and where the policy's Landlock confines, a "learned" one granting the
        paths and ports used beyond it (grouped as ``isolates trace --emit`` groups)."""
        with self._lock:
            rules = [Rule(name, *(Arg(i) == v for i, v in args), implied=True)
                     for name, args in sorted(self._calls)]  # fmt: skip
            extra: list[RuleSet | Landlock] = [RuleSet(*rules, name="learned")] if rules else []
            wider = beyond(self.base, self.resources)
        landlock = _landlock_of(grants_of(wider), wider)
        return self.base.extend(*extra, *([landlock] if landlock is not None else []))


def _compared(policy: Policy) -> dict[int, tuple[int, ...]]:
    """For each syscall, the arguments the policy's rules compare."""
    out: dict[int, set[int]] = {}
    for entry in policy.entries():
        out.setdefault(entry.nr, set()).update(c.arg for c in entry.conditions)
    return {nr: tuple(sorted(indices)) for nr, indices in out.items()}


def _spelled(name: str, args: tuple[tuple[int, int], ...]) -> str:
    shown = " and ".join(f"arg{i} == {v:#x}" if v > 9 else f"arg{i} == {v}" for i, v in args)
    return f"{name}({shown})" if shown else name


def _landlock_of(grants: Grants, wider: Resources) -> Landlock | None:
    if not (grants.paths or grants.conveniences or wider.connect_tcp or wider.bind_tcp):
        return None
    ll = Landlock(name="learned")
    for convenience in sorted(grants.conveniences):
        ll = getattr(ll, convenience)()
    for path, rights in sorted(grants.paths.items()):
        flags = AccessFs(0)
        for right in rights_names(rights, path):
            flags |= AccessFs[right.upper()]
        if flags:
            ll = ll.allow(path, flags, missing_ok=True)
    for port in sorted(wider.connect_tcp):
        ll = ll.connect_tcp(port)
    for port in sorted(wider.bind_tcp):
        ll = ll.bind_tcp(port)
    return ll


_NAMED: Final = frozenset(syscall_number(name) for name in NAMED_CALLS)

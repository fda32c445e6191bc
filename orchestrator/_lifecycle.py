"""The worker lifecycle: one table, and the only code that changes a worker's state.

declared -> spawned -> booted -> ready -> released -> exited
any state before exited -> failed;  failed -> restarting -> booted
released -> stopping -> stopped; before released -> stopped (a stop, or an aborted start)

As h11 does for HTTP, everything that decides a transition lives here: the Runner and
the Supervisor report what happened (``Lifecycle.spawned()``, ``.failed()``...) and the
lifecycle moves the state, checked against ``TRANSITIONS``. The diagram in
docs/orchestrator.md is generated from the table.
"""

from __future__ import annotations

import enum
import threading
from typing import Final


class State(enum.Enum):
    DECLARED = "declared"  # add_worker() was called
    SPAWNED = "spawned"  # an interpreter is running and waits for its boot message
    BOOTED = "booted"  # the boot message is sent; the isolate confines itself
    READY = "ready"  # confined, waiting at the barrier
    RELEASED = "released"  # GO sent: the worker's code runs
    EXITED = "exited"  # returned a value
    FAILED = "failed"  # raised, crashed, violated its policy, or never got ready
    RESTARTING = "restarting"  # failed, and its restart policy gives it another go
    STOPPING = "stopping"  # it ran, and ends after the supervisor asked it to stop
    STOPPED = "stopped"  # ended after being asked to, or its start was aborted


TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    State.DECLARED: frozenset({State.SPAWNED, State.FAILED, State.STOPPED}),
    State.SPAWNED: frozenset({State.BOOTED, State.FAILED, State.STOPPED}),
    State.BOOTED: frozenset({State.READY, State.FAILED, State.STOPPED}),
    State.READY: frozenset({State.RELEASED, State.FAILED, State.STOPPED}),
    State.RELEASED: frozenset({State.EXITED, State.FAILED, State.STOPPING}),
    State.FAILED: frozenset({State.RESTARTING}),
    State.RESTARTING: frozenset({State.BOOTED, State.FAILED, State.STOPPED}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.EXITED: frozenset(),
    State.STOPPED: frozenset(),
}
FINAL: Final = frozenset({State.EXITED, State.FAILED, State.STOPPED})


class LifecycleError(RuntimeError):
    """A transition the table does not allow: a bug in the orchestrator, never the user's."""


def check(name: str, old: State, new: State) -> State:
    """``new`` if the table allows ``old -> new`` for worker ``name``, else LifecycleError."""
    if new not in TRANSITIONS[old]:
        raise LifecycleError(f"worker {name!r}: {old.value} -> {new.value} is not a transition")
    return new


class Lifecycle:
    """One worker's state, moved only by the events below (from any thread).

    A stop, once requested, decides how the worker's end is told: whatever ends it
    without a value from then on (a signal, an exception, a failed restart), it stopped.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._state = State.DECLARED
        self._stop_requested = False
        self._lock = threading.Lock()

    @property
    def state(self) -> State:
        return self._state

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested (``stop_requested()``)."""
        return self._stop_requested

    # -- the events ----------------------------------------------------------------------

    def spawned(self) -> None:
        """Its interpreter was started."""
        self._move(State.SPAWNED)

    def booted(self) -> None:
        """Its boot message was sent."""
        self._move(State.BOOTED)

    def ready(self) -> None:
        """It reported READY: confined, waiting to be released."""
        self._move(State.READY)

    def released(self) -> None:
        """GO was sent: its code runs."""
        self._move(State.RELEASED)

    def exited(self) -> None:
        """It returned a value."""
        self._move(State.EXITED)

    def failed(self) -> State:
        """It ended without a value (raised, crashed, was killed, never got ready).

        After a stop was requested that is how it stopped (STOPPED); otherwise FAILED.
        Returns the state reached."""
        with self._lock:
            if self._stop_requested:
                return self._stop()
            return self._to(State.FAILED)

    def restarting(self) -> None:
        """It failed and its restart policy gives it another go."""
        self._move(State.RESTARTING)

    def stop_requested(self) -> None:
        """The supervisor asked it to stop (it may still return a value: then it exited)."""
        with self._lock:
            self._stop_requested = True

    def stopped(self) -> None:
        """It ended after a stop was requested, or its start was aborted before it ran."""
        with self._lock:
            self._stop()

    # -- moving --------------------------------------------------------------------------

    def _move(self, new: State) -> None:
        with self._lock:
            self._to(new)

    def _stop(self) -> State:
        if self._state is State.RELEASED:  # it ran: stopping, then stopped
            self._to(State.STOPPING)
        return self._to(State.STOPPED)

    def _to(self, new: State) -> State:
        self._state = check(self.name, self._state, new)
        return new


def diagram() -> str:
    """The lifecycle as a Mermaid state diagram (docs/orchestrator.md embeds it)."""
    lines = ["stateDiagram-v2", f"    [*] --> {State.DECLARED.value}"]
    for old, targets in TRANSITIONS.items():
        lines += [f"    {old.value} --> {new.value}" for new in sorted(targets, key=_order)]
    lines += [f"    {s.value} --> [*]" for s in sorted(FINAL, key=_order)]
    return "\n".join(lines)


def _order(state: State) -> int:
    return list(State).index(state)


BEGIN, END = "<!-- lifecycle: begin -->", "<!-- lifecycle: end -->"


def with_diagram(doc: str) -> str:
    """``doc`` with the diagram between the lifecycle markers replaced by the table's."""
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n```mermaid\n{diagram()}\n```\n{END}{tail}"


if __name__ == "__main__":  # python -m isolates.orchestrator._lifecycle docs/orchestrator.md
    import sys

    with open(sys.argv[1]) as f:
        text = f.read()
    with open(sys.argv[1], "w") as f:
        f.write(with_diagram(text))

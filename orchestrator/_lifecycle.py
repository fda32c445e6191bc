"""The worker lifecycle: one table, one place (the diagram in the docs comes from it).

declared -> spawned -> booted -> ready -> released -> exited
any state before exited -> failed;  released/failed -> restarting -> booted
released -> stopping -> stopped
"""

from __future__ import annotations

import enum
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
    STOPPING = "stopping"  # the supervisor asked it to stop
    STOPPED = "stopped"  # ended after being asked to


TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    State.DECLARED: frozenset({State.SPAWNED, State.FAILED}),
    State.SPAWNED: frozenset({State.BOOTED, State.FAILED, State.STOPPED}),
    State.BOOTED: frozenset({State.READY, State.FAILED}),
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
    if new not in TRANSITIONS[old]:
        raise LifecycleError(f"worker {name!r}: {old.value} -> {new.value} is not a transition")
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

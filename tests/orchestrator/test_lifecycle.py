"""The lifecycle table: every state reachable, finals final, the docs in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from isolates.orchestrator._lifecycle import (
    FINAL,
    TRANSITIONS,
    LifecycleError,
    State,
    check,
    with_diagram,
)

DOC = Path(__file__).parents[2] / "docs" / "orchestrator.md"


def test_every_state_is_reachable_from_declared() -> None:
    seen, todo = {State.DECLARED}, [State.DECLARED]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(State)


def test_exited_and_stopped_are_final_and_failed_only_restarts() -> None:
    assert TRANSITIONS[State.EXITED] == TRANSITIONS[State.STOPPED] == frozenset()
    assert TRANSITIONS[State.FAILED] == {State.RESTARTING}
    assert {State.EXITED, State.FAILED, State.STOPPED} == FINAL


def test_a_transition_outside_the_table_is_refused() -> None:
    assert check("w", State.READY, State.RELEASED) is State.RELEASED
    with pytest.raises(LifecycleError, match="'w': exited -> released"):
        check("w", State.EXITED, State.RELEASED)


def test_the_docs_show_the_current_table() -> None:
    text = DOC.read_text()
    assert with_diagram(text) == text, (
        "docs/orchestrator.md is out of date: python -m isolates.orchestrator._lifecycle "
        "docs/orchestrator.md"
    )

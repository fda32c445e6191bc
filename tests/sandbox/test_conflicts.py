"""Conflicting rules: a RuleConflict carries the syscall, both RuleSets and both rules, and
its message tells two RuleSets of one name apart. How a RuleSet's kind merges."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import ClassVar

import pytest

from isolates.sandbox import (
    Action,
    Landlock,
    Policy,
    PolicyError,
    Rule,
    RuleConflict,
    RuleKind,
    RuleSet,
    SystemIO,
)
from tests.sandbox.test_landlock_child import attempt, run


def test_a_dead_condition_names_both_rulesets_and_rules() -> None:
    outright = RuleSet("write", name="Logging")
    stdout = SystemIO.nothing().allow_stdout()
    with pytest.raises(RuleConflict) as err:
        Policy(outright, stdout)
    conflict = err.value
    assert isinstance(conflict, PolicyError) and isinstance(conflict, ValueError)
    assert conflict.syscall == "write"
    assert conflict.rulesets == (outright, stdout)
    assert conflict.rules == (Rule("write"), stdout.rules()[0])
    assert str(conflict).startswith("'write': Logging allows it outright (Rule('write'))")


def test_two_rulesets_of_one_name_are_told_apart_by_position() -> None:
    reads = SystemIO.nothing().allow_read()
    stdin = SystemIO.nothing().allow_stdin()
    with pytest.raises(RuleConflict) as err:
        Policy(SystemIO.nothing().allow_stdout(), reads, stdin)
    message = str(err.value)
    assert "SystemIO (Policy argument 2) allows it outright" in message
    assert "SystemIO (Policy argument 3) allows it only when" in message
    assert err.value.rulesets == (reads, stdin)


def test_rulesets_of_different_names_keep_their_plain_names() -> None:
    with pytest.raises(RuleConflict, match=r"^'uname': a says Action.ALLOW .* but b says"):
        Policy(RuleSet("uname", name="a"), RuleSet.nothing().deny("uname").named("b"))


def test_one_ruleset_against_itself_is_one_ruleset_twice() -> None:
    rs = SystemIO.nothing().allow_read().allow_stdin()
    with pytest.raises(RuleConflict, match=r"^'read': SystemIO allows .* while SystemIO") as err:
        Policy(rs)
    assert err.value.rulesets == (rs, rs) and err.value.syscall == "read"


def test_a_right_against_a_denial_gives_back_the_landlock(tmp_path: Path) -> None:
    deny = RuleSet.nothing().deny("getdents64")
    listing = Landlock(name="listing").list(tmp_path)
    with pytest.raises(RuleConflict, match="'getdents64': listing needs it") as err:
        Policy(deny, listing)
    assert err.value.rulesets == (deny, listing)
    assert err.value.rules == (deny.rules()[0], Rule("getdents64"))


def test_a_conflict_pickles_with_its_attributes() -> None:
    with pytest.raises(RuleConflict) as err:
        Policy(RuleSet("uname", name="a"), RuleSet.nothing().deny("uname", action=Action.TRAP))
    back = pickle.loads(pickle.dumps(err.value))
    assert isinstance(back, RuleConflict) and str(back) == str(err.value)
    assert (back.syscall, back.rules) == ("uname", err.value.rules)
    assert [rs.name for rs in back.rulesets] == ["a", "RuleSet"]


class Needs(RuleSet):
    """What something else needs, as the orchestrator's own calls: merged as implied."""

    kind: ClassVar[str] = RuleKind.IMPLIED


class NeedsByValue(RuleSet):
    kind: ClassVar[str] = "implied"  # the value stands for the member


@pytest.mark.parametrize("needs", [Needs, NeedsByValue])
def test_implied_rules_widen_a_user_condition_instead_of_conflicting(
    needs: type[RuleSet], tmp_path: Path
) -> None:
    policy = Policy(SystemIO.nothing().allow_stdout(), needs("write"))
    assert [e.conditions for e in policy.entries() if e.syscall == "write"] == [()]
    with pytest.raises(RuleConflict):
        Policy(SystemIO.nothing().allow_stdout(), RuleSet("write"))  # the same, but normal
    target = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    policy.compile()

    def child() -> tuple[str, str]:
        policy.apply()
        return attempt(os.write, target, b"x"), attempt(os.uname)

    assert run(child) == ("ok", "EPERM")  # write on any fd; nothing the rules do not name
    os.close(target)


def test_an_unknown_kind_is_refused_naming_the_ruleset() -> None:
    class Odd(RuleSet):
        kind: ClassVar[str] = "weak"

    with pytest.raises(PolicyError, match=r"^Odd: kind 'weak' is none of RuleKind.NORMAL"):
        Policy(Odd("getppid"))

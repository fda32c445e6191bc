"""A Landlock is a value a Policy (or a RuleSet) carries, not a RuleSet; the states it
reports are enums that still read, compare and travel as their strings."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import msgspec
import pytest

from isolates.sandbox import (
    Compat,
    Enforcement,
    Landlock,
    LandlockPlan,
    LandlockStatus,
    Policy,
    PolicyError,
    RuleSet,
    Status,
    SystemIO,
)
from tests.sandbox.test_landlock_child import attempt, run


@pytest.fixture
def d(tmp_path: Path) -> Path:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("inside")
    (tmp_path / "outside").write_text("outside")
    return tmp_path / "d"


class CarriesRights(RuleSet):
    """Rights through the RuleSet hook, as pledge's paths do: no syscalls implied, only
    the ones it names (opening and stat-ing, not listing a directory)."""

    def __init__(self, landlock: Landlock) -> None:
        super().__init__("openat", "fstat", "newfstatat", "lseek", "close", name="carrier")
        self._landlock = landlock

    def landlock(self) -> Landlock:
        return self._landlock


def test_a_landlock_is_a_value_not_a_ruleset(d: Path) -> None:
    ll = Landlock().read(d)
    assert not isinstance(ll, RuleSet) and not issubclass(Landlock, RuleSet)
    assert ll.name == "Landlock" and ll.named("data").name == "data"
    assert Landlock.nothing().plan() == Landlock().plan()


def test_a_policy_holds_a_landlock_as_the_ruleset_that_carries_it(d: Path) -> None:
    ll = Landlock(name="data").read(d)
    policy = Policy(SystemIO.nothing(), ll)
    carrier = policy.rulesets[2]
    assert isinstance(carrier, RuleSet) and carrier.landlock() is ll
    assert carrier.name == "data" and carrier.rules() == ll.rules()
    assert repr(policy) == "Policy(PythonRuntime, SystemIO, data, default=Action.ERRNO(EPERM))"
    rebuilt = Policy(*policy.rulesets[1:])  # what `isolates run` does with a policy
    assert rebuilt.entries() == policy.entries() and rebuilt.landlock is not None
    assert rebuilt.landlock.grants() == ll.grants()


def test_extend_takes_a_landlock(d: Path) -> None:
    policy = Policy(SystemIO.nothing().allow_stdout()).extend(Landlock().read(d))
    assert policy.landlock is not None and policy.landlock.grants() == Landlock().read(d).grants()
    assert policy.allows("getdents64")  # the right brought the syscall it needs


def test_syscall_builders_on_a_landlock_say_where_they_belong() -> None:
    for call in (lambda: Landlock().allow_rule("read"), lambda: Landlock().deny("read")):
        with pytest.raises(PolicyError, match="put syscall rules in another RuleSet"):
            call()
    with pytest.raises(PolicyError, match="a Landlock, a Rule or a syscall name"):
        Policy(42)  # type: ignore[arg-type]


def test_rights_given_to_the_policy_bring_their_syscalls_a_carrier_brings_none(
    d: Path,
) -> None:
    given = Policy(SystemIO.nothing().allow_read(), Landlock().read(d))
    carried = Policy(SystemIO.nothing().allow_read(), CarriesRights(Landlock().read(d)))
    assert given.landlock is not None and carried.landlock is not None
    assert given.landlock.grants() == carried.landlock.grants()
    given.compile()
    carried.compile()

    def child(policy: Policy) -> dict[str, str]:
        status = policy.apply()
        assert status.enforcement is Enforcement.FULL, status
        return {
            "read inside": attempt(lambda: (d / "f").read_text()),
            "read outside": attempt(lambda: (d.parent / "outside").read_text()),
            "list inside": attempt(os.listdir, d),
        }

    # Read and list beneath d, nothing outside (Landlock); the carrier's policy allows
    # openat but never getdents64, which only the given Landlock implies (seccomp).
    assert run(child, given) == {"read inside": "ok", "read outside": "EACCES", "list inside": "ok"}
    assert run(child, carried) == {
        "read inside": "ok",
        "read outside": "EACCES",
        "list inside": "EPERM",
    }


def test_states_are_enums_equal_to_their_strings(d: Path) -> None:
    plan = Landlock().read(d).plan(Compat.HARD)
    assert plan.compat is Compat.HARD and plan.compat == "hard"
    assert LandlockPlan(compat="hard").compat is Compat.HARD  # type: ignore[arg-type]
    status = LandlockStatus("partial", 2, ("AccessFs.TRUNCATE",))  # type: ignore[arg-type]
    assert status.enforcement is Enforcement.PARTIAL and status.enforcement == "partial"
    assert Status(True, False, status).enforcement is Enforcement.PARTIAL
    assert Status(False, False).enforcement == "none" and f"{Enforcement.FULL}" == "full"
    with pytest.raises(ValueError, match="'harder' is not a valid Compat"):
        LandlockPlan(compat="harder")  # type: ignore[arg-type]


def test_states_cross_a_wire_as_strings_and_come_back_as_enums(d: Path) -> None:
    plan = Landlock().read(d).plan(Compat.HARD)
    status = Status(True, True, LandlockStatus(Enforcement.FULL, 7))
    assert msgspec.to_builtins(plan)["compat"] == "hard"
    assert b'"enforcement":"full"' in msgspec.json.encode(status)
    back = msgspec.json.decode(msgspec.json.encode(status), type=Status)
    assert back == status and back.landlock is not None
    assert back.landlock.enforcement is Enforcement.FULL
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(plan), type=LandlockPlan).compat is (
        Compat.HARD
    )
    forged = {"seccomp": True, "all_threads": False, "landlock": {"enforcement": "total", "abi": 7}}
    with pytest.raises(msgspec.ValidationError, match="Invalid enum value 'total'"):
        msgspec.convert(forged, Status)
    assert pickle.loads(pickle.dumps(Enforcement.NONE)) is Enforcement.NONE


def test_an_applied_status_reports_enums(d: Path) -> None:
    policy = Policy(SystemIO.nothing().allow_read(), Landlock().read(d))
    policy.compile()

    def child() -> tuple[object, object, str]:
        status = policy.apply()
        assert status.landlock is not None
        return status.enforcement, status.landlock.enforcement, attempt(os.listdir, d.parent)

    assert run(child) == (Enforcement.FULL, Enforcement.FULL, "EACCES")

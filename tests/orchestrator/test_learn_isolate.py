"""``@isolate(learn=True)``: what the policy would deny is let run and learned, and
``fn.learned.policy()`` is the policy widened by exactly that; what every policy denies
is refused while learning too. Real isolates, real files."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from isolates.orchestrator import isolate
from isolates.orchestrator.testing import assert_denied
from isolates.sandbox import Landlock, Policy, Signals, SystemIO
from tests.orchestrator import learn_targets as t


def _dirs(tmp_path: Path) -> tuple[str, str, str]:
    made = []
    for name, file in (("in", "a"), ("out", "b"), ("third", "b")):
        d = tmp_path / name
        d.mkdir()
        (d / file).write_text(name)
        made.append(str(d))
    return made[0], made[1], made[2]


def test_learning_lets_the_denials_run_and_widens_the_policy_by_exactly_them(
    tmp_path: Path,
) -> None:
    inside, outside, third = _dirs(tmp_path)
    policy = Policy(SystemIO.nothing().allow_open().allow_read(), Landlock().read(inside))
    assert_denied(t.work, inside, outside, policy=policy, errno=errno.EPERM, syscall="uname")
    learning = isolate(policy, learn=True)(t.work)
    assert learning(inside, outside) == "Linuxinout"  # let run, though denied
    assert learning.learned.calls == ["uname"]
    assert dict(learning.learned.resources.paths)[f"{outside}/b"] == {"read"}
    widened = learning.learned.policy()
    assert isolate(widened)(t.work)(inside, outside) == "Linuxinout"
    # exactly that: the directory beside it stays refused, by Landlock
    assert_denied(t.work, inside, third, policy=widened, errno=errno.EACCES)
    assert "learned" in widened.to_toml()


def test_what_every_policy_denies_is_refused_while_learning_and_never_learned() -> None:
    policy = Policy(Signals.nothing().allow_kill_self())
    learning = isolate(policy, learn=True)(t.unshare_and_kill_self)
    assert learning() == (-1, errno.EPERM)
    assert learning.learned.calls == []  # kill(self) was the policy's own: nothing learned


def test_a_function_that_does_not_learn_says_so() -> None:
    with pytest.raises(AttributeError, match="learn=True"):
        _ = isolate(Policy())(t.work).learned


def test_a_worker_learns_too(tmp_path: Path) -> None:
    from isolates.orchestrator import Supervisor
    from tests.forked import in_child

    inside, outside, _ = _dirs(tmp_path)
    policy = Policy(SystemIO.nothing().allow_open().allow_read(), Landlock().read(inside))

    def run() -> tuple[str, list[str], str]:
        sup = Supervisor()
        w = sup.add_worker("w", t.work_worker, args=(inside, outside), policy=policy, learn=True)
        result = sup.run(timeout=60)["w"]
        again = Supervisor()
        again.add_worker("w", t.work_worker, args=(inside, outside), policy=w.learned.policy())
        return result, w.learned.calls, again.run(timeout=60)["w"]

    assert in_child(run).unwrap() == ("Linuxinout", ["uname"], "Linuxinout")

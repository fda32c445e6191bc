"""Nothing an isolate starts outlives it: children, daemons, trees, after a value, an
exception, a timeout, a crash, a violation; supervised workers and their restarts."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from isolates.orchestrator import (
    POOL,
    IsolateViolation,
    Namespaces,
    Restart,
    State,
    Supervisor,
    WorkerFailed,
)
from isolates.orchestrator._core.orphans import reaping
from isolates.sandbox import Action, Arg, Policy, Processes, Rule, SystemIO, Threads
from tests.forked import in_child
from tests.orchestrator import orphans, workers
from tests.orchestrator.procs import children, zombies

STDERR = Policy(SystemIO.nothing().allow_stderr())
#: How long a killed process may take to disappear: one whose parent died before it is
#: collected by init, which may poll for that (the isolate's own are gone at once).
SETTLE = 5.0


@pytest.fixture(autouse=True)
def _no_zombies_after() -> Iterator[None]:
    yield
    assert zombies() == [], "a process was left unreaped"


@pytest.fixture
def fresh_isolates() -> Iterator[None]:
    """No pooled interpreters: the isolate starts within the test, on its captured stdout."""
    size = POOL.size
    POOL.resize(0)
    yield
    POOL.resize(size)


def state(pid: int) -> str:
    """The process's state letter, or "gone" once it is dead and reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def _within(seconds: float, done: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def gone(*pids: int, within: float = SETTLE) -> bool:
    """Every one of ``pids`` has disappeared (dead and reaped), within ``within`` seconds."""
    return _within(within, lambda: all(state(pid) == "gone" for pid in pids))


def killed_then_gone(pid: int) -> bool:
    """Dead at once (a zombie at most), and reaped within SETTLE (by init, if its parent
    died first)."""
    return _within(1.0, lambda: state(pid) in ("Z", "gone")) and gone(pid)


def reported_pid(capfd: pytest.CaptureFixture[str]) -> int:
    match = re.search(r"pid (\d+)", capfd.readouterr().out)
    assert match, "the isolate did not report its child"
    return int(match.group(1))


# -- @isolate ------------------------------------------------------------------------------


def test_a_child_left_running_is_gone_when_the_call_returns() -> None:
    pid = orphans.leave_a_child()
    assert pid > 0
    assert gone(pid, within=1.0)


def test_a_double_forked_daemon_in_its_own_session_is_gone_too() -> None:
    pid = orphans.leave_a_daemon()
    assert gone(pid, within=1.0)


def test_a_child_left_inside_namespaces_but_a_pid_namespace_is_gone() -> None:
    pid = orphans.leave_a_child_in_namespaces()
    assert gone(pid, within=1.0)


def test_a_child_left_by_a_function_that_raises_is_gone() -> None:
    with pytest.raises(ChildProcessError) as err:
        orphans.leave_a_child_and_raise()
    assert gone(err.value.args[0], within=1.0)


def test_a_child_left_by_a_call_that_timed_out_is_gone(
    fresh_isolates: None, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(WorkerFailed, match="timed out"):
        orphans.leave_a_child_and_hang()
    assert killed_then_gone(reported_pid(capfd))


def test_a_child_left_by_a_cancelled_call_is_gone(
    fresh_isolates: None, capfd: pytest.CaptureFixture[str]
) -> None:
    async def main() -> None:
        with anyio.move_on_after(1.0):
            await orphans.leave_a_child_and_wait.aio()

    anyio.run(main)
    assert killed_then_gone(reported_pid(capfd))
    assert gone(*zombies())  # the cancelled call's isolate, reaped by the thread it ran on


def test_a_child_left_by_a_violation_is_gone(
    fresh_isolates: None, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(IsolateViolation) as err:
        orphans.leave_a_child_and_violate()
    assert err.value.syscall == "uname"
    assert killed_then_gone(reported_pid(capfd))


def test_a_child_left_by_an_isolate_that_exited_abruptly_is_gone(
    fresh_isolates: None, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(WorkerFailed) as err:
        orphans.leave_a_child_and_exit()
    assert err.value.exitcode == 3
    assert killed_then_gone(reported_pid(capfd))  # it stayed in the group: the group kill got it


@pytest.mark.parametrize("own_sessions", [False, True], ids=["in-group", "own-sessions"])
def test_a_small_fork_bomb_is_gone_entirely(own_sessions: bool) -> None:
    pids = orphans.leave_a_tree(3, 4, own_sessions)
    assert len(set(pids)) == 4 + 16 + 64
    assert gone(*pids, within=2.0)


def test_the_functions_own_child_runs_and_is_waited_for() -> None:
    assert orphans.wait_for_own_child(7) == 7


def test_a_forked_child_returning_from_the_function_never_answers_for_the_isolate() -> None:
    assert orphans.fork_and_return_in_both() == "the isolate"


# -- who pays -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Policy(), (False, False)),
        (Policy(Threads.nothing().allow_create()), (False, False)),
        (Policy(Processes.nothing().allow_fork()), (True, False)),
        (orphans.FORK, (True, True)),
        (Policy(default=Action.ALLOW), (True, True)),
        (Policy(Rule("clone", Arg(0) == 0x4111)), (True, False)),  # posix_spawn only
        (Policy(Rule("clone", Arg(0) == 0x00100011)), (True, False)),  # UNTRACED | SIGCHLD
    ],
    ids=["compute", "threads", "fork", "fork-wait", "allow-all", "spawn-rule", "odd-rule"],
)
def test_only_isolates_that_can_start_processes_wait_to_be_cleaned_up(
    policy: Policy, expected: tuple[bool, bool]
) -> None:
    assert reaping(policy, None) == expected


def test_a_pid_namespace_needs_no_cleanup_its_init_takes_everything_along() -> None:
    assert reaping(orphans.FORK, Namespaces(pid=True)) == (False, False)


# -- Supervisor ---------------------------------------------------------------------------


@pytest.mark.parametrize("confined", [False, True], ids=["unconfined", "confined"])
def test_a_workers_child_is_gone_after_run(confined: bool) -> None:
    def run() -> int:
        sup = Supervisor(policy=STDERR if confined else None)
        sup.add_worker("w", orphans.child_then_return, policy=orphans.FORK)
        pid: int = sup.run(timeout=60)["w"]
        return pid

    pid = in_child(run).unwrap()
    assert gone(pid)


def test_a_restarted_workers_child_is_gone_before_it_runs_again() -> None:
    def run() -> tuple[list[int], list[bool], Any, int]:
        sup = Supervisor()
        w = sup.add_worker("flaky", orphans.child_then_fail_until_told, policy=orphans.FORK,
                           restart=Restart.on_failure(limit=1, backoff=0.01))  # fmt: skip
        sup.connect(w, sup, workers.Item, name="pids")
        sup.start()
        first = sup.channel("pids").recv(timeout=30).n
        sup.channel("pids").send(workers.Item(0))  # fail, please
        while w.restarts == 0 or w.state is not State.RELEASED:
            time.sleep(0.01)
        second = sup.channel("pids").recv(timeout=30).n  # the renewed channel
        first_gone = gone(first, within=1.0)
        sup.channel("pids").send(workers.Item(1))
        result = sup.join(timeout=60)
        return [first, second], [first_gone, gone(second, within=1.0)], result, w.restarts

    pids, were_gone, result, restarts = in_child(run).unwrap()
    assert (result, restarts) == ({"flaky": pids[1]}, 1)
    assert were_gone == [True, True]


def test_a_confined_supervisor_still_ends_a_restarted_workers_children() -> None:
    def run() -> tuple[list[int], int]:
        sup = Supervisor(policy=STDERR)
        w = sup.add_worker("flaky", orphans.child_then_fail_until_told, policy=orphans.FORK,
                           restart=Restart.on_failure(limit=1, backoff=0.01))  # fmt: skip
        sup.connect(w, sup, workers.Item, name="pids")
        sup.start()
        first = sup.channel("pids").recv(timeout=30).n
        sup.channel("pids").send(workers.Item(0))
        while w.restarts == 0 or w.state is not State.RELEASED:
            time.sleep(0.01)
        second = sup.channel("pids").recv(timeout=30).n
        sup.channel("pids").send(workers.Item(1))
        return [first, second], sup.join(timeout=60)["flaky"]

    pids, result = in_child(run).unwrap()
    assert result == pids[1]
    assert gone(*pids)


def test_a_restart_that_fails_to_boot_leaves_no_isolate_behind(tmp_path: Path) -> None:
    def run() -> tuple[str, dict[int, str]]:
        sup = Supervisor()
        once = orphans.BootsOnce(str(tmp_path / "booted"))
        sup.add_worker("w", orphans.child_then_fail, policy=orphans.FORK, args=(once,),
                       restart=Restart.on_failure(limit=1, backoff=0.01))  # fmt: skip
        try:
            sup.run(timeout=60)
        except WorkerFailed as exc:
            return str(exc), children()
        return "no failure", children()

    message, left = in_child(run).unwrap()
    assert "boots only once" in message
    assert left == {}, "the isolate of the failed restart is still there"

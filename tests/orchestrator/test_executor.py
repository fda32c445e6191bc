"""IsolateExecutor: Future semantics, the concurrency bound, cancel and shutdown, with
real isolates."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from functools import partial
from pathlib import Path

import pytest

from isolates.orchestrator import IsolateExecutor, IsolateViolation, WorkerFailed
from isolates.sandbox import Action, Landlock, Policy
from tests.orchestrator import executor_targets as targets
from tests.orchestrator import targets as isolated
from tests.orchestrator.procs import zombies

DEADLINE = 20.0  # generous: only a hang reaches it


@pytest.fixture(autouse=True)
def _no_zombies_after() -> object:
    yield
    assert zombies() == [], "an isolate was left unreaped"


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < end, f"never saw {what}"
        time.sleep(0.005)


def _running(directory: Path) -> list[int]:
    return sorted(int(p.name.split(".")[1]) for p in directory.glob("running.*"))


def _ended(directory: Path, pid: int) -> bool:
    return pid not in _running(directory)


def _release(directory: Path, pid: int) -> None:
    (directory / f"release.{pid}").touch()


def test_values_come_back_and_submit_takes_keywords() -> None:
    with IsolateExecutor() as ex:
        assert ex.submit(targets.double, 21).result() == 42
        assert ex.submit(targets.add, 1, y=2).result() == 3


def test_a_builtin_exception_is_reraised_as_itself() -> None:
    with IsolateExecutor() as ex:
        with pytest.raises(ValueError) as err:
            ex.submit(targets.fail_value).result()
        assert err.value.args == ("bad input", 42)
        denied = ex.submit(targets.uname).exception()  # default policy: EPERM
        assert isinstance(denied, PermissionError) and denied.errno == errno.EPERM


def test_a_custom_exception_is_worker_failed_with_the_remote_traceback() -> None:
    with IsolateExecutor() as ex, pytest.raises(WorkerFailed) as err:
        ex.submit(targets.fail_custom).result()
    assert "ParseError" in str(err.value) and "unexpected" in str(err.value)
    assert "fail_custom" in str(err.value.__cause__)


def test_a_denied_call_is_an_isolate_violation_and_the_allowed_neighbour_runs() -> None:
    with IsolateExecutor(Policy(default=Action.KILL_PROCESS)) as ex:
        with pytest.raises(IsolateViolation) as err:
            ex.submit(targets.uname).result()
        assert err.value.syscall == "uname"
        assert ex.submit(targets.double, 4).result() == 8


def test_max_workers_bounds_how_many_isolates_run_at_once(tmp_path: Path) -> None:
    # Each call marks itself running with a file and waits until released by name; so
    # the calls seen running are exactly those started and not yet released.
    with IsolateExecutor(max_workers=2, landlock=Landlock().tmp(tmp_path)) as ex:
        futures = [ex.submit(targets.hold, str(tmp_path)) for _ in range(5)]
        for _ in range(4):
            _wait_for(lambda: len(_running(tmp_path)) == 2, "two calls running")
            assert sum(f.running() for f in futures) == 2
            first = _running(tmp_path)[0]
            _release(tmp_path, first)
            _wait_for(partial(_ended, tmp_path, first), "the released call to end")
        _wait_for(lambda: len(_running(tmp_path)) == 1, "the last call")
        _release(tmp_path, _running(tmp_path)[0])
        seen = [f.result(DEADLINE) for f in futures]
    assert max(seen) == 2  # they did overlap, and never more than two


def test_timeout_and_env_apply_to_every_call() -> None:
    with IsolateExecutor(timeout=0.5, env={"GREETING": "hello"}) as ex:
        assert ex.submit(targets.environment).result(DEADLINE) == {"GREETING": "hello"}
        with pytest.raises(WorkerFailed, match="timed out"):
            ex.submit(targets.spin).result(DEADLINE)


def test_an_isolated_function_runs_under_the_executors_policy() -> None:
    with IsolateExecutor(Policy(default=Action.KILL_PROCESS)) as ex:
        assert ex.submit(isolated.echo, [1, "a"]).result() == [1, "a"]
        with pytest.raises(IsolateViolation):
            ex.submit(isolated.uname_denied).result()  # EPERM under its own @isolate


def test_map_returns_results_in_order() -> None:
    with IsolateExecutor(max_workers=2) as ex:
        assert list(ex.map(targets.add, range(6), range(10, 16))) == [
            x + y for x, y in zip(range(6), range(10, 16), strict=True)
        ]


def test_cancel_before_it_runs_means_it_never_runs(tmp_path: Path) -> None:
    with IsolateExecutor(max_workers=1, landlock=Landlock().tmp(tmp_path)) as ex:
        blocker = ex.submit(targets.hold, str(tmp_path))
        queued = ex.submit(targets.hold, str(tmp_path))
        _wait_for(lambda: len(_running(tmp_path)) == 1, "the first call running")
        assert queued.cancel() and queued.cancelled()
        _release(tmp_path, _running(tmp_path)[0])
        assert blocker.result(DEADLINE) == 1
    assert _running(tmp_path) == []  # the cancelled call never started
    with pytest.raises(CancelledError):
        queued.result()


def test_cancel_while_running_kills_the_isolate() -> None:
    with IsolateExecutor(max_workers=1) as ex:
        spinning = ex.submit(targets.spin)
        _wait_for(spinning.running, "the call running")
        assert spinning.cancel() and spinning.cancelled()
        with pytest.raises(CancelledError):
            spinning.result(DEADLINE)
        assert ex.submit(targets.double, 5).result(DEADLINE) == 10  # its slot is free


def test_shutdown_cancel_futures_cancels_the_pending_ones(tmp_path: Path) -> None:
    ex = IsolateExecutor(max_workers=1, landlock=Landlock().tmp(tmp_path))
    running = ex.submit(targets.hold, str(tmp_path))
    pending = [ex.submit(targets.double, n) for n in range(3)]
    _wait_for(lambda: len(_running(tmp_path)) == 1, "the first call running")
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in pending)
    _release(tmp_path, _running(tmp_path)[0])
    assert running.result(DEADLINE) == 1  # a running call is left to finish
    ex.shutdown(wait=True)


def test_shutdown_wait_returns_once_every_call_has_finished() -> None:
    ex = IsolateExecutor(max_workers=2)
    futures = [ex.submit(targets.double, n) for n in range(4)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [0, 2, 4, 6]


def test_submit_after_shutdown_raises() -> None:
    ex = IsolateExecutor()
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(targets.double, 1)
    with IsolateExecutor() as ex:
        pass
    with pytest.raises(RuntimeError):
        ex.map(targets.double, [1])


def test_run_in_executor_awaits_an_isolated_call() -> None:
    async def main(ex: IsolateExecutor) -> list[int]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(ex, targets.double, n)
                                           for n in range(3))))  # fmt: skip

    with IsolateExecutor(max_workers=2) as ex:
        assert asyncio.run(main(ex)) == [0, 2, 4]


def test_cancelling_the_awaiting_task_kills_the_isolate() -> None:
    async def main(ex: IsolateExecutor) -> Future[None]:
        loop = asyncio.get_running_loop()
        future = ex.submit(targets.spin)
        task = asyncio.ensure_future(asyncio.wrap_future(future, loop=loop))
        while not future.running():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return future

    with IsolateExecutor(max_workers=1) as ex:
        spun = asyncio.run(main(ex))
        assert spun.cancelled()
        assert ex.submit(targets.double, 3).result(DEADLINE) == 6


def test_bad_arguments_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        IsolateExecutor(max_workers=0)
    with pytest.raises(Exception, match="Policy"):
        IsolateExecutor("strict")  # type: ignore[arg-type]


def test_each_call_gets_a_fresh_process() -> None:
    with IsolateExecutor(max_workers=1) as ex:
        pids = [ex.submit(os.getpid).result() for _ in range(3)]
    assert len(set(pids)) == 3 and os.getpid() not in pids


def test_a_future_is_a_concurrent_futures_future() -> None:
    with IsolateExecutor() as ex:
        assert isinstance(ex.submit(targets.double, 1), Future)

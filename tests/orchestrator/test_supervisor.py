"""The Supervisor: the barrier, channels, lifecycle, restarts, shutdown, with real
isolates. Every supervisor runs in a forked child, since it confines itself."""

from __future__ import annotations

import dataclasses
import errno
import gc
import logging
import os
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from isolates.orchestrator import (
    GraphError,
    IsolateViolation,
    Namespaces,
    Restart,
    State,
    Supervisor,
    WorkerFailed,
)
from isolates.sandbox import Action, Landlock, Policy, PolicyError, SystemIO, Threads
from tests.forked import in_child
from tests.orchestrator import workers
from tests.orchestrator.procs import children

STDERR = Policy(SystemIO.nothing().allow_stderr())
READ_PROC = Policy(
    "getppid", SystemIO.nothing().allow_open_readonly().allow_read().allow_metadata()
)
SLEEPER = Policy(Threads.nothing().allow_sleep())


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_workers_exchange_typed_messages_and_results_come_back() -> None:
    def run() -> dict[str, Any]:
        sup = Supervisor(policy=STDERR)
        p = sup.add_worker("producer", workers.produce, args=(100,))
        c = sup.add_worker("consumer", workers.consume)
        sup.connect(p, c, workers.Item, name="items")
        return sup.run(timeout=60)

    assert in_child(run).unwrap() == {"producer": 100, "consumer": 4950}


def test_no_worker_code_runs_before_the_supervisor_is_confined() -> None:
    def run() -> str:
        sup = Supervisor(policy=STDERR)
        sup.add_worker("probe", workers.supervisor_seccomp_mode, policy=READ_PROC)
        return sup.run(timeout=60)["probe"]

    assert in_child(run).unwrap() == "2"  # SECCOMP_MODE_FILTER, seen by the worker


def test_the_supervisor_reports_its_own_enforcement() -> None:
    def run() -> tuple[str, bool]:
        sup = Supervisor(policy=STDERR)
        sup.add_worker("w", workers.log_and_report)
        sup.run(timeout=60)
        assert sup.status is not None
        return sup.status.enforcement, sup.status.all_threads

    assert in_child(run).unwrap() == ("full", True)


def test_landlock_binds_every_thread_of_the_supervisor(tmp_path: Path) -> None:
    # Landlock ABI 7 confines only the thread that applies it: the supervisor's helper
    # threads must take the domain too, or the status could not honestly say "full".
    from isolates.orchestrator._core.runtime import SPAWNER

    def run() -> tuple[str, str, int | None, int | None]:
        sup = Supervisor(
            policy=Policy(SystemIO.nothing().allow_stderr(), Landlock().read(tmp_path))
        )
        sup.add_worker("w", workers.log_and_report)
        sup.start()
        here, spawner = (
            _read_errno("/etc/hostname"),
            SPAWNER.run(lambda: _read_errno("/etc/hostname")),
        )
        sup.join(timeout=60)
        assert sup.status is not None and sup.status.landlock is not None
        return sup.status.enforcement, sup.status.landlock.enforcement, here, spawner

    assert in_child(run).unwrap() == ("full", "full", errno.EACCES, errno.EACCES)


def test_released_workers_run_with_the_normal_scheduling_policy() -> None:
    # Workers wait at the barrier as SCHED_BATCH (so one send releases them all at once)
    # and must get SCHED_OTHER back before their code runs.
    def run() -> dict[str, Any]:
        sup = Supervisor(policy=STDERR)
        for i in range(3):
            sup.add_worker(f"w{i}", workers.scheduling_policy,
                           policy=Policy(Threads.nothing().allow_priority()))  # fmt: skip
        return sup.run(timeout=60)

    assert in_child(run).unwrap() == dict.fromkeys(["w0", "w1", "w2"], os.SCHED_OTHER)


def _read_errno(path: str) -> int | None:
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc.errno


def _explode() -> None:
    raise RuntimeError("this argument cannot be rebuilt in the isolate")


class _Unloadable:
    def __reduce__(self) -> tuple[object, ...]:
        return (_explode, ())


def test_a_worker_failing_before_ready_releases_nobody(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    writer = Policy(Landlock().write(tmp_path), SystemIO.nothing().allow_close())

    def run() -> str:
        sup = Supervisor(policy=STDERR)
        sup.add_worker("recorder", workers.record_start, args=(str(marker),), policy=writer)
        sup.add_worker("broken", workers.consume, args=(_Unloadable(),))
        try:
            sup.run(timeout=60)
        except WorkerFailed as exc:
            assert [w.state for w in sup.workers.values()] != [State.RELEASED] * 2
            return f"{exc.name}: {exc}"
        return "ran"

    outcome = in_child(run).unwrap()
    assert outcome.startswith("broken: ") and "cannot be rebuilt" in outcome
    assert not marker.exists(), "a worker ran although another never got ready"


def test_sending_the_wrong_type_fails_the_worker_with_its_name() -> None:
    def run() -> str:
        sup = Supervisor()
        w = sup.add_worker("liar", workers.send_wrong_type)
        c = sup.add_worker("consumer", workers.consume)
        sup.connect(w, c, workers.Item, name="items")
        try:
            sup.run(timeout=60)
        except WorkerFailed as exc:
            return str(exc)
        return "no error"

    message = in_child(run).unwrap()
    assert "'liar'" in message and "Item" in message


def test_a_channel_between_a_worker_and_the_supervisor() -> None:
    def run() -> tuple[list[int], dict[str, Any]]:
        sup = Supervisor(policy=STDERR)
        w = sup.add_worker("echo", workers.echo_with_supervisor)
        sup.connect(w, sup, workers.Item, name="ctl")
        sup.start()
        ch = sup.channel("ctl")
        got = []
        for n in (1, 2, 3):
            ch.send(workers.Item(n))
            got.append(ch.recv(timeout=10).n)
        ch.close()
        return got, sup.join(timeout=60)

    assert in_child(run).unwrap() == ([10, 20, 30], {"echo": 3})


def test_worker_logs_reach_the_supervisor_tagged_with_the_worker() -> None:
    def run() -> tuple[list[tuple[str, str]], dict[str, Any]]:
        seen: list[tuple[str, str]] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append((getattr(record, "worker", "?"), record.getMessage()))

        logging.getLogger("isolates.worker").addHandler(Keep())
        sup = Supervisor()
        sup.add_worker("talker", workers.log_and_report)
        return seen, sup.run(timeout=60)

    seen, results = in_child(run).unwrap()
    assert seen == [("talker", "hello from talker")]
    assert results == {"talker": {"name": "talker", "enforcement": "full"}}


def test_a_violation_in_a_worker_names_worker_and_syscall() -> None:
    def run() -> tuple[str, str]:
        sup = Supervisor(policy=STDERR)
        sup.add_worker("bad", workers.violate, policy=Policy(default=Action.KILL_PROCESS))
        try:
            sup.run(timeout=60)
        except IsolateViolation as exc:
            return exc.name, exc.syscall
        return "", ""

    assert in_child(run).unwrap() == ("bad", "uname")


def test_restart_on_failure_gives_up_after_the_limit_and_peers_reconnect() -> None:
    def run() -> tuple[str, int, Any]:
        sup = Supervisor(policy=STDERR)
        flaky = sup.add_worker("flaky", workers.crash,
                               restart=Restart.on_failure(limit=2, backoff=0.01))  # fmt: skip
        peer = sup.add_worker("peer", workers.count_reconnects, args=(2,))
        sup.connect(flaky, peer, workers.Item, name="items")
        try:
            sup.run(timeout=60)
        except WorkerFailed as exc:
            return exc.name, flaky.restarts, peer.result
        return "no failure", flaky.restarts, peer.result

    name, restarts, _ = in_child(run).unwrap()
    assert (name, restarts) == ("flaky", 2)


def test_a_restarted_worker_can_succeed_with_fresh_channels() -> None:
    def run() -> tuple[dict[str, Any], int]:
        sup = Supervisor(policy=STDERR)
        w = sup.add_worker("flaky", workers.crash_unless_told,
                           restart=Restart.on_failure(limit=1, backoff=0.01))  # fmt: skip
        sup.connect(w, sup, workers.Item, name="ctl")
        sup.start()
        sup.channel("ctl").send(workers.Item(0))  # crash, please
        while w.restarts == 0 or w.state is not State.RELEASED:
            time.sleep(0.01)
        sup.channel("ctl").send(workers.Item(1))  # the renewed channel
        return sup.join(timeout=60), w.restarts

    assert in_child(run).unwrap() == ({"flaky": 1}, 1)


def test_stop_asks_then_terminates_then_kills() -> None:
    def run() -> dict[str, str]:
        sup = Supervisor(policy=STDERR, grace=2.0)
        sup.add_worker("polite", workers.until_stopped, policy=SLEEPER)
        blocked = sup.add_worker("blocked", workers.block_forever)
        sup.add_worker("stubborn", workers.ignore_sigterm, policy=SLEEPER)
        sup.connect(blocked, sup, workers.Item, name="items")
        sup.start()
        time.sleep(0.3)
        sup.stop()
        return {w.name: f"{w.state.value}:{w.result}" for w in sup.workers.values()}

    states = in_child(run).unwrap()
    assert states == {
        "polite": "exited:stopped politely",
        "blocked": "stopped:None",
        "stubborn": "stopped:None",
    }


def test_no_zombies_no_orphans_no_leaked_descriptors() -> None:
    def one_run() -> None:
        sup = Supervisor()
        p = sup.add_worker("producer", workers.produce, args=(10,))
        c = sup.add_worker("consumer", workers.consume)
        sup.connect(p, c, workers.Item, name="items")
        sup.run(timeout=60)

    def run() -> tuple[set[str], set[str], dict[int, str]]:
        one_run()  # the first run starts the spawner and monitor threads, for good
        before = _fds()
        one_run()
        return before, _fds(), children()

    before, after, kids = in_child(run).unwrap()
    assert after == before, f"leaked: {after - before}"
    assert kids == {}, f"processes left behind: {kids}"


def test_workers_die_with_their_supervisor(tmp_path: Path) -> None:
    script = tmp_path / "sup.py"
    script.write_text(
        textwrap.dedent("""
        import time
        from isolates.orchestrator import Supervisor
        from isolates.sandbox import Policy, Threads
        from tests.orchestrator import workers
        sup = Supervisor()
        sup.add_worker("a", workers.until_stopped, policy=Policy(Threads.nothing().allow_sleep()))
        sup.start()
        print("started", flush=True)
        time.sleep(60)
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    worker_pids = set(children(proc.pid))
    assert worker_pids
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in worker_pids):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.05)


def test_a_worker_in_its_own_namespaces() -> None:
    def run() -> dict[str, Any]:
        sup = Supervisor()
        sup.add_worker("boxed", workers.namespaced, policy=Policy("uname"),
                       namespaces=Namespaces(hostname="boxed"))  # fmt: skip
        return sup.run(timeout=60)

    assert in_child(run).unwrap() == {"boxed": {"pid": 1, "hostname": "boxed"}}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_with_and_wait(backend: str) -> None:
    def run() -> dict[str, Any]:
        async def main() -> dict[str, Any]:
            sup = Supervisor()
            p = sup.add_worker("producer", workers.produce, args=(5,))
            c = sup.add_worker("consumer", workers.consume)
            sup.connect(p, c, workers.Item, name="items")
            async with sup:
                return await sup.wait()

        return anyio.run(main, backend=backend)

    assert in_child(run).unwrap() == {"producer": 5, "consumer": 10}


def test_declaration_errors_name_the_worker() -> None:
    sup = Supervisor()
    a = sup.add_worker("a", workers.consume)
    with pytest.raises(GraphError, match="'a' is declared twice"):
        sup.add_worker("a", workers.consume)
    with pytest.raises(PolicyError, match="worker 'b': policy must be a Policy"):
        sup.add_worker("b", workers.consume, policy="stdio")  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="'ghost' is not a worker"):
        sup.connect(a, "ghost", workers.Item)
    other = Supervisor().add_worker("x", workers.consume)
    with pytest.raises(GraphError, match="not a worker of this supervisor"):
        sup.connect(a, other, workers.Item)
    with pytest.raises(PolicyError, match="worker 'c': restart="):
        sup.add_worker("c", workers.consume, restart="always")


# -- the lifecycle: every end is a final state, and join() returns -----------------------


def _restarting_worker(sup: Supervisor, marker: Path, then: str, seconds: float = 0.0) -> Any:
    """A worker that always fails, restarted once; its argument does ``then`` when the
    restart unpickles it (workers.OnRestart)."""
    argument = workers.OnRestart(str(marker), then, seconds)
    restart = Restart.on_failure(limit=1, backoff=0.01)
    return sup.add_worker("w", workers.always_fail, args=(argument,), restart=restart)


def test_stop_while_a_restart_boots_ends_the_worker_stopped(tmp_path: Path) -> None:
    # The restart sits between boot and READY (its argument takes 3 s to unpickle) when
    # stop() escalates to SIGTERM: the worker is STOPPED, and join() returns.
    def run() -> tuple[str, int, dict[str, Any]]:
        sup = Supervisor(grace=1.0)
        w = _restarting_worker(sup, tmp_path / "booted", "sleep", 3.0)
        sup.start()
        deadline = time.monotonic() + 20
        while not (w.restarts == 1 and w.state is State.BOOTED):
            assert time.monotonic() < deadline, f"never restarted: {w.state}"
            time.sleep(0.01)
        sup.stop()
        return w.state.value, w.restarts, sup.join(timeout=10)

    assert in_child(run).unwrap() == ("stopped", 1, {"w": None})


def test_a_restart_that_never_gets_ready_times_out_as_a_first_boot_would(
    tmp_path: Path,
) -> None:
    def run() -> tuple[str, str, float]:
        sup = Supervisor(boot_timeout=2.0)
        w = _restarting_worker(sup, tmp_path / "booted", "sleep", 60.0)
        start = time.monotonic()
        try:
            sup.run(timeout=20)
        except WorkerFailed as exc:
            return w.state.value, str(exc), time.monotonic() - start
        return w.state.value, "no failure", time.monotonic() - start

    state, message, seconds = in_child(run).unwrap()
    assert state == "failed" and "'w' timed out during boot" in message, message
    assert seconds < 2.0 + 10, "the restart waited past the boot timeout"


def test_a_restarted_isolate_that_dies_before_its_go_fails_the_worker(tmp_path: Path) -> None:
    # Its GO meets a closed control channel: the worker fails (it does not hang in
    # READY with its waiter thread gone), and the failure says so.
    def run() -> tuple[str, str]:
        sup = Supervisor()
        w = _restarting_worker(sup, tmp_path / "booted", "refuse_go")
        try:
            sup.run(timeout=20)
        except WorkerFailed as exc:
            return w.state.value, str(exc)
        return w.state.value, "no failure"

    state, message = in_child(run).unwrap()
    assert state == "failed" and "exited before it was released" in message, message


def test_an_aborted_start_leaves_every_worker_in_a_final_state() -> None:
    def run() -> tuple[dict[str, str], bool]:
        sup = Supervisor()
        sup.add_worker("fine", workers.consume)
        broken = sup.add_worker("broken", workers.consume, args=(_Unloadable(),))
        try:
            sup.start()
        except WorkerFailed as exc:
            states = {w.name: w.state.value for w in sup.workers.values()}
            return states, broken.failure is exc
        return {}, False

    assert in_child(run).unwrap() == ({"fine": "stopped", "broken": "failed"}, True)


# -- declaring the graph -------------------------------------------------------------------


def test_graph_misuse_is_a_graph_error_not_a_policy_error() -> None:
    sup = Supervisor()
    a = sup.add_worker("a", workers.consume)
    sup.connect(a, sup, workers.Item, name="taken")
    misuses: list[Callable[[], object]] = [
        lambda: sup.add_worker("a", workers.consume),  # a duplicate name
        lambda: sup.add_worker("no spaces", workers.consume),
        lambda: sup.connect(a, a, workers.Item),  # a channel from a worker to itself
        lambda: sup.connect(sup, sup, workers.Item),
        lambda: sup.connect(a, sup, workers.Item, name="taken"),
    ]
    for misuse in misuses:
        with pytest.raises(GraphError) as caught:
            misuse()
        assert isinstance(caught.value, ValueError) and not isinstance(caught.value, PolicyError)
    assert sup.connect(a, sup, workers.Item) == "a-supervisor"  # the allowed neighbour


def test_connect_checks_the_message_type_without_opening_a_socket() -> None:
    @dataclasses.dataclass
    class Lenient:  # a dataclass: its decoder would drop unknown fields
        n: int

    sup = Supervisor()
    a, b = sup.add_worker("a", workers.consume), sup.add_worker("b", workers.consume)
    before = _fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sup.connect(a, b, workers.Item, name="items") == "items"
        with pytest.raises(GraphError, match="channel 'lenient': Lenient would accept"):
            sup.connect(a, b, Lenient, name="lenient")
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert _fds() == before

"""The lean isolate and the fork server, in real isolates.

- An isolate reaches READY without msgspec, typing, inspect or dataclasses (it encodes
  its result itself), yet rich results still work, before and after confinement.
- The fork server forks a fresh confined isolate per call; its crash is reported and
  repaired and never hangs a caller; no call leaves a zombie behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from isolates.orchestrator import FORK_SERVER, IsolateExecutor, WorkerFailed, isolate
from isolates.sandbox import Policy, Processes, SystemIO, Threads
from tests.orchestrator import lean_targets as t
from tests.orchestrator.escapes import memory_doors
from tests.orchestrator.procs import children, zombies

MODES = ["fork-server", "exec"]
SLEEPER = Policy(Threads.nothing().allow_sleep())
#: Reading /proc/self, for isolates that report how they were started.
INTROSPECT = Policy(
    SystemIO.nothing().allow_open_readonly().allow_read().allow_metadata().allow_close(),
    "getppid",
    "getpgrp",
)
#: What no trivial isolate may import for itself (the fork server imports msgspec once,
#: for its children; an exec'd isolate never does unless its call needs it).
HEAVY = {"msgspec", "typing", "inspect", "dataclasses", "enum", "re", "pickle", "traceback",
         "linecache", "socket", "signal", "threading", "difflib", "platform"}  # fmt: skip


@pytest.fixture(autouse=True)
def _no_zombies_after() -> object:
    yield
    assert zombies() == [], "an isolate was left unreaped"
    server = FORK_SERVER.pid
    if server is not None:  # the server reaps its own children before a call returns
        assert [pid for pid, s in children(server).items() if s == "Z"] == []


#: What an isolate imports to record its lines while coverage.py measures its parent
#: (_core/coverage_tracer.py): its tracer follows threads.
MEASURING = {"threading"}


def _measured() -> bool:
    coverage = sys.modules.get("coverage")
    return coverage is not None and coverage.Coverage.current() is not None


def test_an_exec_isolate_imports_nothing_heavy_to_run_a_trivial_call() -> None:
    loaded = set(isolate(t.loaded_modules, start="exec")())
    assert loaded & HEAVY == (loaded & MEASURING if _measured() else set())
    assert "tests.orchestrator.lean_targets" in loaded  # the call's own module, of course


def test_the_fork_servers_children_import_only_what_the_server_preloaded() -> None:
    # A forked isolate has what an exec'd one has, plus what the server imported once for
    # all its children (msgspec, for rich results): nothing per call.
    forked = set(isolate(t.loaded_modules, start="fork-server")())
    assert set(isolate(t.loaded_modules, start="fork-server")()) == forked
    execd = set(isolate(t.loaded_modules, start="exec")())
    assert forked - execd <= _imported_by("import msgspec, socket, select, subprocess, threading")


def _imported_by(code: str) -> set[str]:
    server = "from isolates.orchestrator._core import fork_server"
    probe = f"import sys; {code}; {server}; print(*sys.modules)"
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True,
                         check=True, cwd=os.getcwd())  # fmt: skip
    return set(out.stdout.split())


@pytest.mark.parametrize("start", MODES)
def test_rich_results_still_encode_under_a_policy_that_reads_no_files(start: str) -> None:
    # Policy(): compute only. A set, or a dataclass from a module that imports
    # dataclasses, needs the encoder loaded before confinement: it is.
    from tests.orchestrator import targets

    assert sorted(isolate(t.a_set, start=start)()) == [1, 2, 3]
    box = isolate(targets.make_box.__wrapped__, start=start)("x")
    assert box == targets.Box("x", 1.5)


@pytest.mark.parametrize("start", MODES)
def test_a_failure_keeps_its_chain_and_source_lines(start: str) -> None:
    with pytest.raises(ValueError, match="while looking it up") as err:
        isolate(t.fail_chained, start=start)()
    remote = str(err.value.__cause__)
    assert "KeyError: 'missing'" in remote
    assert "direct cause of the following exception" in remote
    assert '{}["missing"]' in remote and "in fail_chained" in remote
    assert "isolate_main" not in remote  # the orchestrator's own frames are not shown


@pytest.mark.parametrize("start", MODES)
def test_each_call_is_a_fresh_confined_process_in_its_own_group(start: str) -> None:
    f = isolate(INTROSPECT, start=start)(t.facts)
    first, second = f(), f()
    assert first["pid"] != second["pid"]
    for facts in (first, second):
        assert facts["seccomp"] == "2" and facts["no_new_privs"] == "1"
        assert facts["own_group"] is True
        assert facts["environ"] == {}
    expected_parent = FORK_SERVER.pid if start == "fork-server" else os.getpid()
    assert first["parent"] == expected_parent


@pytest.fixture
def siblings() -> Iterator[None]:
    """Three forked isolates waiting in the pool while the test runs (then as before)."""
    size = FORK_SERVER.pool.size
    FORK_SERVER.pool.resize(3)
    FORK_SERVER.pool.warm()
    yield
    FORK_SERVER.pool.resize(size)


@pytest.mark.usefixtures("siblings")
def test_a_forked_isolate_holds_no_descriptor_of_the_server_or_its_siblings() -> None:
    # Siblings wait in the pool meanwhile; the server holds a status socket for each.
    fds = isolate(INTROSPECT, start="fork-server")(t.descriptors)()
    others = sorted(what for fd, what in fds.items() if fd > 2)
    # Its control channel, and the O_PATH "/" its own Landlock domain was built with.
    assert len(others) == 2 and others[0] == "/" and others[1].startswith("socket:"), fds


def test_an_isolate_that_may_start_processes_is_execd_whatever_was_asked() -> None:
    # Its tree is ended by process group, which needs it to be our own child.
    facts = isolate(INTROSPECT.extend(Processes.everything()), start="fork-server")(t.facts)()
    assert facts["parent"] == os.getpid()


def test_by_default_a_process_first_call_is_execd_and_later_ones_forked(
    tmp_path: Path,
) -> None:
    # "auto": exec is faster for a fresh process's first call; the fork server, started
    # after it in the background, for every call once it runs.
    script = tmp_path / "auto.py"
    script.write_text(
        textwrap.dedent("""
        import os, time
        from isolates.orchestrator import FORK_SERVER, isolate
        from tests.orchestrator.lean_targets import facts
        from tests.orchestrator.test_lean_child import INTROSPECT
        f = isolate(INTROSPECT)(facts)
        first = f()["parent"]
        deadline = time.monotonic() + 30
        while FORK_SERVER.pid is None and time.monotonic() < deadline:
            time.sleep(0.01)
        print(first == os.getpid(), f()["parent"] == FORK_SERVER.pid, flush=True)
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_the_lean_isolates_constants_are_the_wires() -> None:
    # The isolate cannot import wire.py (msgspec): its copies must not drift.
    from isolates.orchestrator._core import isolate_main, lean_wire, wire

    assert isolate_main.GO_BYTE == wire.GO_BYTE
    assert lean_wire.MAX_FDS == wire.MAX_BOOT_FDS


def test_an_unknown_start_mode_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="start='spawn'"):
        isolate(start="spawn")
    with pytest.raises(ValueError, match="start='forkserver'"):
        IsolateExecutor(start="forkserver")


def test_a_fork_server_killed_between_calls_is_restarted() -> None:
    f = isolate(INTROSPECT, start="fork-server")(t.facts)
    server = f()["parent"]
    restarts = FORK_SERVER.restarts
    os.kill(server, signal.SIGKILL)
    _wait_gone(server)
    again = f()
    assert again["parent"] != server and again["parent"] == FORK_SERVER.pid
    assert FORK_SERVER.restarts == restarts + 1


def test_a_fork_server_killed_during_a_call_fails_that_call_and_not_the_next() -> None:
    f = isolate(SLEEPER, start="fork-server")(t.sleep_then)
    server = isolate(INTROSPECT, start="fork-server")(t.facts)()["parent"]
    killer = subprocess.Popen(
        [sys.executable, "-c", f"import os, time; time.sleep(1); os.kill({server}, 9)"]
    )
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match="killed by SIGKILL"):
        f(1, 30)  # its isolate dies with the server (PDEATHSIG): no hang
    assert time.monotonic() - started < 15
    killer.wait()
    assert f(2, 0) == 2


def test_an_executor_runs_both_start_modes() -> None:
    for start in MODES:
        with IsolateExecutor(SLEEPER, max_workers=2, start=start) as ex:
            assert list(ex.map(t.sleep_then, range(6), [0] * 6)) == list(range(6))


def test_the_fork_server_ends_with_its_parent(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent("""
        from isolates.orchestrator import FORK_SERVER, isolate
        from tests.orchestrator.lean_targets import facts
        from tests.orchestrator.test_lean_child import INTROSPECT
        parent = isolate(INTROSPECT, start="fork-server")(facts)()["parent"]
        print(parent, FORK_SERVER.pid, flush=True)
        import os
        os._exit(0)  # no atexit: the server must still go (PDEATHSIG, then EOF)
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    parent, server = (int(x) for x in out.stdout.split())
    assert parent == server
    _wait_gone(server)


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z":
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        time.sleep(0.01)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.usefixtures("siblings")
def test_a_forked_isolate_cannot_reach_into_its_server_or_a_sibling() -> None:
    # Even with every file call allowed: its Landlock domain is its own, and neither the
    # server nor a sibling waiting in the pool is in it.
    server = FORK_SERVER.pid
    sibling = FORK_SERVER.pool.pids[-1]  # the two calls below take the first two
    poke = isolate(Policy(SystemIO.everything()), start="fork-server")(memory_doors)
    for target in (server, sibling):
        assert target is not None
        assert poke(target) == {
            "parent mem": "EACCES", "parent environ": "EACCES", "own mem": "ok",
        }  # fmt: skip

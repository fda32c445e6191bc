"""@isolate: values, exceptions, failures and the parent's safety, with real isolates."""

from __future__ import annotations

import dataclasses
import datetime
import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from isolates.orchestrator import (
    FORK_SERVER,
    POOL,
    IsolateViolation,
    RemoteTraceback,
    WorkerFailed,
    isolate,
)
from isolates.orchestrator.testing import assert_denied
from isolates.sandbox import Policy
from tests.orchestrator import targets
from tests.orchestrator.procs import children, zombies


@pytest.fixture(autouse=True)
def _no_zombies_after() -> object:
    yield
    assert zombies() == [], "an isolate was left unreaped"


@pytest.mark.parametrize(
    "value",
    [0, -7, 2**63 - 1, 3.25, "text", b"\x00bytes", None, True, [1, [2, "x"]], {"a": {"b": 1}}],
)
def test_plain_values_round_trip(value: object) -> None:
    assert targets.echo(value) == value


def test_structs_and_dataclasses_come_back_typed_by_the_annotation() -> None:
    assert targets.make_point(1, 2) == targets.Point(1, 2)
    assert targets.make_box("a") == targets.Box("a", 1.5)
    assert targets.pair() == (1, "a")
    assert targets.when() == datetime.datetime(2026, 11, 29, 12, tzinfo=datetime.UTC)


def test_without_an_annotation_values_come_back_as_plain_data() -> None:
    assert targets.make_box_untyped("b") == {"label": "b", "size": 2.5}


def test_builtin_exceptions_are_reraised_with_the_remote_traceback() -> None:
    with pytest.raises(ValueError) as err:
        targets.fail_value()
    assert err.value.args == ("bad input", 42)
    cause = err.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert 'raise ValueError("bad input", 42)' in cause.text
    assert "in fail_value" in cause.text


def test_a_denied_syscall_surfaces_as_the_oserror_with_its_errno() -> None:
    with pytest.raises(PermissionError) as err:
        targets.uname_denied()
    assert err.value.errno == errno.EPERM


def test_custom_exceptions_become_worker_failed_with_their_traceback() -> None:
    with pytest.raises(WorkerFailed) as err:
        targets.fail_custom()
    assert err.value.name == "fail_custom"
    assert err.value.remote_type == "tests.orchestrator.targets.ParseError"
    assert "line 3: unexpected '}'" in str(err.value)
    assert "raise ParseError" in (err.value.remote_traceback or "")


def test_lambdas_and_closures_travel_by_value() -> None:
    factor = 3
    assert isolate(lambda x: x * 2)(21) == 42
    assert isolate()(lambda x: x * factor)(5) == 15

    def local(x: int) -> int:
        return x + factor

    assert isolate(local)(1) == 4


def test_main_module_functions_travel_by_value(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(
        textwrap.dedent("""
        from isolates.orchestrator import isolate

        @isolate
        def square(x: int) -> int:
            return x * x

        def helper(x):
            return x + 1

        print(square(7), isolate(helper)(1))
    """)
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["49", "2"]


def test_an_isolated_function_pickled_by_value_keeps_its_own_policy() -> None:
    """Sent by value anywhere (cloudpickle: what Dask and Ray use), an @isolate'd closure
    comes back an isolated function under its own policy, not the bare function; sent
    into an isolate by value with a function calling it, it runs there bare, as before."""
    import cloudpickle

    from isolates.sandbox import Landlock

    policy = Policy(Landlock().read("/etc/hostname"))

    def read(path: str) -> str:
        with open(path) as f:
            return f.read()

    again = cloudpickle.loads(cloudpickle.dumps(isolate(policy)(read)))
    assert again("/etc/hostname") == Path("/etc/hostname").read_text()  # the neighbour
    with pytest.raises(PermissionError):
        again("/etc/passwd")  # its own policy came with it
    assert pickle.loads(pickle.dumps(policy)).compile().bpf == policy.compile().bpf
    inner = isolate(policy)(read)
    outer = isolate(Policy(Landlock().read("/etc/hostname").read("/etc/passwd")))
    assert outer(lambda: inner("/etc/passwd"))() == Path("/etc/passwd").read_text()


def test_a_violation_names_the_worker_and_the_syscall() -> None:
    with pytest.raises(IsolateViolation) as err:
        targets.uname_killed()
    assert err.value.syscall == "uname"
    assert err.value.name == "uname_killed"
    assert len(err.value.syscall_args) == 6
    assert "uname(" in str(err.value)


def test_a_crash_is_reported_with_its_signal() -> None:
    with pytest.raises(WorkerFailed) as err:
        targets.crash()
    assert err.value.signal == signal.SIGSEGV
    assert "SIGSEGV" in str(err.value)


def test_a_killed_isolate_is_reported_with_its_signal() -> None:
    with pytest.raises(WorkerFailed) as err:
        targets.kill_self()
    assert err.value.signal == signal.SIGKILL
    assert not isinstance(err.value, IsolateViolation)


def test_a_timeout_kills_the_isolate_and_says_so() -> None:
    start = time.monotonic()
    with pytest.raises(WorkerFailed, match="timed out"):
        targets.spin()
    assert time.monotonic() - start < 10


def test_calls_leave_the_decorators_frozen_options_as_declared() -> None:
    # What every call shares (the full policy, compiled once) is kept beside the
    # options, not written into them: they stay the frozen value @isolate made.
    options = targets.echo.options
    declared = {f.name for f in dataclasses.fields(options)}
    assert targets.echo(1) == 1 and targets.echo(2) == 2
    assert set(vars(options)) == declared
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.timeout = 1.0  # type: ignore[misc]


def test_every_call_gets_a_fresh_process() -> None:
    first, second = targets.my_pid(), targets.my_pid()
    assert first != second
    assert first not in children() and second not in children()


def test_the_environment_is_only_what_the_caller_declares() -> None:
    os.environ["ISOLATES_TEST_SECRET"] = "leak"
    try:
        assert targets.environment() == {"GREETING": "hello"}
    finally:
        del os.environ["ISOLATES_TEST_SECRET"]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_compromised_isolate_cannot_make_the_parent_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(marker))
    try:
        targets.compromised(payload)
    except WorkerFailed:
        pass  # the parent may well refuse what came back: what matters is below
    time.sleep(0.2)
    assert not marker.exists(), "the parent unpickled data sent by an isolate"


def test_ctrl_c_in_the_parent_stops_its_isolates(tmp_path: Path) -> None:
    script = tmp_path / "interrupt.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        from tests.orchestrator import targets
        print("calling", flush=True)
        try:
            targets.spin_untimed()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "calling"
    time.sleep(1.0)  # let the isolate start spinning
    isolates_of_script = children(proc.pid)
    assert isolates_of_script, "the script should have an isolate running"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) != 0
    assert proc.stdout.read().strip() == "interrupted"
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in isolates_of_script):
        assert time.monotonic() < deadline, "an isolate outlived its parent"
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_aio_returns_the_value_on_both_backends(backend: str) -> None:
    async def main() -> tuple[int, object]:
        return await targets.async_double.aio(21), await targets.echo.aio("x")

    assert anyio.run(main, backend=backend) == (42, "x")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cancelling_aio_kills_the_isolate(backend: str) -> None:
    async def main() -> None:
        with anyio.move_on_after(1.0):
            await targets.spin_untimed.aio()

    before = set(children())
    start = time.monotonic()
    anyio.run(main, backend=backend)
    assert time.monotonic() - start < 10
    time.sleep(0.3)
    POOL.warm()  # a refill still starting an interpreter would look like a leftover
    leftover = {p for p, s in children().items() if p not in before and s not in "Z"}
    assert leftover <= set(p.pid for p in POOL._idle), "a cancelled isolate kept running"


def test_local_runs_in_process_for_tests() -> None:
    assert targets.make_point.local(3, 4) == targets.Point(3, 4)
    assert targets.my_pid.local() == os.getpid()


def test_isolate_refuses_something_that_is_not_a_policy() -> None:
    with pytest.raises(ValueError, match="takes a Policy"):
        isolate("stdio")  # type: ignore[call-overload]


def test_policy_is_enforced_in_the_isolate() -> None:
    @isolate(Policy("uname"))
    def allowed() -> str:
        return os.uname().sysname

    assert allowed() == "Linux"
    assert_denied(os.getcwd, policy=Policy("uname"), errno=errno.EPERM, syscall="getcwd")


@pytest.mark.parametrize("start", ["fork-server", "exec"])
def test_an_isolate_starts_clean(start: str) -> None:
    facts = isolate(targets.INTROSPECT, start=start)(targets.boot_facts.__wrapped__)()
    # stdin is /dev/null; stdout and stderr are ours; the control channel is the only
    # other descriptor it inherited (the one open while it reads /proc/self/fd aside).
    fds = facts["fds"]
    assert fds[0] == "/dev/null"
    others = {fd: target for fd, target in fds.items() if fd > 2}
    sockets = [t for t in others.values() if t.startswith("socket:")]
    assert len(sockets) == 1, others
    assert len(others) <= 2, others  # the socket, and the directory being listed
    assert facts["own_group"] is True
    # Its parent: us, or the fork server, itself started as cleanly (fork_server.py).
    assert facts["parent"] == (os.getpid() if start == "exec" else FORK_SERVER.pid)
    assert facts["libseccomp_loaded"] is False, "an isolate must never load libseccomp"
    assert facts["sys_path"] == [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    assert facts["flags"][0] == "-I"


def test_the_pool_keeps_warm_interpreters_and_stops_them_at_exit(tmp_path: Path) -> None:
    script = tmp_path / "pool.py"
    script.write_text(
        textwrap.dedent("""
        import time
        from isolates.orchestrator import POOL, isolate

        POOL.resize(2)
        POOL.warm()
        print(POOL.idle, *(p.pid for p in POOL._idle), flush=True)
        print(isolate(lambda: 42)(), flush=True)
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    idle, *pids = (int(x) for x in first.split())
    assert idle == 2 and len(pids) == 2 and second == "42"
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in pids):
        assert time.monotonic() < deadline, "pooled interpreters outlived their parent"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("set", {1, (2, 3)}),
        ("frozenset", frozenset({"a"})),
        ("tuple", (1, [2])),
        ("nested", {"s": [1, 2]}),
    ],
)
def test_an_unannotated_set_or_tuple_comes_back_as_itself(kind: str, expected: object) -> None:
    value = targets.returns_containers(kind)
    assert value == expected and type(value) is type(expected)


def test_a_value_that_cannot_travel_names_the_function_and_what_can() -> None:
    with pytest.raises(TypeError) as err:
        targets.returns_opaque()
    said = str(err.value)
    assert "'returns_opaque' returned 'Opaque' data that cannot travel back" in said
    assert "msgspec Structs, dataclasses" in said and "annotate the return type" in said


def test_a_violation_shows_the_call_with_its_path_and_flags_by_name() -> None:
    with pytest.raises(IsolateViolation) as err:
        targets.read_passwd()
    assert err.value.call == 'openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC, 0)'
    assert str(err.value).endswith(f"for calling {err.value.call}")
    with pytest.raises(IsolateViolation) as err:
        targets.connect_out(9)
    assert err.value.call.startswith("connect(") and "{AF_INET, 127.0.0.1:9}" in err.value.call

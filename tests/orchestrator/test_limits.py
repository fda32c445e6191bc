"""Limits, in real isolates: over a limit is ResourceExceeded naming it, under it the
call returns; and the isolate cannot lift what it was given."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isolates.orchestrator import Limits, ResourceExceeded, Supervisor, WorkerFailed, isolate
from isolates.sandbox import Landlock, Policy, PolicyError, SystemIO, Time
from tests.forked import in_child
from tests.orchestrator import limit_targets as t

MODES = ["fork-server", "exec"]
FILES = Policy(SystemIO.everything())
RLIMITS = Policy("prlimit64", "getrlimit", "setrlimit")


@pytest.mark.parametrize("start", MODES)
def test_memory_over_the_limit_is_resource_exceeded_and_under_it_returns(start: str) -> None:
    f = isolate(limits=Limits(memory="128M"), start=start)(t.allocate)
    with pytest.raises(ResourceExceeded) as err:
        f(1024)
    assert err.value.resource == "memory" and err.value.observed == "MemoryError"
    assert "rlimit DATA 128 MiB" in str(err.value) and isinstance(err.value, WorkerFailed)
    assert f(50) == 50


@pytest.mark.parametrize("start", MODES)
def test_cpu_time_stops_a_busy_loop(start: str) -> None:
    f = isolate(Policy(Time.everything()), limits=Limits(cpu_time=1), start=start)(t.spin)
    began = time.monotonic()
    with pytest.raises(ResourceExceeded) as err:
        f(30)
    assert err.value.resource == "cpu_time" and err.value.observed == "SIGXCPU"
    assert time.monotonic() - began < 10
    assert f(0.1) == "done"


@pytest.mark.parametrize("start", MODES)
def test_file_size_refuses_a_larger_write(start: str, tmp_path: Path) -> None:
    f = isolate(
        FILES, landlock=Landlock().read(tmp_path).write(tmp_path), limits=Limits(file_size="1M"),
        start=start,
    )(t.write)  # fmt: skip
    with pytest.raises(ResourceExceeded) as err:
        f(str(tmp_path / "big"), 2 << 20)
    assert err.value.resource == "file_size" and err.value.observed == "EFBIG"
    assert f(str(tmp_path / "small"), 1000) == 1000


@pytest.mark.parametrize("start", MODES)
def test_open_files_refuses_one_too_many(start: str, tmp_path: Path) -> None:
    f = isolate(
        FILES, landlock=Landlock().read(tmp_path).write(tmp_path), limits=Limits(open_files=32),
        start=start,
    )(t.open_many)  # fmt: skip
    with pytest.raises(ResourceExceeded) as err:
        f(str(tmp_path), 64)
    assert err.value.resource == "open_files" and err.value.observed == "EMFILE"
    assert f(str(tmp_path), 5) == 5


@pytest.mark.parametrize("start", MODES)
def test_an_isolate_cannot_raise_its_limits_even_when_its_policy_allows_the_call(
    start: str,
) -> None:
    said = isolate(RLIMITS, limits=Limits(open_files=64), start=start)(t.raise_limit)()
    assert said.startswith("refused") and said.endswith("lowered to 63")


@pytest.mark.parametrize("start", MODES)
def test_no_isolate_dumps_core(start: str) -> None:
    assert isolate(RLIMITS, start=start)(t.core_limit)() == (0, 0)


def test_a_timeout_is_the_wall_time_limit() -> None:
    f = isolate(Policy(Time.everything()), timeout=0.5)(t.spin)
    with pytest.raises(ResourceExceeded, match="timed out") as err:
        f(30)
    assert err.value.resource == "wall_time"


@pytest.mark.parametrize(
    ("limits", "says"),
    [
        ({"memory": "lots"}, "Limits.memory"),
        ({"memory": 0}, "Limits.memory"),
        ({"cpu_time": -1}, "Limits.cpu_time"),
        ({"open_files": 3}, "Limits.open_files"),
        ({"file_size": True}, "Limits.file_size"),
        ({"wall_time": float("inf")}, "Limits.wall_time"),
        ({"core": -1}, "Limits.core"),
    ],
)
def test_invalid_limits_name_their_field(limits: dict[str, object], says: str) -> None:
    with pytest.raises(PolicyError, match=says):
        Limits(**limits)  # type: ignore[arg-type]


def test_limits_that_cannot_hold_are_refused_when_declared() -> None:
    with pytest.raises(PolicyError, match="give one"):
        isolate(timeout=1, limits=Limits(wall_time=2))
    with pytest.raises(PolicyError, match="SYS_RESOURCE"):
        isolate(capabilities={"SYS_RESOURCE"})


def test_each_limit_says_how_it_is_enforced() -> None:
    said = Limits(memory="256M", cpu_time=2, processes=8, open_files=64, wall_time=5).mechanisms()
    assert said["memory"] == "rlimit DATA 256 MiB"
    assert said["cpu_time"].startswith("rlimit CPU 2 s")
    assert said["open_files"] == "rlimit NOFILE 64"
    assert said["processes"].startswith("seccomp notify: clone, fork and vfork counted")
    assert said["core"] == "rlimit CORE 0 (no core dump)"
    assert said["wall_time"].startswith("the parent's deadline, 5 s")


def _allocate_worker(ctx: object, mib: int) -> int:
    return t.allocate(mib)


def _spin_worker(ctx: object, seconds: float) -> str:
    return t.spin(seconds)


def test_a_workers_limits_are_its_own_and_the_supervisor_gives_a_default() -> None:
    def run(mib: int, own: Limits | None) -> tuple[str, int]:
        sup = Supervisor(limits=Limits(memory="128M"))
        sup.add_worker("w", _allocate_worker, args=(mib,), limits=own)
        try:
            return "returned", sup.run(timeout=60)["w"]
        except ResourceExceeded as exc:
            return exc.resource, 0

    assert in_child(lambda: run(1024, None)).unwrap() == ("memory", 0)  # the default
    assert in_child(lambda: run(300, Limits(memory="1G"))).unwrap() == ("returned", 300)


def test_a_workers_wall_time_ends_it_as_resource_exceeded() -> None:
    def run() -> tuple[str, str]:
        sup = Supervisor()
        sup.add_worker("slow", _spin_worker, args=(30,), policy=Policy(Time.everything()),
                       limits=Limits(wall_time=0.5))  # fmt: skip
        try:
            sup.run(timeout=60)
        except ResourceExceeded as exc:
            return exc.name, exc.resource
        return "no failure", ""

    assert in_child(run).unwrap() == ("slow", "wall_time")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "isolates.orchestrator._cli", "run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_isolates_run_memory_limit_fails_a_large_allocation_and_says_so() -> None:
    big = _run("--memory", "64M", "--", sys.executable, "-c", "bytearray(10**9)")
    assert big.returncode != 0
    assert "isolates run: exit status 1; limits in force: rlimit DATA 64 MiB" in big.stderr
    small = _run("--memory", "64M", "--", sys.executable, "-c", "print(len(bytearray(10**6)))")
    assert (small.returncode, small.stdout.strip()) == (0, "1000000")


def test_isolates_run_cpu_and_wall_time_kill_the_program_and_say_which() -> None:
    spin = _run("--cpu-time", "1", "--", "sh", "-c", "while :; do :; done")
    assert spin.returncode == 128 + signal.SIGXCPU
    assert "isolates run: killed: cpu time limit" in spin.stderr
    began = time.monotonic()
    slow = _run("--wall-time", "0.5", "--", "sleep", "30")
    assert slow.returncode == 128 + signal.SIGKILL and time.monotonic() - began < 20
    assert "isolates run: killed: wall time limit 0.5 s" in slow.stderr
    quick = _run("--cpu-time", "5", "--wall-time", "20", "--", "true")
    assert (quick.returncode, quick.stderr) == (0, "")


def test_isolates_run_file_size_stops_a_larger_write(tmp_path: Path) -> None:
    out = tmp_path / "big"
    dd = ["dd", "if=/dev/zero", f"of={out}", "bs=1M", "status=none"]
    grants = ["--write", str(tmp_path), "--read", "/dev/zero"]
    big = _run("--file-size", "1M", *grants, "--", *dd, "count=2")
    assert big.returncode == 128 + signal.SIGXFSZ
    assert "isolates run: killed: file size limit (rlimit FSIZE 1 MiB)" in big.stderr
    small = _run("--file-size", "1M", *grants, "--", *dd, "count=1")
    assert small.returncode == 0 and out.stat().st_size == 1 << 20


def test_isolates_run_refuses_a_bad_limit_by_flag() -> None:
    done = _run("--memory", "lots", "--", "true")
    assert done.returncode == 2 and "--memory: Limits.memory" in done.stderr


def _files_worker(ctx: object) -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_the_supervisor_has_limits_of_its_own_and_its_workers_keep_theirs() -> None:
    def run() -> tuple[tuple[int, int], int, str]:
        sup = Supervisor(own_limits=Limits(open_files=64, file_size="1M"))
        bounds = Limits(open_files=32, processes=4)
        sup.add_worker("w", _files_worker, policy=RLIMITS, limits=bounds)
        sup.run(timeout=60)
        status = str(sup.workers["w"].status)
        return resource.getrlimit(resource.RLIMIT_NOFILE), sup.workers["w"].result, status

    own, workers, status = in_child(run).unwrap()
    assert own == (64, 64) and workers == 32
    assert "; limits: " in status and "core: rlimit CORE 0 (no core dump)" in status
    assert "open_files: rlimit NOFILE 32" in status and "processes: seccomp notify" in status


@pytest.mark.parametrize("field", ["processes", "wall_time"])
def test_the_supervisors_own_limits_refuse_what_cannot_bound_it(field: str) -> None:
    with pytest.raises(PolicyError, match=f"Limits.{field} cannot bound the supervisor"):
        Supervisor(own_limits=Limits(**{field: 3}))


def test_a_run_that_times_out_names_the_workers_still_running_and_keeps_its_time() -> None:
    def run() -> tuple[str, float]:
        sup = Supervisor(grace=0.5)
        sup.add_worker("slow", _spin_worker, args=(30,), policy=Policy(Time.everything()))
        sup.add_worker("quick", _allocate_worker, args=(1,))
        began = time.monotonic()
        try:
            sup.run(timeout=1.5)
        except TimeoutError as exc:
            return str(exc), time.monotonic() - began
        return "no timeout", 0.0

    said, took = in_child(run).unwrap()
    assert said == "still running after 1.5 s: 'slow' (released)"
    assert took < 1.5 + 0.5 + 1.0  # the timeout counts from run(), then the grace

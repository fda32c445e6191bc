"""isolates.ray on a real local Ray instance (``ray.init(num_cpus=2)``).

Every wait is bounded (``TIMEOUT``); a test that hangs fails instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from isolates.orchestrator import IsolateViolation, Limits, ResourceExceeded
from isolates.ray import isolated_remote
from tests import scale

TIMEOUT = 120
ROOT = str(Path(__file__).resolve().parents[2])  # Ray's workers import tests.scale from here

status = isolated_remote(policy=scale.READ_PROC)(scale.status)
first_line = isolated_remote(policy=scale.READ_PROC)(scale.first_line)
allocate = isolated_remote(limits=Limits(memory="128M"))(scale.allocate)
opaque = isolated_remote(scale.opaque)
strict_first_line = isolated_remote(policy=scale.KILL)(scale.first_line)
strict_double = isolated_remote(policy=scale.KILL)(scale.double)


@ray.remote
def plain_status() -> dict[str, str]:
    return scale.status()


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning",
             runtime_env={"env_vars": {"PYTHONPATH": ROOT}})  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()


def _get(ref: Any) -> Any:
    return ray.get(ref, timeout=TIMEOUT)


def test_each_task_body_runs_in_a_fresh_confined_process() -> None:
    results = _get([status.remote() for _ in range(20)])
    assert [(r["Seccomp"], r["NoNewPrivs"]) for r in results] == [("2", "1")] * 20
    pids = {r["pid"] for r in results}
    assert len(pids) == 20
    assert str(os.getpid()) not in pids


def test_plain_remote_functions_still_run_in_the_ray_worker() -> None:
    result = _get(plain_status.remote())
    assert result["Seccomp"] == "0"
    assert result["pid"] != str(os.getpid())


def test_a_forbidden_path_is_a_clear_error_on_the_driver() -> None:
    assert _get(first_line.remote("/proc/self/status")).startswith("Name:")
    with pytest.raises(PermissionError) as caught:  # RayTaskError(PermissionError)
        _get(first_line.remote("/etc/passwd"))
    assert isinstance(caught.value, ray.exceptions.RayTaskError)
    assert "Permission denied: '/etc/passwd'" in str(caught.value)  # the isolate's traceback
    assert "in an isolate on Ray worker" in str(caught.value)


def test_a_violation_names_the_syscall_and_the_worker() -> None:
    assert _get(strict_double.options(num_cpus=1).remote(21)) == 42
    with pytest.raises(IsolateViolation) as caught:
        _get(strict_first_line.remote("/proc/self/status"))
    assert caught.value.syscall == "openat"
    assert '"/proc/self/status"' in str(caught.value)
    assert "in an isolate on Ray worker" in str(caught.value)


def test_a_task_over_its_memory_limit_raises_resource_exceeded() -> None:
    assert _get(allocate.remote(1 << 20)) == 1 << 20
    with pytest.raises(ResourceExceeded) as caught:
        _get(allocate.remote(512 << 20))
    assert caught.value.resource == "memory"


def test_results_travel_as_data_never_as_pickle() -> None:
    with pytest.raises(TypeError, match="opaque"):
        _get(opaque.remote())


def test_an_isolated_function_is_refused_rather_than_stripped_of_its_policy() -> None:
    with pytest.raises(TypeError, match="already @isolate'd"):
        isolated_remote(policy=scale.READ_PROC)(scale.strict_double)

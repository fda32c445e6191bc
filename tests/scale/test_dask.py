"""isolates.dask on a real LocalCluster: two worker processes, started by nannies.

Every wait is bounded (``TIMEOUT``); a test that hangs fails instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import dask
import pytest
from dask.task_spec import Task, TaskRef
from distributed import Client, LocalCluster

from isolates.dask import IsolatePlugin
from isolates.orchestrator import IsolateViolation, Limits, ResourceExceeded, isolate
from tests import scale

TIMEOUT = 60


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            timeout=TIMEOUT,
        ) as cluster,  # fmt: skip
        Client(cluster, timeout=TIMEOUT) as client,
    ):
        client.register_plugin(IsolatePlugin(scale.READ_PROC, limits=Limits(memory="128M")))
        yield client


def _worker_pids(client: Client) -> set[str]:
    return {str(pid) for pid in client.run(os.getpid).values()}


def test_each_annotated_task_runs_in_a_fresh_confined_process(client: Client) -> None:
    with dask.annotate(executor="isolated"):
        futures = [client.submit(scale.status, pure=False) for _ in range(20)]
    results = [future.result(timeout=TIMEOUT) for future in futures]
    assert [(r["Seccomp"], r["NoNewPrivs"]) for r in results] == [("2", "1")] * 20
    pids = {r["pid"] for r in results}
    assert len(pids) == 20
    assert not pids & _worker_pids(client)  # not the workers' own processes


def test_unannotated_tasks_still_run_in_the_worker(client: Client) -> None:
    result = client.submit(scale.status, pure=False).result(timeout=TIMEOUT)
    assert result["pid"] in _worker_pids(client)
    assert result["Seccomp"] == "0"


def test_delayed_collections_are_routed_too(client: Client) -> None:
    with dask.annotate(executor="isolated"):
        parts = [dask.delayed(scale.status, pure=False)() for _ in range(3)]
    results = dask.compute(*parts, optimize_graph=False)
    assert [r["Seccomp"] for r in results] == ["2"] * 3


def test_a_forbidden_path_is_a_clear_error_on_the_client(client: Client) -> None:
    with dask.annotate(executor="isolated"):
        allowed = client.submit(scale.first_line, "/proc/self/status")
        denied = client.submit(scale.first_line, "/etc/passwd")
    assert allowed.result(timeout=TIMEOUT).startswith("Name:")
    with pytest.raises(PermissionError) as caught:
        denied.result(timeout=TIMEOUT)
    notes = "\n".join(caught.value.__notes__)
    assert "in an isolate on Dask worker" in notes
    assert any(address in notes for address in client.scheduler_info()["workers"])
    assert "Permission denied: '/etc/passwd'" in notes  # the isolate's own traceback


def test_a_tasks_own_isolate_policy_overrides_the_plugins(client: Client) -> None:
    with dask.annotate(executor="isolated"):
        allowed = client.submit(scale.strict_double, 21)
        killed = client.submit(scale.strict_first_line, "/proc/self/status")
    assert allowed.result(timeout=TIMEOUT) == 42
    with pytest.raises(IsolateViolation) as caught:  # the plugin's policy would allow it
        killed.result(timeout=TIMEOUT)
    assert caught.value.syscall == "openat"
    assert '"/proc/self/status"' in str(caught.value)
    assert "in an isolate on Dask worker" in caught.value.__notes__[0]


def test_a_task_sent_by_value_keeps_its_own_policy(client: Client) -> None:
    """An @isolate'd function that cannot be imported (a closure, a script's function)
    travels by value, and with it its policy: the plugin's does not replace it."""

    def first_line_here(path: str) -> str:
        with open(path) as f:
            return f.readline()

    strict = isolate(scale.KILL)(first_line_here)
    with dask.annotate(executor="isolated"):
        killed = client.submit(strict, "/proc/self/status")
        plain = client.submit(first_line_here, "/proc/self/status")
    with pytest.raises(IsolateViolation) as caught:  # the plugin's policy would allow it
        killed.result(timeout=TIMEOUT)
    assert caught.value.syscall == "openat"
    assert plain.result(timeout=TIMEOUT).startswith("Name:")  # the same, bare: the plugin's


def test_a_task_over_its_memory_limit_raises_resource_exceeded(client: Client) -> None:
    with dask.annotate(executor="isolated"):
        small = client.submit(scale.allocate, 1 << 20)
        large = client.submit(scale.allocate, 512 << 20)
    assert small.result(timeout=TIMEOUT) == 1 << 20
    with pytest.raises(ResourceExceeded) as caught:
        large.result(timeout=TIMEOUT)
    assert caught.value.resource == "memory"
    assert "in an isolate on Dask worker" in caught.value.__notes__[0]


def test_results_travel_as_data_never_as_pickle(client: Client) -> None:
    plain = client.submit(scale.opaque, pure=False).result(timeout=TIMEOUT)
    assert type(plain) is object  # Dask itself pickles any value
    with dask.annotate(executor="isolated"), pytest.raises(TypeError, match="opaque"):
        client.submit(scale.opaque, pure=False).result(timeout=TIMEOUT)


def test_a_fused_task_runs_each_of_its_functions_in_an_isolate(client: Client) -> None:
    inner = Task("inner", scale.status)
    outer = Task("outer", scale.seccomp_of, TaskRef("inner"))
    with dask.annotate(executor="isolated"):
        future = client.get({"outer": Task.fuse(inner, outer, key="outer")}, "outer", sync=False)
    assert future.result(timeout=TIMEOUT) == "2 of a process whose Seccomp is 2"

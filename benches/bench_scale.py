"""Per-task cost of an isolated task on a cluster, against the cluster's own ways of
running each task in a fresh process, all measured in this run.

- Dask: ``TASKS`` (default 500) trivial tasks on a 2-worker ``LocalCluster`` (processes,
  one thread each), through the worker's own thread (plain), through a
  ``ProcessPoolExecutor(1, max_tasks_per_child=1)`` installed on each worker by a
  ``WorkerPlugin`` (Dask's route to a fresh process per task), and through
  ``isolates.dask.IsolatePlugin`` (a fresh isolate per task). Target: isolated <= 1.5x
  the process pool.
- Ray: the same tasks on ``ray.init(num_cpus=2)``: a plain ``@ray.remote`` (workers
  reused), ``@ray.remote(max_calls=1)`` (a fresh Ray worker per task) and
  ``isolates.ray.isolated_remote`` (workers reused, a fresh isolate per task). Target:
  isolated <= 1.5x ``max_calls=1``. Then, on a Ray instance of its own (a setup hook is
  a job-level option), ``max_calls=1`` with each worker confining itself in its
  ``worker_process_setup_hook`` (docs/scale-out.md); that row times ``HOOK_TASKS``
  tasks a batch (a fresh Ray worker each costs half a second) and scales them up.

Each time is the median of three alternating rounds (``--rounds``): one batch of each route, then
the next round in the reverse order, so a machine that slows down mid-run slows every
route alike. The cluster's own start-up is not timed.

    python benches/bench_scale.py            # both (pip install '.[bench]')
    python benches/bench_scale.py --quick    # 40 tasks a batch
    python benches/bench_scale.py --only dask
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _targets import trivial
from _util import table, verdict

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = 1.5  # isolated / fresh process per task
WARM = 10  # tasks of the untimed first batch of each route (pools started, imports done)
HOOK_TASKS = 100  # the hook row's batch: its per-task time, scaled to the others' batch


def alternate(routes: Mapping[str, Callable[..., float]], rounds: int) -> dict[str, float]:
    """Each route's median batch time, one batch of every route per round, in the
    reverse order every other round."""
    samples: dict[str, list[float]] = {name: [] for name in routes}
    for round_ in range(rounds):
        order = list(routes.items())
        for name, batch in order if round_ % 2 == 0 else order[::-1]:
            samples[name].append(batch())
    return {name: statistics.median(s) for name, s in samples.items()}


def rows(t: dict[str, float], tasks: int, peer: str, isolated: str) -> list[list[str]]:
    out = []
    for name, seconds in t.items():
        ratio = seconds / t[peer]
        goal = f"<= {TARGET}x" if name == isolated else ""
        ok = verdict(ratio, TARGET) if name == isolated else ""
        out.append([name, f"{seconds:.2f} s", f"{seconds / tasks * 1e3:.2f} ms",
                    f"{ratio:.2f}x", goal, ok])  # fmt: skip
    return out


HEADER = ["route", "batch", "per task", "vs fresh process", "target", ""]


# -- Dask ------------------------------------------------------------------------------


def dask_table(tasks: int, rounds: int) -> None:
    import dask
    from distributed import Client, LocalCluster, WorkerPlugin

    from isolates.dask import IsolatePlugin

    class ProcessPerTask(WorkerPlugin):
        """A ProcessPoolExecutor with a fresh process per task, under ``name``."""

        name = "ppe"

        def setup(self, worker: Any) -> None:
            pool = ProcessPoolExecutor(worker.state.nthreads, max_tasks_per_child=1)
            worker.executors[self.name] = pool

    def batch(client: Client, executor: str | None) -> Callable[..., float]:
        def run(n: int = tasks) -> float:
            start = time.perf_counter()
            with dask.annotate(**({"executor": executor} if executor else {})):
                futures = client.map(trivial, range(n), pure=False)
            results = client.gather(futures)
            elapsed = time.perf_counter() - start
            assert results == [x + 1 for x in range(n)]
            return elapsed

        return run

    # A process pool cannot start in a daemonic process, which Dask's workers are by
    # default; isolates can (they are no multiprocessing children). One setting for all.
    with (
        dask.config.set({"distributed.worker.daemon": False}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,  # fmt: skip
        Client(cluster) as client,
    ):
        client.register_plugin(ProcessPerTask())
        client.register_plugin(IsolatePlugin())
        routes = {
            "plain (the worker's thread)": batch(client, None),
            "ProcessPoolExecutor(max_tasks_per_child=1)": batch(client, "ppe"),
            "isolates.dask (IsolatePlugin)": batch(client, "isolated"),
        }
        for run in routes.values():  # warm: pools started, modules imported
            run(WARM)
        t = alternate(routes, rounds)
    table(f"Dask: {tasks} trivial tasks, LocalCluster of 2 workers (median of {rounds})",
          HEADER, rows(t, tasks, "ProcessPoolExecutor(max_tasks_per_child=1)",
                       "isolates.dask (IsolatePlugin)"))  # fmt: skip


# -- Ray -------------------------------------------------------------------------------


def _confine_ray_worker() -> None:
    """A worker_process_setup_hook: the whole Ray worker under pledge (docs/scale-out.md)."""
    from isolates.sandbox import Processes, profiles

    promises = profiles.pledge("stdio rpath wpath cpath inet unix dns proc")
    promises.extend(Processes.nothing().allow_prctl_name()).apply(all_threads=True)


def ray_table(tasks: int, rounds: int) -> None:
    import ray

    from isolates.ray import isolated_remote

    def batch(remote: Any) -> Callable[..., float]:
        def run(n: int = tasks) -> float:
            start = time.perf_counter()
            results = ray.get([remote.remote(x) for x in range(n)], timeout=1800)
            elapsed = time.perf_counter() - start
            assert results == [x + 1 for x in range(n)]
            return elapsed

        return run

    env = {"env_vars": {"PYTHONPATH": HERE}}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", runtime_env=env)
    try:
        routes = {
            "plain @ray.remote (workers reused)": batch(ray.remote(trivial)),
            "@ray.remote(max_calls=1)": batch(ray.remote(max_calls=1)(trivial)),
            "isolates.ray (isolated_remote)": batch(isolated_remote(trivial)),
        }
        for run in routes.values():
            run(WARM)
        t = alternate(routes, rounds)
    finally:
        ray.shutdown()
    hooked = {**env, "worker_process_setup_hook": _confine_ray_worker}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", runtime_env=hooked)
    try:
        run = batch(ray.remote(max_calls=1)(trivial))
        run(WARM)
        hook_tasks = min(tasks, HOOK_TASKS)
        per_task = statistics.median(run(hook_tasks) / hook_tasks for _ in range(rounds))
        t[f"max_calls=1, worker confined by a setup hook ({hook_tasks} tasks)"] = per_task * tasks
    finally:
        ray.shutdown()
    table(f"Ray: {tasks} trivial tasks, ray.init(num_cpus=2) (median of {rounds}; the "
          "last row on a Ray instance of its own)", HEADER,
          rows(t, tasks, "@ray.remote(max_calls=1)", "isolates.ray (isolated_remote)"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 tasks a batch")
    parser.add_argument("--only", choices=["dask", "ray"], help="one cluster only")
    parser.add_argument("--tasks", type=int, help="tasks per batch (default 500)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3)")
    args = parser.parse_args()
    tasks = args.tasks or (40 if args.quick else 500)
    rounds = args.rounds or 3
    if args.only in (None, "dask"):
        dask_table(tasks, rounds)
    if args.only in (None, "ray"):
        ray_table(tasks, rounds)


if __name__ == "__main__":
    main()

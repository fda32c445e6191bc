"""isolates.dask: each annotated task of a Dask cluster in a fresh isolate.

Dask runs every task of a worker in that worker's process: tasks share its memory, its
environment and its files. Its workers already route a task to an executor named by
the task's ``executor`` annotation (``Worker.executors``); ``IsolatePlugin`` installs
one on every worker, now and on any worker that joins later::

    client.register_plugin(IsolatePlugin(policy, limits=Limits(memory="512M")))
    with dask.annotate(executor="isolated"):
        future = client.submit(parse, blob)   # parse(blob) runs in a fresh isolate

What is confined is the task's function, not the worker: Dask's own work for the task
(fetching its inputs, storing and sending its result) stays in the worker process, and
only the call ``fn(*args, **kwargs)``, its arguments already resolved, runs in the
isolate. Its value comes back as msgspec data, as from any ``@isolate`` call (nothing
the isolate sends is unpickled), then travels through Dask as usual. A task function
decorated with ``@isolate`` keeps its own policy and options instead of the plugin's.
A failure is the task's exception on the client, with a note naming the Dask worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from dask.task_spec import Task
from distributed import Worker, WorkerPlugin

from isolates.orchestrator import (
    IsolatedFunction,
    IsolateExecutor,
    Limits,
    Namespaces,
    RemoteTraceback,
)
from isolates.sandbox import Landlock, Policy

__all__ = ["IsolatePlugin", "TaskIsolator", "noted"]


class IsolatePlugin(WorkerPlugin):
    """Install, on every worker, an executor named ``name`` that runs each task routed
    to it (``dask.annotate(executor=name)``) in a fresh isolate.

    Takes what ``IsolateExecutor`` takes. ``name`` is also the plugin's name, so
    registering a plugin under the same name again replaces it, and several plugins
    with different names give several executors (a policy each).
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        name: str = "isolated",
        limits: Limits | None = None,
        timeout: float | None = None,
        namespaces: Namespaces | None = None,
        env: Mapping[str, str] | None = None,
        landlock: Landlock | None = None,
        start: str = "auto",
        capabilities: Iterable[str] = (),
        report_denials: bool = True,
    ) -> None:
        self.name = name
        # Kept as its policy file (what a pickled Policy is too): the plugin pickles to
        # every worker, and the file loads back to the same filter and Landlock plan.
        self._policy = (policy or Policy()).to_toml()
        self._options: dict[str, Any] = {
            "limits": limits,
            "timeout": timeout,
            "namespaces": namespaces,
            "env": dict(env or {}),
            "landlock": landlock,
            "start": start,
            "capabilities": tuple(capabilities),
            "report_denials": report_denials,
        }
        IsolateExecutor(Policy.from_toml(self._policy), **self._options).shutdown()  # checks

    def setup(self, worker: Worker) -> None:
        isolates = IsolateExecutor(
            Policy.from_toml(self._policy),
            max_workers=worker.state.nthreads,
            **self._options,
        )
        where = f"Dask worker {worker.name!r} ({worker.address})"
        old = worker.executors.get(self.name)
        worker.executors[self.name] = TaskIsolator(isolates, where, worker.state.nthreads)
        if isinstance(old, TaskIsolator):
            old.shutdown(wait=False)

    def teardown(self, worker: Worker) -> None:
        executor = worker.executors.get(self.name)
        if isinstance(executor, TaskIsolator):
            del worker.executors[self.name]
            executor.shutdown(wait=False, cancel_futures=True)


class TaskIsolator(Executor):
    """The executor a worker hands its tasks to: Dask's own wrapper runs on a thread
    here, and only the task's function goes to the isolates.

    A worker submits ``run(task, data, ...)``, where ``task`` is a ``dask.task_spec.Task``
    that resolves its arguments from ``data`` and calls its function. The task is
    rebuilt with its function replaced by ``_InIsolate``, so the resolved call is the
    one thing that crosses into an isolate; Dask's timing, sizing and error reporting
    run unchanged around it.
    """

    def __init__(self, isolates: IsolateExecutor, where: str, threads: int) -> None:
        self.isolates = isolates
        self.where = where
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="isolates-dask")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        args = tuple(self._confined(a) if isinstance(a, Task) else a for a in args)
        return self._threads.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._threads.shutdown(wait=wait, cancel_futures=cancel_futures)
        self.isolates.shutdown(wait=wait, cancel_futures=cancel_futures)

    def _confined(self, task: Task) -> Task:
        if type(task) is not Task:  # List, Dict...: containers Dask builds, not user code
            return task
        if task.has_subgraph():  # fused tasks: each function of the subgraph is isolated
            inner, *rest = task.args
            inner = {k: self._confined(v) if isinstance(v, Task) else v for k, v in inner.items()}
            return Task(task.key, task.func, inner, *rest, **task.kwargs,
                        _data_producer=task.data_producer)  # fmt: skip
        return Task(task.key, _InIsolate(task.func, self), *task.args, **task.kwargs,
                    _data_producer=task.data_producer)  # fmt: skip


class _InIsolate:
    """A task's function, called in a fresh isolate: its own ``@isolate`` one when it
    has been decorated, else one of the plugin's executor."""

    def __init__(self, fn: Callable[..., Any], isolator: TaskIsolator) -> None:
        self.fn = fn
        self.isolator = isolator

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            if isinstance(self.fn, IsolatedFunction):
                return self.fn(*args, **kwargs)
            return self.isolator.isolates.submit(self.fn, *args, **kwargs).result()
        except Exception as exc:
            noted(exc, self.isolator.where)
            raise


def noted(exc: Exception, where: str) -> None:
    """``exc`` with notes saying where it happened and, when the isolate raised it, its
    traceback there: an exception reaches the client pickled, which keeps its notes but
    not its ``__cause__`` (the isolate's traceback, a ``RemoteTraceback``)."""
    exc.add_note(f"in an isolate on {where}")
    if isinstance(exc.__cause__, RemoteTraceback):
        exc.add_note(f"traceback in the isolate:\n{exc.__cause__.text.rstrip()}")

"""isolates.orchestrator: isolates, the @isolate decorator, and supervised worker graphs.

The flat modules are the front doors: ``_decorator`` (``@isolate``) and ``_call`` (one
call), ``_executor`` (``IsolateExecutor``), ``_supervisor`` and ``_runner`` (a worker
graph), ``_graph`` (declaring it), ``_lifecycle`` (a worker's states), ``testing`` and
``demo``. Beneath them, ``_core`` holds what both journeys share (the wire protocol,
spawning, the isolate's main...) and ``_namespaces`` the namespaces; ``_cli`` is the
``isolates`` command, which nothing imports. docs/internals.md walks through them.
"""

from isolates.sandbox.lowlevel import lazy_exports

TYPE_CHECKING = False  # not typing's: an isolate imports this package before it is confined
if TYPE_CHECKING:
    from ._commands import Popen as Popen
    from ._commands import run as run
    from ._core.context import WorkerContext as WorkerContext
    from ._core.errors import IsolateViolation as IsolateViolation
    from ._core.errors import RemoteTraceback as RemoteTraceback
    from ._core.errors import WorkerFailed as WorkerFailed
    from ._core.runtime import FORK_SERVER as FORK_SERVER
    from ._core.runtime import POOL as POOL
    from ._decorator import IsolatedFunction as IsolatedFunction
    from ._decorator import isolate as isolate
    from ._executor import IsolateExecutor as IsolateExecutor
    from ._graph import GraphError as GraphError
    from ._graph import Restart as Restart
    from ._graph import RestartMode as RestartMode
    from ._graph import Worker as Worker
    from ._lifecycle import State as State
    from ._limits import Limits as Limits
    from ._limits import ResourceExceeded as ResourceExceeded
    from ._namespaces.options import Bind as Bind
    from ._namespaces.options import Mount as Mount
    from ._namespaces.options import Namespaces as Namespaces
    from ._namespaces.options import NamespaceStatus as NamespaceStatus
    from ._supervisor import Supervisor as Supervisor

_EXPORTS = {
    "Popen": "._commands",
    "run": "._commands",
    "WorkerContext": "._core.context",
    "IsolateViolation": "._core.errors",
    "RemoteTraceback": "._core.errors",
    "WorkerFailed": "._core.errors",
    "POOL": "._core.runtime",
    "FORK_SERVER": "._core.runtime",
    "IsolatedFunction": "._decorator",
    "isolate": "._decorator",
    "IsolateExecutor": "._executor",
    "GraphError": "._graph",
    "Limits": "._limits",
    "ResourceExceeded": "._limits",
    "Restart": "._graph",
    "RestartMode": "._graph",
    "Worker": "._graph",
    "State": "._lifecycle",
    "Bind": "._namespaces.options",
    "Mount": "._namespaces.options",
    "NamespaceStatus": "._namespaces.options",
    "Namespaces": "._namespaces.options",
    "Supervisor": "._supervisor",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = [
    "FORK_SERVER",
    "POOL",
    "Bind",
    "GraphError",
    "IsolateExecutor",
    "IsolateViolation",
    "IsolatedFunction",
    "Limits",
    "Mount",
    "NamespaceStatus",
    "Namespaces",
    "Popen",
    "RemoteTraceback",
    "ResourceExceeded",
    "Restart",
    "RestartMode",
    "State",
    "Supervisor",
    "Worker",
    "WorkerContext",
    "WorkerFailed",
    "isolate",
    "run",
]  # fmt: skip

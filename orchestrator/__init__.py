"""isolates.orchestrator: isolates, the @isolate decorator, and supervised worker graphs."""

from typing import TYPE_CHECKING

from isolates.sandbox.lowlevel import lazy_exports

if TYPE_CHECKING:
    from ._context import WorkerContext as WorkerContext
    from ._decorator import IsolatedFunction as IsolatedFunction
    from ._decorator import isolate as isolate
    from ._errors import IsolateViolation as IsolateViolation
    from ._errors import RemoteTraceback as RemoteTraceback
    from ._errors import WorkerFailed as WorkerFailed
    from ._graph import Restart as Restart
    from ._graph import Worker as Worker
    from ._lifecycle import State as State
    from ._namespaces import Bind as Bind
    from ._namespaces import Mount as Mount
    from ._namespaces import Namespaces as Namespaces
    from ._namespaces import NamespaceStatus as NamespaceStatus
    from ._pool import POOL as POOL
    from ._supervisor import Supervisor as Supervisor

_EXPORTS = {
    "WorkerContext": "._context",
    "IsolatedFunction": "._decorator",
    "isolate": "._decorator",
    "IsolateViolation": "._errors",
    "RemoteTraceback": "._errors",
    "WorkerFailed": "._errors",
    "Restart": "._graph",
    "Worker": "._graph",
    "State": "._lifecycle",
    "Bind": "._namespaces",
    "Mount": "._namespaces",
    "NamespaceStatus": "._namespaces",
    "Namespaces": "._namespaces",
    "POOL": "._pool",
    "Supervisor": "._supervisor",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = [
    "POOL", "Bind", "IsolateViolation", "IsolatedFunction", "Mount", "NamespaceStatus",
    "Namespaces", "RemoteTraceback", "Restart", "State", "Supervisor", "Worker",
    "WorkerContext", "WorkerFailed", "isolate",
]  # fmt: skip

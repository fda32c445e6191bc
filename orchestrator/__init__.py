"""isolates.orchestrator: isolates, the @isolate decorator, and supervised worker graphs."""

from ._decorator import IsolatedFunction as IsolatedFunction
from ._decorator import isolate as isolate
from ._errors import IsolateViolation as IsolateViolation
from ._errors import RemoteTraceback as RemoteTraceback
from ._errors import WorkerFailed as WorkerFailed
from ._namespaces import Namespaces as Namespaces
from ._pool import POOL as POOL

__all__ = [
    "POOL", "IsolateViolation", "IsolatedFunction", "Namespaces", "RemoteTraceback",
    "WorkerFailed", "isolate",
]  # fmt: skip

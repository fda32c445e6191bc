"""Declaring a worker graph: workers, typed channels between them, restart policies,
and the error a wrong declaration raises."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from isolates.sandbox import Policy, PolicyError, Status

from ._core.errors import WorkerFailed
from ._lifecycle import Lifecycle, State
from ._limits import Limits
from ._namespaces.options import Namespaces, NamespaceStatus

_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Spare isolates a confined supervisor keeps per restart (it cannot start new ones).
MAX_RESTARTS: Final = 16


class GraphError(ValueError):
    """A worker graph declared wrongly: a bad or duplicate worker name, a function that
    is not callable, a channel that joins a party to itself, names no worker of this
    supervisor, reuses a channel name or carries a type no channel can. (A policy, or
    one of a worker's options, that is wrong raises PolicyError.)"""


class RestartMode(enum.StrEnum):
    """``Restart.mode``: never, or on failure (equal to "never" / "on-failure")."""

    NEVER = "never"
    ON_FAILURE = "on-failure"


@dataclass(frozen=True)
class Restart:
    """``Restart.never()`` (the default) or ``Restart.on_failure(limit, backoff)``.

    On failure the worker is started again, at most ``limit`` times, waiting ``backoff``
    seconds before the first restart and doubling each time. A confined supervisor cannot
    start processes, so it keeps ``limit`` spare interpreters ready from the start.
    """

    mode: RestartMode = RestartMode.NEVER
    limit: int = 0
    backoff: float = 0.1

    @classmethod
    def never(cls) -> Restart:
        return cls()

    @classmethod
    def on_failure(cls, limit: int = 3, backoff: float = 0.1) -> Restart:
        if not 0 < limit <= MAX_RESTARTS or backoff < 0:
            raise PolicyError(
                f"Restart.on_failure(limit={limit}, backoff={backoff}): the limit is 1 to "
                f"{MAX_RESTARTS} and the backoff >= 0 seconds"
            )
        return cls(RestartMode.ON_FAILURE, limit, backoff)

    @classmethod
    def parse(cls, value: Restart | str, worker: str) -> Restart:
        if isinstance(value, Restart):
            return value
        if value == RestartMode.NEVER:
            return cls.never()
        if value == RestartMode.ON_FAILURE:
            return cls.on_failure()
        raise PolicyError(
            f"worker {worker!r}: restart={value!r}; use 'never', 'on-failure' or "
            "Restart.on_failure(limit=3, backoff=0.1)"
        )

    def allows(self, restarts: int) -> bool:
        """Whether a worker restarted ``restarts`` times may be restarted once more."""
        return self.mode == RestartMode.ON_FAILURE and restarts < self.limit


@dataclass(eq=False)
class Worker:
    """A declared worker, and once running, what is known about it.

    ``state`` follows the lifecycle table (_lifecycle.py: ``lifecycle`` is the only thing
    that moves it); ``status`` is what its seccomp and Landlock context enforce,
    ``namespace_status`` what namespaces it entered; ``result`` its return value,
    ``failure`` the WorkerFailed if it failed.
    """

    name: str
    fn: Callable[..., Any]
    policy: Policy
    namespaces: Namespaces | None
    env: dict[str, str]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    restart: Restart
    pid: int | None = None
    status: Status | None = None
    namespace_status: NamespaceStatus | None = None
    result: Any = None
    failure: WorkerFailed | None = None
    restarts: int = 0
    channels: dict[str, ChannelSpec] = field(default_factory=dict)
    #: The capabilities it keeps (numbers); every other is dropped before it runs.
    capabilities: tuple[int, ...] = ()
    #: What it may consume (each restart starts afresh under the same limits).
    limits: Limits = field(default_factory=Limits)
    #: Its errno denials recorded, and shown on its failure (``WorkerFailed.denials``).
    report_denials: bool = True
    #: Learning: what its policy would deny is let run and learned (``learned``).
    learn: bool = False
    #: What it learned, across its restarts (an ``answers.Learned``; None: not learning).
    learned: Any = None
    lifecycle: Lifecycle = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lifecycle = Lifecycle(self.name)

    @property
    def state(self) -> State:
        return self.lifecycle.state

    def __repr__(self) -> str:
        return f"<Worker {self.name} {self.state.value}>"


@dataclass(frozen=True)
class ChannelSpec:
    """A typed channel between two workers, or a worker and the supervisor (None)."""

    name: str
    a: Worker | None
    b: Worker | None
    message_type: Any

    def other(self, party: Worker) -> Worker | None:
        """The party at the other end from ``party``."""
        return self.b if self.a is party else self.a


def check_worker(
    name: object,
    fn: object,
    policy: object,
    namespaces: object,
    env: Mapping[str, str] | None,
    known: Mapping[str, Worker],
) -> None:
    """Everything add_worker validates, each error naming the worker: GraphError for the
    graph (its name, its function), PolicyError for its options (policy, namespaces,
    environment)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise GraphError(f"worker name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
    if name in known:
        raise GraphError(f"worker {name!r} is declared twice")
    if not callable(fn):
        raise GraphError(f"worker {name!r}: {fn!r} is not callable")
    if not isinstance(policy, Policy):
        raise PolicyError(f"worker {name!r}: policy must be a Policy, not {policy!r}")
    if namespaces is not None and not isinstance(namespaces, Namespaces):
        raise PolicyError(f"worker {name!r}: namespaces must be a Namespaces, not {namespaces!r}")
    for key, value in (env or {}).items():
        if not isinstance(key, str) or not isinstance(value, str) or "=" in key:
            raise PolicyError(f"worker {name!r}: env entry {key!r}={value!r} is not a variable")

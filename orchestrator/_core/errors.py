"""How an isolate or worker can fail, as seen by the process that started it (raised by
the isolate machinery here, public as ``isolates.orchestrator.WorkerFailed`` and so on)."""

from __future__ import annotations

import signal
from typing import Any


class WorkerFailed(Exception):
    """A worker or isolate did not return a value.

    ``name`` is the worker; ``exitcode`` / ``signal`` how its process ended (None when it
    is unknown or the process still ran); ``remote_type`` and ``remote_traceback`` the
    exception it raised, as text (exceptions cross the boundary as data, never as pickle).
    ``denials``: the calls its policy failed with an errno, in words (answers.Denial).
    """

    denials: tuple[Any, ...] = ()

    def __init__(
        self,
        name: str,
        reason: str,
        *,
        exitcode: int | None = None,
        signal: int | None = None,
        remote_type: str | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(f"worker {name!r} {reason}")
        self.name = name
        self.reason = reason
        self.exitcode = exitcode
        self.signal = signal
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[object, ...]:
        # Picklable like any exception (our parent never unpickles one from an isolate).
        return (_rebuild, (type(self), self.args, self.__dict__))


class IsolateViolation(WorkerFailed):
    """A worker made a syscall its policy kills for; it was stopped before the call ran.

    ``syscall`` is the name, ``nr`` the number and ``syscall_args`` the six raw arguments
    the kernel reported (for pointer arguments these are addresses in the worker);
    ``call`` the call in words, flags by name and paths as read from the worker while
    the call was parked: ``openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC)``.
    """

    def __init__(
        self,
        name: str,
        syscall: str,
        nr: int,
        syscall_args: tuple[int, ...],
        call: str | None = None,
    ) -> None:
        if call is None:
            call = f"{syscall}({', '.join(hex(a) if a > 0xFFFF else str(a) for a in syscall_args)})"
        super().__init__(name, f"was killed by its policy for calling {call}",
                         signal=int(signal.SIGKILL))  # fmt: skip
        self.syscall = syscall
        self.nr = nr
        self.syscall_args = syscall_args
        self.call = call


class RemoteTraceback(Exception):
    """Carries a worker's traceback text; set as ``__cause__`` of re-raised exceptions."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\n--- traceback in the isolate ---\n{self.text}"


def _rebuild(cls: type[WorkerFailed], args: tuple[object, ...], state: dict[str, object]) -> object:
    exc = WorkerFailed.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc

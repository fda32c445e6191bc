"""Starting a fresh interpreter for an isolate: the fork/exec lives here (``popen``), on
one thread (``Spawner``; its one instance is ``runtime.SPAWNER``).

Safety argument:

- The child is ``sys.executable -I`` (isolated mode: no PYTHON* variables, no user site,
  no script directory), with ``-S`` as well when isolates is importable from a plain
  ``sys.path`` entry, and its ``sys.path`` set explicitly from ours on its command line.
- Its environment is empty (the boot message sets only what the caller declares); stdin is
  /dev/null; it inherits no descriptor but stdout, stderr and the ones named in
  ``pass_fds`` (its control end and channel ends); it gets its own process group.
- Every spawn happens on one long-lived thread: PR_SET_PDEATHSIG fires when the *thread*
  that forked the child exits, so a short-lived caller thread must never be that parent.
  The child sets PDEATHSIG itself and then checks its parent is still the one it expects.
- ``subprocess.Popen`` runs no Python code between its fork and the exec (its C helper
  closes the descriptors and execs), so no lock or thread of ours matters in between.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Final, TypeVar

T = TypeVar("T")

SEP: Final = "\x1f"  # joins sys.path on the command line; never part of a path
BOOTSTRAP: Final = (
    "import sys; sys.path[:] = sys.argv[1].split('\\x1f'); "
    "from isolates.orchestrator._core.isolate_main import main; "
    "main(int(sys.argv[2]), int(sys.argv[3]))"
)


def command(control_fd: int) -> list[str]:
    """The child's command line: interpreter flags, bootstrap, sys.path, fd, parent pid."""
    flags = ["-I", "-S"] if _importable_without_site() else ["-I"]
    path = SEP.join(explicit_sys_path())
    return [sys.executable, *flags, "-c", BOOTSTRAP, path, str(control_fd), str(os.getpid())]


def explicit_sys_path() -> list[str]:
    """Our sys.path with absolute entries ('' is the current directory, now)."""
    return [os.path.abspath(p) if p else os.getcwd() for p in sys.path]


def _importable_without_site() -> bool:
    """True when the boot module sits in a plain ``sys.path`` directory. Then the child
    can skip site processing (``-S``, about 20 ms); an editable install is found through a
    finder that a .pth file installs, and needs it."""
    boot = os.path.join("isolates", "orchestrator", "_core", "isolate_main.py")
    return any(os.path.isfile(os.path.join(p, boot)) for p in explicit_sys_path())


def popen(control_fd: int, pass_fds: Sequence[int]) -> subprocess.Popen[bytes]:
    """Start an isolate interpreter (call on the spawner thread)."""
    return subprocess.Popen(
        command(control_fd),
        env={},
        stdin=subprocess.DEVNULL,
        pass_fds=(control_fd, *pass_fds),
        close_fds=True,
        process_group=0,
    )


class Spawner:
    """One daemon thread that runs every spawn, for the PDEATHSIG reason above."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, job: Callable[[], T]) -> T:
        """Run ``job`` on the spawner thread and return its result here."""
        if threading.current_thread() is self._thread:
            return job()
        future: Future[T] = Future()
        self._ensure_thread()
        self._jobs.put((job, future))
        return future.result()

    def submit(self, job: Callable[[], Any]) -> None:
        """Run ``job`` on the spawner thread later (used to refill the pool)."""
        self._ensure_thread()
        self._jobs.put((job, Future()))

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="isolates-spawner", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        while True:
            job, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)

    def after_fork_in_child(self) -> None:
        """The thread did not survive the fork (nor, maybe, the lock): start afresh."""
        self.__init__()  # type: ignore[misc]

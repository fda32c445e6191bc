"""The process-wide runtime: the pieces one process shares among all its isolates, and
what a fork and the exit do to them.

- ``SPAWNER``: the one thread every isolate is started from (spawn.py says why one);
- ``MONITOR``: the one thread reading the seccomp listeners of isolates (monitor.py);
- ``LIVE``: every isolate not yet reaped, which the exit kills and reaps;
- ``POOL``: the warm pool of idle interpreters (pool.py; ``isolates.orchestrator.POOL``);
- ``FORK_SERVER``: the clean interpreter that forks isolates (fork_server.py;
  ``isolates.orchestrator.FORK_SERVER``), and ``FORKED``, the pool of isolates it has
  forked ahead of the calls.

``spawn_isolate()`` starts an isolate wired to them, ``spawn_forked()`` one forked by the
fork server. A forked child starts with none of
them (its parent's threads did not survive the fork, and its parent's isolates are not
its to kill): the one at-fork hook below resets them all, the pool first (it holds
isolates), the threads last.
"""

from __future__ import annotations

import atexit
import os
from typing import Final

from .fork_server import ForkServer
from .monitor import Monitor
from .pool import Pool
from .process import IsolateProcess, LiveIsolates
from .spawn import Spawner

SPAWNER: Final = Spawner()
MONITOR: Final = Monitor()
LIVE: Final = LiveIsolates()


def spawn_isolate() -> IsolateProcess:
    """A fresh interpreter, started on the spawner thread, waiting for its boot message."""
    return IsolateProcess.spawn(SPAWNER, MONITOR, LIVE)


def spawn_forked() -> IsolateProcess:
    """A fresh isolate forked by the fork server, waiting for its boot message."""
    return IsolateProcess.forked(FORK_SERVER, MONITOR, LIVE)


POOL: Final = Pool(SPAWNER, spawn_isolate)
FORK_SERVER: Final = ForkServer(SPAWNER)
#: Isolates the fork server has forked already, waiting for a call: a call then pays
#: for neither the fork request nor the child's first steps (its pages copied on write).
FORKED: Final = Pool(SPAWNER, spawn_forked)
FORK_SERVER.pool = FORKED


def _after_fork_in_child() -> None:
    POOL.after_fork_in_child()  # its idle isolates are the parent's: close our copies
    FORKED.after_fork_in_child()
    FORK_SERVER.after_fork_in_child()
    LIVE.after_fork_in_child()
    MONITOR.after_fork_in_child()  # the parent's listeners: close our copies
    SPAWNER.after_fork_in_child()


def _at_exit() -> None:
    POOL.shutdown()
    FORKED.shutdown()
    LIVE.stop_all()
    FORK_SERVER.stop()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)

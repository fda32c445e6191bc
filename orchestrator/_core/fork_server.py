"""The fork server: one clean, exec'd interpreter that forks a fresh isolate per call.

Starting Python and importing costs tens of milliseconds; a fork of an interpreter that
has done so costs about one. The server is started exactly as an isolate is (spawn.py:
``-I``, an empty environment, no descriptor but its control channel, its own process
group, PDEATHSIG), imports what isolates need (the lean isolate main, msgspec for rich
results) and then only ever forks: it never unpickles or runs anything of a caller's.
Each child it forks starts where an exec'd isolate would after its imports
(``isolate_main.serve``): it says IDLE, reads its boot message from its own parent, and
loads namespaces, Landlock and seccomp before it runs one call; then it exits and the
server reaps it. What siblings share, and when to prefer exec: docs/orchestrator.md.

Protocol (a SOCK_SEQPACKET pair): the parent sends one byte with two descriptors, the
child's end of its new control channel and a *status* socket; the server forks, and on
the status socket sends the child's pid (8 bytes) with a pidfd for it, and later, once
it has reaped the child, its wait status (4 bytes). The parent's ``ForkedChild`` is a
``subprocess.Popen`` look-alike built on those.

Safety argument:

- The server is single-threaded (nothing here starts a thread, and it imports no user
  code), so ``os.fork`` copies no lock held by another thread; the child resets the
  signal handling the server set up before it does anything else.
- It holds no policy and no privilege a child may not have: it sets NO_NEW_PRIVS
  (which every policy sets anyway). A child closes every descriptor but stdio and its
  own control end first thing (the server's channel, the status sockets of its
  siblings), so it inherits nothing of the server's or of another call.
- A child's pidfd is opened while the child is the server's unreaped child, so it names
  that process and no other; the parent signals only through it. The server reaps each
  child itself (SIGCHLD wakes its loop), so no zombie outlives a call by more than the
  server's next turn, and it reports the status before closing the status socket.
- A child arms PDEATHSIG (SIGKILL) and checks its parent is still the server: if the
  server dies, every child it forked dies with it; the server has PDEATHSIG towards the
  parent's spawner thread, so the parent's death ends them all.
- Isolates that may start processes are never forked here (their tree is ended by
  process group, which needs them to be the parent's own children): see ``eligible``.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from isolates.sandbox.lowlevel import preload_runtime, set_no_new_privs, set_parent_death_signal

from .spawn import Spawner, command

REQUEST: Final = b"F"
_PID: Final = struct.Struct("=q")
_STATUS: Final = struct.Struct("=i")
#: Above any descriptor number a process of ours holds (closerange's end).
_MAX_FD: Final = 1 << 20
#: How long a fork request may take before the server is deemed stuck and restarted.
FORK_TIMEOUT: Final = 10.0
BOOTSTRAP: Final = (
    "import sys; sys.path[:] = sys.argv[1].split('\\x1f'); "
    "from isolates.orchestrator._core.fork_server import serve_forks; "
    "serve_forks(int(sys.argv[2]), int(sys.argv[3]))"
)


# -- the server's side -----------------------------------------------------------------


def serve_forks(control_fd: int, parent: int) -> None:
    """The server's main: fork a child per request until the parent closes the channel."""
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before PDEATHSIG was armed
        os._exit(1)
    set_no_new_privs()
    preload_runtime()
    import msgspec  # noqa: F401  (children encode rich results without importing it)

    from . import isolate_main

    isolate_main.warm_up()  # once here too: the code it specialises is then shared
    _cache_path_finders()
    # Everything imported so far, out of the collector's sight: a child's collections
    # then never touch (and so copy) the pages these objects live on.
    gc.freeze()
    control = socket.socket(fileno=control_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd is what we wait on
    children: dict[int, socket.socket] = {}
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                _drain(wake_r)
                _reap(children)
            elif not _serve_one(control, children, isolate_main.serve, (wake_r, wake_w)):
                os._exit(0)  # the parent closed the channel: children die by PDEATHSIG


def _cache_path_finders() -> None:
    """Make the finder of every ``sys.path`` entry now (a directory listing each), so a
    child importing its caller's module does not (the server imports nothing of it)."""
    import importlib.machinery

    importlib.machinery.PathFinder.find_spec("isolates-fork-server-warm-up")


def _serve_one(
    control: socket.socket,
    children: dict[int, socket.socket],
    run: Callable[..., object],
    wake: tuple[int, int],
) -> bool:
    """Answer one request; False once the parent has closed the channel."""
    try:
        msg, fds, _, _ = socket.recv_fds(control, 16, 2)
    except OSError:
        return False
    if not msg:
        return False
    if msg != REQUEST or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return True  # not from our parent's code: ignore it
    child_end, status_fd = fds
    status = socket.socket(fileno=status_fd)
    pid = os.fork()
    if pid == 0:
        _become_isolate([control, status, *children.values()], child_end, wake, run)
    os.close(child_end)
    pidfd = os.pidfd_open(pid)
    try:
        socket.send_fds(status, [_PID.pack(pid)], [pidfd])
    except OSError:  # the parent gave up on this child: it will find no one to talk to
        pass
    finally:
        os.close(pidfd)
    children[pid] = status
    return True


def _become_isolate(
    servers: list[socket.socket],
    child_end: int,
    wake: tuple[int, int],
    run: Callable[..., object],
) -> None:
    """In the child: drop everything of the server's, then be an isolate waiting to boot.

    Every descriptor but stdio and its own control end is closed: the server's channel,
    and the status sockets of its siblings (with one, a child could forge a sibling's
    exit status). The socket objects are detached first, so that none of them can later
    close a number that names something else by then."""
    server = os.getppid()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sock in servers:
        sock.detach()
    del wake  # the pipe's descriptors go with the rest
    os.closerange(3, child_end)
    os.closerange(child_end + 1, _MAX_FD)
    try:
        os.setpgid(0, 0)  # its own process group, as an exec'd isolate has
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != server:
            os._exit(1)
        run(socket.socket(fileno=child_end), forked=True)
    finally:
        os._exit(1)


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status = children.pop(pid, None)
        if status is not None:
            try:
                status.send(_STATUS.pack(wait_status))
            except OSError:
                pass
            status.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 256):
            pass
    except BlockingIOError:
        pass


# -- the parent's side -----------------------------------------------------------------


class ForkedChild:
    """A child of the fork server, as ``subprocess.Popen`` would show it: ``pid``,
    ``returncode``, ``poll()``, ``wait()``. Its status comes from the server, which
    reaps it; if the server died first, the child died with it (PDEATHSIG)."""

    def __init__(self, pid: int, status: socket.socket) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._status = status

    def poll(self) -> int | None:
        if self.returncode is None:
            self._read(block=False)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status, from the server. Without ``timeout``, a server that has not
        reported within FORK_TIMEOUT is taken to have failed: the child is reported as
        killed (callers wait only once it has exited: ``IsolateProcess.reap``)."""
        if self.returncode is None:
            self._read(block=True, timeout=FORK_TIMEOUT if timeout is None else timeout)
        if self.returncode is None and timeout is None:
            self.returncode = -signal.SIGKILL
            self._status.close()
        if self.returncode is None:
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        return self.returncode

    def _read(self, block: bool, timeout: float | None = None) -> None:
        # A socket with a timeout polls before every recv, MSG_DONTWAIT or not: set the
        # mode each time.
        self._status.settimeout(timeout if block else 0.0)
        try:
            data = self._status.recv(_STATUS.size)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            data = b""
        self._status.close()
        if len(data) == _STATUS.size:
            self.returncode = os.waitstatus_to_exitcode(_STATUS.unpack(data)[0])
        else:  # the server died before reaping it: so did the child (PDEATHSIG)
            self.returncode = -signal.SIGKILL


class ForkServer:
    """The parent's handle on its fork server (its one instance: ``runtime.FORK_SERVER``,
    public as ``isolates.orchestrator.FORK_SERVER``). Started on first use; a server
    that died is reported (``restarts``) and started again, and a request it cannot
    answer never hangs the caller: it fails after ``FORK_TIMEOUT`` or on the death."""

    def __init__(self, spawner: Spawner) -> None:
        self._spawner = spawner
        self._lock = threading.Lock()
        self._server: _Server | None = None
        #: How many times a dead or stuck server was replaced.
        self.restarts = 0
        self._starting = False  # start_soon queued a start
        #: Isolates forked ahead of the calls (a ``Pool``, like ``POOL`` for exec'd
        #: ones: ``FORK_SERVER.pool.resize(0)`` turns it off). Set by runtime.py.
        self.pool: Any = None

    @property
    def pid(self) -> int | None:
        server = self._server
        return server.pid if server is not None and server.alive() else None

    def start(self) -> None:
        """Start the server now (blocking until it is ready) rather than on first use."""
        self._spawner.run(self._ensure)

    def start_soon(self) -> None:
        """Start the server in the background (on the spawner thread, after what it has
        queued), unless it runs or is starting already."""
        with self._lock:
            if self._starting or (self._server is not None and self._server.alive()):
                return
            self._starting = True
        self._spawner.submit(self._started_soon)

    def _started_soon(self) -> None:
        try:
            self._ensure()
        except OSError as exc:  # cannot start one now: calls are exec'd meanwhile
            print(f"isolates: the fork server did not start ({exc})", file=sys.stderr)
        finally:
            self._starting = False

    def new_child(self) -> tuple[ForkedChild, int, socket.socket]:
        """A fresh child: (its Popen look-alike, a pidfd for it, our end of its control
        channel). One retry on a new server if the current one has died."""
        for attempt in (1, 2):
            server = self._running() or self._spawner.run(self._ensure)
            try:
                return server.new_child()
            except OSError as exc:
                self._replace(server, exc)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _running(self) -> _Server | None:
        """The server if it runs (no need to queue behind the spawner's work then)."""
        with self._lock:
            server = self._server
        return server if server is not None and server.alive() else None

    def _ensure(self) -> _Server:
        """The running server, started if need be. On the spawner thread only (PDEATHSIG,
        see spawn.py), which also orders starts: no lock is held while waiting for it."""
        with self._lock:
            if self._server is not None and self._server.alive():
                return self._server
            if self._server is not None:
                self.restarts += 1
                self._server.stop()
            self._server = _Server.spawn()
            return self._server

    def _replace(self, server: _Server, exc: OSError) -> None:
        with self._lock:
            if self._server is server:
                print(f"isolates: the fork server died or stalled ({exc}); restarting it",
                      file=sys.stderr)  # fmt: skip
                server.stop()
                self._server = None
                self.restarts += 1

    def stop(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.stop()
                self._server = None

    def after_fork_in_child(self) -> None:
        """The server is our parent's: a forked child closes its copies of the server's
        channel and pidfd (the server sees its parent leave only when every copy is
        gone) and starts its own if it needs one."""
        if self._server is not None:
            self._server.control.close()
            os.close(self._server.pidfd)
        self._server = None
        self._starting = False
        self._lock = threading.Lock()


class _Server:
    def __init__(self, proc: subprocess.Popen[bytes], control: socket.socket, pidfd: int) -> None:
        self.proc = proc
        self.control = control
        self.pid = proc.pid
        self.pidfd = pidfd
        self._lock = threading.Lock()

    @classmethod
    def spawn(cls) -> _Server:
        """Start the server (on the spawner thread: PDEATHSIG, see spawn.py)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            argv = command(theirs.fileno())
            argv[argv.index("-c") + 1] = BOOTSTRAP
            proc = subprocess.Popen(argv, env={}, stdin=subprocess.DEVNULL,
                                    pass_fds=(theirs.fileno(),), close_fds=True,
                                    process_group=0)  # fmt: skip
        finally:
            theirs.close()
        return cls(proc, ours, os.pidfd_open(proc.pid))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def new_child(self) -> tuple[ForkedChild, int, socket.socket]:
        ours, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        status, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._lock:
                socket.send_fds(self.control, [REQUEST], [child_end.fileno(), server_end.fileno()])
            status.settimeout(FORK_TIMEOUT)
            data, fds, _, _ = socket.recv_fds(status, _PID.size, 1)
        except BaseException:
            ours.close()
            status.close()
            raise
        finally:
            child_end.close()
            server_end.close()
        if len(data) != _PID.size or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            ours.close()
            status.close()
            raise ConnectionError("the fork server closed the request unanswered")
        return ForkedChild(_PID.unpack(data)[0], status), fds[0], ours

    def stop(self) -> None:
        self.control.close()  # it exits at EOF; its children die with it (PDEATHSIG)
        deadline = time.monotonic() + 1.0
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.proc.poll() is None:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            self.proc.wait()
        os.close(self.pidfd)

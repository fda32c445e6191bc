"""Every builtin allow_* method: what it allows works, its neighbour is denied with the
policy's errno, each in a forked child that loads the policy."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from isolates.sandbox import (
    Action,
    Networking,
    Pipes,
    Policy,
    Processes,
    RuleSet,
    Signals,
    SystemIO,
    Threads,
    Time,
)
from tests.forked import in_child
from tests.sandbox.syscall import raw

DENIED = errno.ENOANO  # an errno no allowed call here returns by itself


@dataclass
class Case:
    ruleset: RuleSet
    allowed: Callable[[Any], Any]
    denied: Callable[[Any], Any]
    setup: Callable[[], Any] = lambda: None


def _check(case: Case) -> tuple[Any, int | None]:
    ctx = case.setup()
    Policy(case.ruleset, default=Action.ERRNO(DENIED)).apply()
    value = case.allowed(ctx)
    try:
        case.denied(ctx)
    except OSError as exc:
        return value, exc.errno
    return value, None


def _tmpdir() -> str:
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "f"), "w") as f:
        f.write("hello")
    return d


def _pipe_with_data() -> tuple[int, int]:
    r, w = os.pipe()
    os.write(w, b"data")
    return r, w


def _listener(kind: int = socket.SOCK_STREAM) -> socket.socket:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        s.listen()
    return s


def _connect(listener: socket.socket) -> bool:
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    c.connect(listener.getsockname())
    return True


def _accept_pending() -> socket.socket:
    lst = _listener()
    peer = socket.create_connection(lst.getsockname())
    _KEEP.append(peer)  # keep the client alive
    return lst


def _unix_path() -> str:
    return os.path.join(tempfile.mkdtemp(), "sock")


def _unix_server_ready() -> str:
    path = _unix_path()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen()
    _KEEP.append(srv)
    return path


_KEEP: list[Any] = []  # objects a child must keep open while it runs


def _handler_then_raise() -> int:
    hits: list[int] = []
    signal.signal(signal.SIGUSR1, lambda *_: hits.append(1))
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.raise_signal(signal.SIGUSR1)
    return len(hits)


def _fork_and_reap() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _as_stdin() -> tuple[int, int]:
    r, _ = _pipe_with_data()
    os.dup2(r, 0)
    return _pipe_with_data()


def _onto_fd(fd: int, write: bool = False) -> tuple[int, int]:
    r, w = _pipe_with_data()
    os.dup2(w if write else r, fd)
    return _pipe_with_data()


def _run_thread() -> int:
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(42))
    t.start()
    t.join()
    return out[0]


def _splice(p: tuple[int, int]) -> int:
    return os.splice(p[0], p[2], 4)  # type: ignore[misc]


def _two_pipes() -> tuple[int, int, int]:
    r, w = _pipe_with_data()
    return r, w, os.pipe()[1]


def _temp_fd() -> int:
    f = tempfile.TemporaryFile()  # noqa: SIM115 - must stay open while the child runs
    _KEEP.append(f)
    return f.fileno()


_NAMEBUF = __import__("ctypes").create_string_buffer(16)
_NAMEBUF_ADDR = __import__("ctypes").addressof(_NAMEBUF)


def _timex() -> int:
    import ctypes

    buf = ctypes.create_string_buffer(256)  # struct timex, modes = 0: read only
    _KEEP.append(buf)
    return ctypes.addressof(buf)


CASES = {
    # SystemIO
    "read": Case(SystemIO.nothing().allow_read(), lambda p: os.read(p[0], 4),
                 lambda p: os.write(p[1], b"x"), _pipe_with_data),
    "write": Case(SystemIO.nothing().allow_write(), lambda p: os.write(p[1], b"x"),
                  lambda p: os.read(p[0], 1), _pipe_with_data),
    "open": Case(SystemIO.nothing().allow_open(),
                 lambda d: os.open(os.path.join(d, "new"), os.O_WRONLY | os.O_CREAT),
                 lambda d: os.unlink(os.path.join(d, "f")), _tmpdir),
    "open_readonly": Case(SystemIO.nothing().allow_open_readonly(),
                          lambda d: os.open(os.path.join(d, "f"), os.O_RDONLY),
                          lambda d: os.open(os.path.join(d, "f"), os.O_WRONLY), _tmpdir),
    "open_readonly_trunc": Case(SystemIO.nothing().allow_open_readonly(),
                                lambda d: os.open(d, os.O_RDONLY | os.O_DIRECTORY),
                                lambda d: os.open(os.path.join(d, "f"), os.O_RDONLY | os.O_TRUNC),
                                _tmpdir),
    "open_readonly_creat": Case(SystemIO.nothing().allow_open_readonly(),
                                lambda d: os.open(os.path.join(d, "f"), os.O_RDONLY),
                                lambda d: os.open(os.path.join(d, "g"), os.O_RDONLY | os.O_CREAT),
                                _tmpdir),
    "open_readonly_openat2": Case(SystemIO.nothing().allow_open_readonly(),
                                  lambda d: os.open(os.path.join(d, "f"), os.O_RDONLY),
                                  lambda d: raw("openat2", -100, 0, 0, 24), _tmpdir),
    "metadata": Case(SystemIO.nothing().allow_metadata(), lambda d: os.stat(d).st_mode,
                     lambda d: os.mkdir(os.path.join(d, "x")), _tmpdir),
    "ioctl": Case(SystemIO.nothing().allow_ioctl([termios.FIONREAD]),
                  lambda p: fcntl.ioctl(p[0], termios.FIONREAD, b"\0\0\0\0"),
                  lambda p: fcntl.ioctl(p[0], termios.FIOCLEX), _pipe_with_data),
    "close": Case(SystemIO.nothing().allow_close(), lambda p: os.close(p[0]),
                  lambda p: os.dup(p[1]), _pipe_with_data),
    "unlink": Case(SystemIO.nothing().allow_unlink(), lambda d: os.unlink(os.path.join(d, "f")),
                   lambda d: os.rename(d, d + ".x"), _tmpdir),
    "mkdir": Case(SystemIO.nothing().allow_mkdir(), lambda d: os.mkdir(os.path.join(d, "x")),
                  lambda d: os.rmdir(d), _tmpdir),
    "rename": Case(SystemIO.nothing().allow_rename(),
                   lambda d: os.rename(os.path.join(d, "f"), os.path.join(d, "g")),
                   lambda d: os.link(os.path.join(d, "g"), os.path.join(d, "h")), _tmpdir),
    "links": Case(SystemIO.nothing().allow_links(),
                  lambda d: os.symlink("f", os.path.join(d, "s")),
                  lambda d: os.chmod(os.path.join(d, "f"), 0o600), _tmpdir),
    "attributes": Case(SystemIO.nothing().allow_attributes(),
                       lambda d: os.chmod(os.path.join(d, "f"), 0o600),
                       lambda d: os.truncate(os.path.join(d, "f"), 0), _tmpdir),
    "truncate": Case(SystemIO.nothing().allow_truncate(),
                     lambda d: os.truncate(os.path.join(d, "f"), 1),
                     lambda d: os.link(os.path.join(d, "f"), os.path.join(d, "l")), _tmpdir),
    "sync": Case(SystemIO.nothing().allow_sync(), lambda fd: os.fsync(fd),
                 lambda fd: os.dup(fd), _temp_fd),
    "dup": Case(SystemIO.nothing().allow_dup(), lambda p: os.dup(p[0]),
                lambda p: select.select([p[0]], [], [], 0), _pipe_with_data),
    "poll": Case(SystemIO.nothing().allow_poll(), lambda p: select.select([p[0]], [], [], 0)[0],
                 lambda p: os.read(p[0], 1), _pipe_with_data),
    "stdin": Case(SystemIO.nothing().allow_stdin(), lambda p: os.read(0, 4),
                  lambda p: os.read(p[0], 4), lambda: _as_stdin()),
    "stdout": Case(SystemIO.nothing().allow_stdout(), lambda p: os.write(1, b""),
                   lambda p: os.write(2, b"x"), _pipe_with_data),
    "stderr": Case(SystemIO.nothing().allow_stderr(), lambda p: os.write(2, b""),
                   lambda p: os.write(1, b"x"), _pipe_with_data),
    "file_read": Case(SystemIO.nothing().allow_file_read(5), lambda p: os.read(5, 4),
                      lambda p: os.read(p[0], 4), lambda: _onto_fd(5)),
    "file_write": Case(SystemIO.nothing().allow_file_write(6), lambda p: os.write(6, b"x"),
                       lambda p: os.write(p[1], b"x"), lambda: _onto_fd(6, write=True)),
    # Networking
    "tcp_clients": Case(Networking.nothing().allow_tcp_clients(), _connect,
                        lambda s: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), _listener),
    "tcp_clients_no_raw": Case(Networking.nothing().allow_tcp_clients(), _connect,
                               lambda s: socket.socket(socket.AF_INET, socket.SOCK_RAW, 6),
                               _listener),
    "tcp_clients_no_packet": Case(Networking.nothing().allow_tcp_clients(), _connect,
                                  lambda s: socket.socket(socket.AF_PACKET, socket.SOCK_STREAM),
                                  _listener),
    "tcp_clients_no_alg": Case(Networking.nothing().allow_tcp_clients(), _connect,
                               lambda s: socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET),
                               _listener),
    "tcp_clients_no_netlink": Case(Networking.nothing().allow_tcp_clients(), _connect,
                                   lambda s: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW),
                                   _listener),
    "start_tcp_servers": Case(Networking.nothing().allow_start_tcp_servers(),
                              lambda _: _listener().getsockname()[1] > 0,
                              lambda _: _listener().accept()),
    "running_tcp_servers": Case(Networking.nothing().allow_running_tcp_servers(),
                                lambda lst: lst.accept()[0].send(b"hi"),
                                lambda lst: socket.socket(), _accept_pending),
    "udp_servers": Case(Networking.nothing().allow_udp_servers(),
                        lambda _: _listener(socket.SOCK_DGRAM).getsockname()[1] > 0,
                        lambda _: socket.socket(socket.AF_INET6, socket.SOCK_STREAM)),
    "udp_clients": Case(Networking.nothing().allow_udp_clients(),
                        lambda _: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        .connect(("127.0.0.1", 9)),
                        lambda _: _listener(socket.SOCK_DGRAM)),
    "unix_servers": Case(Networking.nothing().allow_unix_servers(),
                         lambda p: socket.socket(socket.AF_UNIX).bind(p),
                         lambda p: socket.socket(socket.AF_UNIX).connect(p), _unix_path),
    "unix_clients": Case(Networking.nothing().allow_unix_clients(),
                         lambda p: socket.socket(socket.AF_UNIX).connect(p),
                         lambda p: socket.socket(socket.AF_UNIX).bind(p + "2"),
                         _unix_server_ready),
    # Threads, Time, Pipes, Processes, Signals
    "threads": Case(Threads.nothing().allow_create(), lambda _: _run_thread(),
                    lambda _: os.fork()),
    "sleep": Case(Threads.nothing().allow_sleep(), lambda _: time.sleep(0.001),
                  lambda _: os.sched_setaffinity(0, {0})),
    "priority": Case(Threads.nothing().allow_priority(),
                     lambda _: os.getpriority(os.PRIO_PROCESS, 0),
                     lambda _: os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))),
    "timers": Case(Time.nothing().allow_timers(),
                   lambda _: signal.setitimer(signal.ITIMER_REAL, 0),
                   lambda _: time.sleep(0.001)),
    "set_time": Case(Time.nothing().allow_set_time(), lambda _: raw("adjtimex", _timex()),
                     lambda _: raw("timerfd_create", 1, 0)),
    "time_sleep": Case(Time.nothing().allow_sleep(), lambda _: time.sleep(0.001),
                       lambda _: signal.setitimer(signal.ITIMER_REAL, 0)),
    "pipes": Case(Pipes.nothing().allow_create(), lambda _: os.pipe(),
                  lambda p: os.splice(p[0], p[1], 1), _pipe_with_data),
    "splice": Case(Pipes.nothing().allow_splice(), lambda p: _splice(p),
                   lambda p: os.pipe(), _two_pipes),
    "fork": Case(Processes.nothing().allow_fork().allow_wait(), lambda _: _fork_and_reap(),
                 lambda _: os.execv("/bin/true", ["true"])),
    "exec_denied": Case(Processes.nothing().allow_sessions(), lambda _: os.getsid(0),
                        lambda _: os.execv("/bin/true", ["true"])),
    "prctl_name": Case(Processes.nothing().allow_prctl_name(),
                       lambda _: raw("prctl", 16, _NAMEBUF_ADDR),
                       lambda _: raw("prctl", 4, 0)),  # PR_SET_DUMPABLE
    "signal_handlers": Case(Signals.nothing().allow_handlers(),
                            lambda _: signal.sigpending(), lambda _: os.kill(os.getppid(), 0)),
    "kill_self": Case(Signals.nothing().allow_kill_self(), lambda _: _handler_then_raise(),
                      lambda _: os.kill(os.getppid(), 0)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_builtin_allows_its_call_and_denies_the_neighbour(name: str) -> None:
    _, err = in_child(_check, CASES[name]).unwrap()
    assert err == DENIED, f"{name}: the neighbouring call was not denied with the policy errno"


def test_everything_is_the_union_of_every_method() -> None:
    def check() -> tuple[bool, int | None]:
        Policy(SystemIO.everything(), default=Action.ERRNO(DENIED)).apply()
        d = tempfile.mkdtemp()  # open, write, stat...: all in SystemIO.everything()
        with open(os.path.join(d, "f"), "w") as f:
            f.write("x")
        os.rename(os.path.join(d, "f"), os.path.join(d, "g"))
        try:
            socket.socket()
        except OSError as exc:
            return True, exc.errno
        return True, None

    assert in_child(check).unwrap() == (True, DENIED)

"""A syscall in words: flags by name, special descriptors, paths and addresses read from
the caller's memory (here: our own, through /proc/self/mem, as the monitor reads an
isolate's)."""

from __future__ import annotations

import ctypes
import os
import socket

from isolates.sandbox.lowlevel import describe_call, memory_reader
from isolates.sandbox.lowlevel import syscall_number as nr

U64 = (1 << 64) - 1
OURS = memory_reader(os.getpid())


def _address_of(data: bytes) -> tuple[int, ctypes.Array[ctypes.c_char]]:
    buf = ctypes.create_string_buffer(data)
    return ctypes.addressof(buf), buf


def test_an_open_reads_its_path_and_names_its_flags() -> None:
    path, _keep = _address_of(b"/etc/passwd")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    said = describe_call(nr("openat"), (-100 & U64, path, flags, 0o640, 0, 0), OURS)
    assert said == 'openat(AT_FDCWD, "/etc/passwd", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0640)'
    assert (
        describe_call(nr("openat"), (3, path, os.O_RDONLY)) == f"openat(3, {path:#x}, O_RDONLY, 0)"
    )


def test_a_connect_reads_its_address() -> None:
    inet = socket.AF_INET.to_bytes(2, "little") + (8080).to_bytes(2, "big") + bytes([127, 0, 0, 1])
    addr, _keep = _address_of(inet + bytes(8))
    assert (
        describe_call(nr("connect"), (5, addr, 16), OURS)
        == "connect(5, {AF_INET, 127.0.0.1:8080}, 16)"
    )
    unix, _keep2 = _address_of(socket.AF_UNIX.to_bytes(2, "little") + b"/run/x.sock\0")
    said = describe_call(nr("connect"), (5, unix, 14), OURS)
    assert said == 'connect(5, {AF_UNIX, "/run/x.sock"}, 14)'


def test_clone_socket_and_signals_by_name() -> None:
    thread = 0x3D0F00
    assert describe_call(nr("clone"), (thread | 17,)).startswith("clone(CLONE_VM|CLONE_FS|")
    assert "CLONE_THREAD" in describe_call(nr("clone"), (thread,))
    assert describe_call(nr("clone"), (0x10000000 | 17,)).startswith("clone(CLONE_NEWUSER|SIGCHLD,")
    sock = describe_call(
        nr("socket"), (socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK, 0)
    )
    assert sock == "socket(AF_INET6, SOCK_DGRAM|SOCK_NONBLOCK, 0)"
    assert describe_call(nr("kill"), (-1 & U64, 9)) == "kill(-1, SIGKILL)"
    assert describe_call(nr("ioctl"), (0, 0x5412, 0)) == "ioctl(0, TIOCSTI, NULL)"


def test_unknown_calls_and_unreadable_memory_fall_back_to_numbers() -> None:
    assert describe_call(nr("getpid"), ()) == "getpid()"
    assert describe_call(nr("uname"), (0x7FFD1234,)) == "uname(0x7ffd1234)"
    unmapped = describe_call(nr("unlink"), (0x10,), OURS)  # page zero: nothing there
    assert unmapped == "unlink(16)"

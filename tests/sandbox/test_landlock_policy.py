"""Landlock inside a Policy: its rights bring the syscalls they need, seccomp stays as tight
as the user asked, Landlock is loaded first; each in a forked child."""

from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
from pathlib import Path

import pytest

from isolates.sandbox import Landlock, Networking, Policy, SystemIO, Threads
from tests.sandbox.test_landlock_child import attempt, run


@pytest.fixture
def d(tmp_path: Path) -> Path:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("inside")
    (tmp_path / "outside").write_text("outside")
    return tmp_path / "d"


def test_readonly_opens_with_landlock_read(d: Path) -> None:
    policy = Policy(SystemIO.nothing().allow_open_readonly(), Landlock().read(d))
    policy.compile()

    def child() -> dict[str, str]:
        status = policy.apply()
        assert status.enforcement == "full", status
        return {
            "read inside": (d / "f").read_text(),
            "list inside": ",".join(os.listdir(d)),
            "read outside": attempt((d.parent / "outside").read_text),  # Landlock
            "open for writing": attempt(os.open, d / "f", os.O_WRONLY),  # seccomp
            "create": attempt(os.open, d / "g", os.O_CREAT | os.O_RDONLY),  # seccomp
        }

    assert run(child) == {
        "read inside": "inside",
        "list inside": "f",
        "read outside": "EACCES",
        "open for writing": "EPERM",
        "create": "EPERM",
    }


def test_stdout_with_landlock_write(d: Path) -> None:
    policy = Policy(SystemIO.nothing().allow_stdout(), Landlock().write(d))
    policy.compile()
    out = d.parent / "stdout"

    def child() -> dict[str, str]:
        os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT, 0o600), 1)
        policy.apply()
        return {
            "new file": attempt((d / "new").write_text, "new"),
            "overwrite": attempt((d / "f").write_text, "over"),
            "stdout": attempt(os.write, 1, b"to stdout\n"),
            "write outside": attempt((d.parent / "outside").write_text, "x"),  # Landlock
            "read inside": attempt(os.open, d / "f", os.O_RDONLY),  # seccomp
            "other descriptors": attempt(os.read, 0, 1),  # seccomp
        }

    assert run(child) == {
        "new file": "ok",
        "overwrite": "ok",
        "stdout": "ok",
        "write outside": "EACCES",
        "read inside": "EPERM",
        "other descriptors": "EPERM",
    }
    assert ((d / "new").read_text(), (d / "f").read_text()) == ("new", "over")
    assert out.read_text() == "to stdout\n"
    assert (d.parent / "outside").read_text() == "outside"


def test_tcp_ports_with_networking() -> None:
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    policy = Policy(Networking.nothing().allow_start_tcp_servers(), Landlock().bind_tcp(ports[0]))
    policy.compile()

    def child() -> tuple[str, str, str]:
        policy.apply()
        with socket.socket() as a, socket.socket() as b, socket.socket() as c:
            return (
                attempt(a.bind, ("127.0.0.1", ports[0])),
                attempt(b.bind, ("127.0.0.1", ports[1])),  # Landlock
                attempt(c.connect, ("127.0.0.1", ports[0])),  # seccomp: never granted
            )

    assert run(child) == ("ok", "EACCES", "EPERM")


def test_python_runtime_with_metadata_keeps_imports_working() -> None:
    lazy = next(m for m in ("sqlite3", "lzma", "bz2", "colorsys") if m not in sys.modules)
    policy = Policy(
        SystemIO.nothing().allow_open_readonly().allow_metadata(), Landlock().python_runtime()
    )
    policy.compile()

    def child() -> str:
        policy.apply()
        return attempt(importlib.import_module, lazy)

    assert run(child) == "ok"


def test_policy_run_confines_only_its_thread(d: Path) -> None:
    policy = Policy(SystemIO.nothing().allow_open_readonly(), Landlock().read(d))
    outside = d.parent / "outside"

    def child() -> tuple[str, str, str]:
        confined = policy.run(attempt, outside.read_text)
        inside = policy.run((d / "f").read_text)
        return confined, inside, attempt(outside.read_text)

    assert run(child) == ("EACCES", "inside", "ok")


def test_threads_started_after_apply_are_confined(d: Path) -> None:
    policy = Policy(
        SystemIO.nothing().allow_open_readonly(), Threads.nothing().allow_create(),
        Landlock().read(d),
    )  # fmt: skip
    policy.compile()

    def child() -> list[str]:
        policy.apply()
        seen: list[str] = []
        thread = threading.Thread(target=lambda: seen.append(attempt((d / "f").read_text)))
        thread.start()
        thread.join()
        other = threading.Thread(
            target=lambda: seen.append(attempt((d.parent / "outside").read_text))
        )
        other.start()
        other.join()
        return seen

    assert run(child) == ["ok", "EACCES"]

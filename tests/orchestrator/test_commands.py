"""``run`` and ``Popen``: subprocess's own, with ``policy=``; the program runs confined
(its denial proven, its allowed neighbour working), with limits and capabilities."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from isolates.orchestrator import Limits, Popen, run
from isolates.sandbox import Action, Landlock, PolicyError, profiles


def test_run_confines_the_program_and_returns_what_subprocess_returns(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("inside\n")
    policy = profiles.pledge("stdio rpath").extend(Landlock().read(tmp_path))
    done = run(["cat", str(tmp_path / "in.txt")], policy=policy, capture_output=True, text=True)
    assert isinstance(done, subprocess.CompletedProcess)
    assert (done.args, done.returncode, done.stdout) == (["cat", str(tmp_path / "in.txt")], 0,
                                                         "inside\n")  # fmt: skip
    refused = run(["cat", "/etc/hostname"], policy=policy, capture_output=True, text=True)
    assert refused.returncode == 1 and "Permission denied" in refused.stderr
    with pytest.raises(subprocess.CalledProcessError):
        run(["cat", "/etc/hostname"], policy=policy, capture_output=True, check=True)


def test_popen_pipes_like_subprocess_and_leaks_no_descriptor(tmp_path: Path) -> None:
    with Popen(["sh", "-c", "ls /proc/self/fd; read line; echo got $line"], stdin=subprocess.PIPE,
               stdout=subprocess.PIPE, text=True) as proc:  # fmt: skip
        out, _ = proc.communicate("hello\n", timeout=30)
    assert proc.returncode == 0 and out.endswith("got hello\n")
    fds = sorted(int(n) for n in out.split()[:-2])
    assert fds == [0, 1, 2, 3]  # stdio, and ls's own directory: the policy's memfd is gone


def test_limits_and_a_policy_that_denies_the_network() -> None:
    big = run([sys.executable, "-c", "bytearray(10**9)"], limits=Limits(memory="64M"),
              capture_output=True, text=True)  # fmt: skip
    assert big.returncode == 1 and "MemoryError" in big.stderr
    code = "import socket; socket.socket(); print('made')"
    python = Landlock().read(os.path.realpath(sys.base_exec_prefix)).read(sys.prefix)
    quiet = profiles.pledge("stdio rpath").extend(python)
    denied = run([sys.executable, "-I", "-c", code], policy=quiet, capture_output=True, text=True)
    assert denied.returncode == -signal.SIGSYS  # pledge kills, as on OpenBSD
    inet = profiles.pledge("stdio rpath inet").extend(python)
    allowed = run([sys.executable, "-I", "-c", code], policy=inet, capture_output=True, text=True)
    assert (allowed.returncode, allowed.stdout) == (0, "made\n"), allowed.stderr


def test_what_cannot_be_confined_is_refused_before_anything_runs() -> None:
    with pytest.raises(PolicyError, match="shell=True"):
        run("cat /etc/passwd", shell=True)
    with pytest.raises(PolicyError, match="policy= takes a Policy"):
        run(["true"], policy="stdio")  # type: ignore[arg-type]


def test_denials_reach_stderr_as_isolates_run_says_them() -> None:
    """report_denials=None (default): said when the program fails; True: always; False:
    never. The answers (EPERM) are the same in every case."""
    code = (
        "import socket, sys\ntry:\n    socket.socket()\nexcept OSError as e:\n    print(e.errno)\n"
    )
    python = Landlock().read(os.path.realpath(sys.base_exec_prefix)).read(sys.prefix)
    policy = profiles.pledge("stdio rpath").extend(python, default=Action.ERRNO(errno.EPERM))
    said = "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0) -> EPERM; allowed by --allow socket"
    for status, report, shown in ((3, None, True), (0, None, False), (0, True, True),
                                  (3, False, False)):  # fmt: skip
        argv = [sys.executable, "-I", "-c", f"{code}sys.exit({status})"]
        done = run(argv, policy=policy, report_denials=report, capture_output=True, text=True)
        assert (done.returncode, done.stdout) == (status, "1\n"), done.stderr
        assert (said in done.stderr) == shown, (status, report, done.stderr)

"""``isolates run --learn --profile FILE [--update]``: what the profile would deny is let
run and named; ``--update`` adds exactly that; what every policy denies is never
learned. Real programs, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "isolates.orchestrator._cli"]


def isolates(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_learning_names_the_denials_and_update_makes_the_program_work(tmp_path: Path) -> None:
    tree, other = tmp_path / "tree", tmp_path / "other"
    for d in (tree, other):
        d.mkdir()
        (d / "f.txt").write_text("needle\n")
    profile = tmp_path / "grep.toml"
    traced = isolates("trace", "-o", "/dev/null", "--emit", str(profile), "--",
                      "grep", "-r", "needle", str(tree))  # fmt: skip
    assert traced.returncode == 0, traced.stderr
    before = isolates("run", "--profile", str(profile), "--", "grep", "-r", "needle", str(other))
    assert before.returncode == 2  # another tree: refused
    learned = isolates("run", "--learn", "--update", "--profile", str(profile), "--",
                       "grep", "-r", "needle", str(other))  # fmt: skip
    assert learned.returncode == 0 and "needle" in learned.stdout  # it ran, though denied
    assert f"landlock: {other}" in learned.stderr and "--update:" in learned.stderr
    after = isolates("run", "--profile", str(profile), "--", "grep", "-r", "needle", str(other))
    assert after.returncode == 0 and "needle" in after.stdout, after.stderr
    # exactly that: the tree beside it is still refused
    third = tmp_path / "third"
    third.mkdir()
    (third / "f.txt").write_text("needle\n")
    still = isolates("run", "--profile", str(profile), "--", "grep", "-r", "needle", str(third))
    assert still.returncode == 2
    again = isolates("run", "--learn", "--profile", str(profile), "--",
                     "grep", "-r", "needle", str(other))  # fmt: skip
    assert "the profile denied nothing this run did" in again.stderr


UNSHARE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print(libc.syscall(272, 0x10000000), ctypes.get_errno())  # unshare(CLONE_NEWUSER)
"""


def test_what_every_policy_denies_is_never_learned(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('version = 1\ndefault = "allow"\n')
    done = isolates("run", "--learn", "--update", "--profile", str(profile), "--",
                    sys.executable, "-c", UNSHARE)  # fmt: skip
    assert done.stdout.split() == ["-1", "1"]  # EPERM, even while learning
    assert "unshare" not in profile.read_text()


def test_learn_needs_a_profile() -> None:
    done = isolates("run", "--learn", "--", "true")
    assert done.returncode == 2 and "--learn needs --profile FILE" in done.stderr

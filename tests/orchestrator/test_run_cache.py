"""``isolates run``'s cache of compiled policies (orchestrator/_cli/run_cache.py).

Each run is a real ``python -m isolates.orchestrator._cli run`` in a subprocess; whether it
built its policy or took it from the cache shows in what it imported (``-X importtime``):
a run from the cache imports none of the Policy machinery. Every test's options name a
fresh directory, so each starts with no entry of its own.
"""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from isolates.orchestrator._cli import main as cli_main
from isolates.orchestrator._cli import run, run_cache
from isolates.sandbox import Action, Landlock, Policy

CLI = [sys.executable, "-X", "importtime", "-m", "isolates.orchestrator._cli", "run"]
BUILDING = "isolates.sandbox._policy"  # imported by a run that builds its policy


def isolates_run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, bool]:
    """(status, stdout, stderr without the import lines, whether the policy was built)."""
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)
    lines = done.stderr.splitlines()
    built = any(BUILDING in line for line in lines)
    said = "\n".join(line for line in lines if not line.startswith("import time:"))
    return done.returncode, done.stdout, said, built


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "inside").mkdir()
    (tmp_path / "inside" / "in.txt").write_text("in here\n")
    (tmp_path / "out.txt").write_text("out there\n")
    return tmp_path


def _entries() -> set[str]:
    folder = run_cache._directory()
    return (
        {n for n in os.listdir(folder) if n.endswith(".policy")} if os.path.isdir(folder) else set()
    )


def test_the_second_run_takes_the_policy_from_the_cache_and_is_as_confined(tree: Path) -> None:
    inside, outside = tree / "inside" / "in.txt", tree / "out.txt"
    options = ("--pledge", "stdio rpath", "--read", str(tree / "inside"), "--")
    first = isolates_run(*options, "cat", str(inside))
    assert first[:2] == (0, "in here\n") and first[3], first[2]  # built, then kept
    status, out, err, built = isolates_run(*options, "cat", str(outside))
    assert not built  # the same options and command: from the cache
    assert status == 1 and f"{outside}: Permission denied" in err
    status, out, err, built = isolates_run(*options, "cat", str(inside))
    assert (status, out, built) == (0, "in here\n", False), err  # the neighbour, still allowed


def _profile(readable: Path) -> str:
    """A policy file: every call allowed, reading files beneath ``readable`` only."""
    return Policy(Landlock().read(str(readable)), default=Action.ALLOW).to_toml()


def test_a_changed_profile_is_built_again(tree: Path) -> None:
    profile = tree / "policy.toml"
    inside, outside = tree / "inside", tree / "out.txt"
    profile.write_text(_profile(inside))
    options = ("--profile", str(profile), "--")
    assert isolates_run(*options, "cat", str(inside / "in.txt"))[:2] == (0, "in here\n")
    assert not isolates_run(*options, "cat", str(inside / "in.txt"))[3]  # cached
    profile.write_text(_profile(outside))
    status, _, err, built = isolates_run(*options, "cat", str(inside / "in.txt"))
    assert built and status == 1 and "Permission denied" in err  # the new profile decides
    assert isolates_run(*options, "cat", str(outside))[:2] == (0, "out there\n")


def test_a_replaced_directory_is_granted_anew_not_refused_stale(tree: Path) -> None:
    options = ("--read", str(tree / "inside"), "--", "cat", str(tree / "inside" / "in.txt"))
    assert isolates_run(*options)[:2] == (0, "in here\n")
    shutil.rmtree(tree / "inside")
    (tree / "inside").mkdir()  # the same path, another object
    (tree / "inside" / "in.txt").write_text("new\n")
    status, out, err, built = isolates_run(*options)
    assert (status, out, built) == (0, "new\n", True), err


def test_another_command_on_the_path_is_resolved_again(tree: Path) -> None:
    bin_dir = tree / "bin"
    bin_dir.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    options = ("--read", str(tree / "inside"), "--", "hello")
    assert isolates_run(*options, env=env)[0] == 127  # no such command yet
    (bin_dir / "hello").write_text("#!/bin/sh\necho hello from the path\n")
    (bin_dir / "hello").chmod(0o755)
    assert isolates_run(*options, env=env)[:2] == (0, "hello from the path\n")
    assert not isolates_run(*options, env=env)[3]
    (bin_dir / "hello").write_text("#!/bin/sh\necho changed\n")  # the same path, new bytes
    status, out, _, built = isolates_run(*options, env=env)
    assert (status, out, built) == (0, "changed\n", True)


def _entry_of(readable: Path, command: list[str]) -> tuple[str, dict[str, Any]]:
    before = _entries()
    assert isolates_run("--read", str(readable), "--", *command)[0] == 0
    (name,) = _entries() - before
    path = os.path.join(run_cache._directory(), name)
    data = Path(path).read_bytes()
    payload = data[len(run_cache.MAGIC) :].partition(b"\n")[2]
    return path, marshal.loads(payload)


def _write(path: str, entry: dict[str, Any]) -> None:
    payload = marshal.dumps(entry)
    Path(path).write_bytes(run_cache.MAGIC + b"%08x\n" % zlib.crc32(payload) + payload)
    os.chmod(path, 0o600)


def test_an_entry_planted_by_another_user_or_unsafely_is_never_applied(tree: Path) -> None:
    """An entry whose program allows everything, under the strict command line's name:
    owned by another user, writable by others, a symlink or corrupt, it is not used."""
    command = ["cat", str(tree / "inside" / "in.txt")]
    path, entry = _entry_of(tree / "inside", command)
    _, permissive = _entry_of(tree, ["cat", str(tree / "out.txt")])  # reads the whole tree
    forged = {**entry, "ready": permissive["ready"]}
    strict = ("--read", str(tree / "inside"), "--", "cat", str(tree / "out.txt"))

    def planted(how: str) -> None:
        _write(path, forged)
        if how == "another user":
            os.chown(path, 65534, 65534)
        elif how == "writable by others":
            os.chmod(path, 0o666)
        elif how == "a symlink":
            os.rename(path, path + ".real")
            os.symlink(path + ".real", path)
        elif how == "corrupt":
            Path(path).write_bytes(Path(path).read_bytes()[:-7] + b"garbage")

    for how in ("another user", "writable by others", "a symlink", "corrupt"):
        planted(how)
        status, _, err, built = isolates_run(*strict)
        assert built and status == 1 and "Permission denied" in err, how
        for leftover in (path, path + ".real"):
            if os.path.lexists(leftover):
                os.unlink(leftover)
    # The same entry, this user's and private, is taken: the forgery was a real one, and
    # the cache is trusted as the code beside it is (whoever writes it can write that).
    _write(path, forged)
    status, out, _, built = isolates_run(*strict)
    assert (status, out, built) == (0, "out there\n", False)
    os.unlink(path)


def test_runs_that_keep_a_parent_or_turn_it_off_are_not_cached(tree: Path) -> None:
    command = ("--", "cat", str(tree / "inside" / "in.txt"))
    base = ("--read", str(tree / "inside"))
    env = {**os.environ, "ISOLATES_RUN_CACHE": "0"}
    before = _entries()
    for options, given in (
        ((*base, "--tmp"), None),
        ((*base, "--memory", "256M"), None),
        (base, env),
    ):
        assert isolates_run(*options, *command, env=given)[:2] == (0, "in here\n")
        assert isolates_run(*options, *command, env=given)[3]  # built again
    assert _entries() == before


DENIED = "import socket\ntry:\n    socket.socket()\nexcept OSError as e:\n    print(e.errno)\n"


@pytest.mark.parametrize("report", ["--report", None])
def test_a_cached_run_still_answers_and_reports_its_denials(tree: Path, report: str | None) -> None:
    """The cached start keeps run as the program's answering parent (run_report.py): its
    denials fail as the policy says and are said, with --report even on success."""
    script = tree / "inside" / "denied.py"
    script.write_text(DENIED + ("" if report else "raise SystemExit(5)\n"))
    reads = [a for p in {sys.base_prefix, sys.prefix, str(tree / "inside")} for a in ("--read", p)]
    options = [*([report] if report else []), "--pledge", "stdio rpath", *reads, "--"]
    command = [sys.executable, "-I", str(script)]
    for built in (True, False):
        status, out, err, was_built = isolates_run(*options, *command)
        assert (status, out, was_built) == (0 if report else 5, "1\n", built), err
        assert "1 calls denied by the policy:" in err
        assert "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0) -> EPERM" in err


def test_building_a_policy_reads_only_the_environment_the_key_holds(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache keys on POLICY_ENVIRONMENT, not the whole environment: building any plan
    must read no other variable (from ours, or from the program's built from it)."""
    read: set[str] = set()
    recording = False

    class Recording(dict[str, str]):
        def __getitem__(self, name: str) -> str:
            self._note(name)
            return super().__getitem__(name)

        def get(self, name: str, default: Any = None) -> Any:
            self._note(name)
            return super().get(name, default)

        def __contains__(self, name: object) -> bool:
            self._note(str(name))
            return super().__contains__(name)

        def _note(self, name: str) -> None:
            if recording:
                read.add(name)

    monkeypatch.setattr(os, "environ", Recording(os.environ))
    real_environment = run.environment
    monkeypatch.setattr(run, "environment", lambda *a: Recording(real_environment(*a)))
    profile = tree / "policy.toml"
    profile.write_text(_profile(tree))
    for options in (
        ["--pledge", "stdio rpath tmppath inet dns", "--read", str(tree)],
        ["--systemd", "@system-service", "--ssl-certs", "--dns", "--rw", str(tree)],
        ["--profile", str(profile), "--net-connect", "443", "--env", "FOO=1"],
        ["--allow-fs", f"{tree}:read,make_sym", "--exec", str(tree), "--clear-env"],
    ):
        args = cli_main._parser(["run"]).parse_args(["run", *options, "--", "cat", "x"])
        args.tmp_dir = None
        recording = True
        run.prepare(run.build(args))
        recording = False
    assert read - {"FOO"} <= set(run_cache.POLICY_ENVIRONMENT), read


def test_the_cached_start_imports_no_policy_machinery(tree: Path) -> None:
    options = ("--read", str(tree / "inside"), "--", "true")
    assert isolates_run(*options)[3]
    done = subprocess.run([*CLI, *options], capture_output=True, text=True, timeout=60)
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert done.returncode == 0
    heavy = {"argparse", "dataclasses", "typing", "enum", "isolates.sandbox._policy"}
    assert imported & heavy == set()
    assert "isolates.sandbox._confine" in imported


def test_dry_run_is_not_served_from_the_cache(tree: Path) -> None:
    options = ("--read", str(tree / "inside"), "--", "true")
    isolates_run(*options)
    status, out, _, built = isolates_run("--dry-run", *options)
    assert status == 0 and built and "landlock" in out

"""``isolates explain``: a policy in a table, and a call decided with the rule that
decides it; the verdicts agree with what the kernel does to the same calls."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

from isolates.sandbox import Policy
from tests.forked import in_child

CLI = [sys.executable, "-m", "isolates.orchestrator._cli"]


def explain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "explain", *args], capture_output=True, text=True, timeout=60)


def _profile(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("x")
    path = tmp_path / "p.toml"
    landlock = f'[[ruleset]]\nkind = "landlock"\nread = ["{data}"]\nconnect_tcp = [443]\n'
    path.write_text(f'version = 1\n[profile]\npledge = "stdio rpath inet"\n\n{landlock}')
    return path


def test_the_table_groups_syscalls_and_lists_every_grant(tmp_path: Path) -> None:
    done = explain(str(_profile(tmp_path)))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("default: fails with EPERM")
    assert "  @network-io:" in text and "    connect: always" in text
    assert "openat: arg2 & " in text and "== O_RDONLY" in text  # conditions by name
    assert f"  {tmp_path / 'data'}: " in text and "READ_FILE" in text
    assert "  TCP port 443: CONNECT_TCP" in text


def test_check_names_the_deciding_rule_and_agrees_with_the_kernel(tmp_path: Path) -> None:
    profile = _profile(tmp_path)
    inside = tmp_path / "data" / "in.txt"
    calls = [f'openat(AT_FDCWD, "{inside}", O_RDONLY)', 'openat(AT_FDCWD, "/etc/shadow", O_RDONLY)',
             'connect(3, {AF_INET, 127.0.0.1:443}, 16)', 'connect(3, {AF_INET, 127.0.0.1:22}, 16)',
             "setuid(0)"]  # fmt: skip
    verdicts = []
    for call in calls:
        done = explain(str(profile), "--check", call)
        verdicts.append(done.returncode)
        assert done.stdout.startswith(call), done.stdout + done.stderr
    assert verdicts == [0, 1, 0, 1, 1]
    said = explain(str(profile), "--check", calls[1]).stdout
    assert "seccomp: allowed, by openat" in said and "needs READ_FILE; no grant gives it" in said
    assert (
        "fails with EPERM, by the default" in explain(str(profile), "--check", "setuid(0)").stdout
    )
    # the kernel agrees: the same policy, loaded in a child
    policy = Policy.load(profile)

    def child() -> list[object]:
        import os

        policy.apply()
        out: list[object] = []
        for path in (inside, "/etc/shadow"):
            try:
                with open(path) as f:
                    out.append(f.read())
            except OSError as exc:
                out.append(exc.errno)
        try:
            os.setuid(os.getuid())
        except OSError as exc:
            out.append(exc.errno)
        return out

    assert in_child(child).unwrap() == ["x", errno.EACCES, errno.EPERM]


def test_run_options_explain_too_and_mistakes_are_usage_errors() -> None:
    done = explain("--pledge", "stdio", "--check", "socket(AF_INET, SOCK_STREAM, 0)")
    assert done.returncode == 1 and "=> denied" in done.stdout
    bad = explain("--pledge", "stdio", "--check", "socket(AF_INET, SOCK_STREEM, 0)")
    assert bad.returncode == 2 and "'SOCK_STREEM' is no number or constant" in bad.stderr
    nothing = explain("--check", "frobnicate(1)")
    assert nothing.returncode == 2 and "unknown syscall 'frobnicate'" in nothing.stderr

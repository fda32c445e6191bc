"""From trace to a tight, working policy in one step, on real programs: ``isolates trace
--emit FILE -- CMD``, then ``isolates run --profile FILE -- CMD`` works on the first try,
and what the program did not do is refused (/etc/shadow, writing elsewhere, another
port). Traffic stays on 127.0.0.1; each program runs in a few seconds."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "isolates.orchestrator._cli"]


def _cli(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def traced_profile(tmp_path: Path, *argv: str, cwd: Path | None = None) -> Path:
    profile = tmp_path / "profile.toml"
    done = _cli("trace", "-o", str(tmp_path / "report.txt"), "--emit", str(profile), "--",
                *argv, cwd=cwd)  # fmt: skip
    assert done.returncode == 0 and profile.exists(), done.stderr
    return profile


def under(profile: Path, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return _cli("run", "--profile", str(profile), "--", *argv, cwd=cwd)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git = ["git", "-C", str(path), "-c", "user.email=a@b", "-c", "user.name=n"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    (path / "a.txt").write_text("a\n")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    return path


@pytest.mark.parametrize("command", [["status", "--short"], ["log", "--oneline"]])
def test_git(tmp_path: Path, repo: Path, command: list[str]) -> None:
    profile = traced_profile(tmp_path, "git", *command, cwd=repo)
    done = under(profile, "git", *command, cwd=repo)
    assert done.returncode == 0, done.stderr
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["git", "-C", str(other), "init", "-q"], check=True)
    refused = under(profile, "git", *command, cwd=other)  # another repository: not granted
    assert refused.returncode != 0


def _serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def test_curl_to_a_local_server_and_no_other_port(tmp_path: Path) -> None:
    (tmp_path / "index.txt").write_text("hello\n")
    first, port = _serve(tmp_path)
    second, other = _serve(tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/index.txt"
        profile = traced_profile(tmp_path, "curl", "-s", url)
        done = under(profile, "curl", "-s", url)
        assert (done.returncode, done.stdout) == (0, "hello\n"), done.stderr
        refused = under(profile, "curl", "-s", f"http://127.0.0.1:{other}/index.txt")
        assert refused.returncode == 7  # couldn't connect: Landlock refused the port
    finally:
        first.shutdown()
        second.shutdown()


def test_sqlite3_creates_a_table_in_its_directory_only(tmp_path: Path) -> None:
    data = tmp_path / "db"
    data.mkdir()
    sql = "create table t(x); insert into t values (1); select count(*) from t;"
    profile = traced_profile(tmp_path, "sqlite3", str(data / "a.sqlite"), sql)
    (data / "a.sqlite").unlink()
    done = under(profile, "sqlite3", str(data / "a.sqlite"), sql)
    assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr
    assert sorted(p.name for p in data.iterdir()) == ["a.sqlite"]
    refused = under(profile, "sqlite3", str(tmp_path / "elsewhere.sqlite"), sql)
    assert refused.returncode != 0 and not (tmp_path / "elsewhere.sqlite").exists()


def test_tar_extracts_an_archive_holding_a_symlink(tmp_path: Path) -> None:
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    (source / "file").write_text("x")
    (source / "link").symlink_to("file")
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(source), "."], check=True)
    untar = ["tar", "--no-same-owner", "-xf", str(archive), "-C", str(out)]
    profile = traced_profile(tmp_path, *untar)
    for entry in out.iterdir():
        entry.unlink()
    done = under(profile, *untar)
    assert done.returncode == 0, done.stderr
    assert (out / "link").is_symlink() and (out / "file").read_text() == "x"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = under(profile, "tar", "--no-same-owner", "-xf", str(archive), "-C", str(elsewhere))
    assert refused.returncode != 0 and not (elsewhere / "file").exists()


def test_grep_and_find_read_their_tree_and_nothing_else(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f.txt").write_text("needle\n")
    grep = traced_profile(tmp_path, "grep", "-r", "needle", str(tree))
    done = under(grep, "grep", "-r", "needle", str(tree))
    assert done.returncode == 0 and "needle" in done.stdout, done.stderr
    assert under(grep, "grep", "-r", "root", "/etc/shadow").returncode == 2
    find = traced_profile(tmp_path, "find", str(tree))
    listed = under(find, "find", str(tree))
    assert listed.returncode == 0 and str(tree / "sub" / "f.txt") in listed.stdout
    assert "Permission denied" in under(find, "find", "/root").stderr


IMPORTS = "import json, ssl, urllib.request; print(json.dumps({'tls': bool(ssl.OPENSSL_VERSION)}))"


def test_a_python_script_importing_json_ssl_and_urllib(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(IMPORTS + "\nimport sys\nif sys.argv[1:]:\n    open(sys.argv[1])\n")
    profile = traced_profile(tmp_path, sys.executable, str(script))
    done = under(profile, sys.executable, str(script))
    assert (done.returncode, done.stdout) == (0, '{"tls": true}\n'), done.stderr
    refused = under(profile, sys.executable, str(script), "/etc/shadow")
    assert refused.returncode == 1 and "PermissionError" in refused.stderr  # and it says so


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, within: float = 20.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def www(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "www"
    directory.mkdir()
    (directory / "index.txt").write_text("served\n")
    yield directory


def test_python_http_server_serves_its_directory(tmp_path: Path, www: Path) -> None:
    port = _free_port()
    serve = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(www)]  # fmt: skip
    profile = tmp_path / "profile.toml"
    emit = [*CLI, "trace", "-o", os.devnull, "--emit", str(profile), "--", *serve]
    tracer = subprocess.Popen(emit, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _get(port, "/index.txt") == (200, b"served\n")
    finally:
        tracer.send_signal(signal.SIGTERM)  # passed on: the server ends, the file is written
        tracer.wait(timeout=30)
    server = subprocess.Popen([*CLI, "run", "--profile", str(profile), "--", *serve],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert _get(port, "/index.txt") == (200, b"served\n")
        assert _get(port, "/../../../etc/passwd")[0] == 404
    finally:
        server.kill()
        server.wait(timeout=30)
    # The same profile, told to serve a directory the trace never saw: it cannot read it.
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.txt").write_text("not granted\n")
    elsewhere = [*serve[:-1], str(other)]
    server = subprocess.Popen([*CLI, "run", "--profile", str(profile), "--", *elsewhere],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert _get(port, "/index.txt")[0] == 404  # PermissionError: http.server says 404
    finally:
        server.kill()
        server.wait(timeout=30)
    another_port = [*serve[:3], str(_free_port()), *serve[4:]]
    refused = _cli("run", "--profile", str(profile), "--", *another_port, timeout=30)
    assert refused.returncode == 1 and "PermissionError" in refused.stderr  # bind refused


MAKES_A_TEMPORARY_TREE = """
import pathlib, shutil, sys, tempfile
work = pathlib.Path(tempfile.mkdtemp(dir=sys.argv[1]))  # a new random name every run
for i in range(12):
    (work / f"f{i}.py").write_text("x")
(work / "sub").mkdir()
print(len(list(work.glob("*.py"))), len(list(work.iterdir())))
shutil.rmtree(work)
"""


def test_a_temporary_tree_made_and_removed_is_granted_where_it_was_made(tmp_path: Path) -> None:
    """What the trace saw made and removed (mkdtemp's directory, a new random name at
    each run) is granted beneath the nearest directory that still exists, not at the
    old run's gone path: the profile works the next time, and nothing beside it opens."""
    scratch, secret = tmp_path / "scratch", tmp_path / "secret.txt"
    scratch.mkdir()
    secret.write_text("no\n")
    script = tmp_path / "temporary.py"
    script.write_text(MAKES_A_TEMPORARY_TREE)
    argv = [sys.executable, "-I", str(script), str(scratch)]
    profile = traced_profile(tmp_path, *argv)
    text = profile.read_text()
    assert f'path = "{scratch}"' in text and f"{scratch}/" not in text  # not the gone names
    done = under(profile, *argv)
    assert (done.returncode, done.stdout) == (0, "12 13\n"), done.stderr
    assert list(scratch.iterdir()) == []
    reading = under(profile, sys.executable, "-I", "-c", f"open({str(secret)!r}).read()")
    assert reading.returncode == 1 and "PermissionError" in reading.stderr
    elsewhere = under(profile, *argv[:-1], str(tmp_path))  # the same, one directory up
    assert elsewhere.returncode == 1 and "PermissionError" in elsewhere.stderr

"""Every example runs, and says what it should; `isolates demo` too."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"


def _run(
    *argv: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def _check_demo(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "PUT /hello.txt -> 201" in text
    assert "files written: ['data.bin', 'hello.txt']" in text
    assert "read /etc/passwd: denied" in text or "the server denied" in text
    assert "IsolateViolation" in text and "socket(" in text
    for who in ("supervisor:", "server:", "writer:"):
        line = next(line for line in text.splitlines() if line.strip().startswith(who))
        assert "seccomp: enforced" in line, line


def test_isolates_demo_runs_end_to_end_and_leaves_no_directory(tmp_path: Path) -> None:
    command = shutil.which("isolates", path=os.path.dirname(sys.executable))
    argv = (
        [command, "demo"]
        if command
        else [sys.executable, "-m", "isolates.orchestrator._cli", "demo"]
    )
    _check_demo(_run(*argv, env={**os.environ, "TMPDIR": str(tmp_path)}))
    assert list(tmp_path.iterdir()) == []  # its directory is gone with it


def test_the_server_writer_example(tmp_path: Path) -> None:
    _check_demo(
        _run(sys.executable, str(EXAMPLES / "server_writer.py"), "--directory", str(tmp_path))
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "hello.txt"]


def test_the_untrusted_parser_example() -> None:
    out = _run(sys.executable, str(EXAMPLES / "parse_untrusted.py"))
    assert out.returncode == 0, out.stderr
    assert "parsed: {'server': {'host': 'example.org', 'port': '8080'}}" in out.stdout
    assert "bad input -> WorkerFailed" in out.stdout and "MissingSectionHeaderError" in out.stdout
    assert "exploited parser -> IsolateViolation: openat was refused" in out.stdout


@pytest.fixture
def csv_server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "data.csv").write_text("apples,3\npears,7\nnot a row\nplums,1.5\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/data.csv"
    server.shutdown()


def test_the_render_pipeline_example(csv_server: str, tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    out = _run(sys.executable, str(EXAMPLES / "render_pipeline.py"), csv_server, str(outdir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "parsed 3 rows, rendered 3 lines into ['chart.txt']" in out.stdout
    chart = (outdir / "chart.txt").read_text().splitlines()
    assert [line.split()[0] for line in chart] == ["apples", "pears", "plums"]
    assert chart[1].count("#") == 40  # the largest value gets the full bar


def test_the_render_pipeline_without_arguments_says_how_to_run_it() -> None:
    out = _run(sys.executable, str(EXAMPLES / "render_pipeline.py"))
    assert out.returncode == 1 and out.stderr.startswith("usage: ") and "URL OUTDIR" in out.stderr

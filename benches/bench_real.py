"""Real programs under isolates, side by side with the peers, every row a ratio measured
in the same run (median of alternating rounds, with the spread of the rounds):

- start-up: ``/bin/true`` under ``isolates run`` (its policy cached, as from the second
  run on; by default and with ``--no-report``, which execs in place), bubblewrap,
  firejail, and sandlock driven from Python; against bare, against bubblewrap (target:
  isolates run <= 3x bubblewrap) and, for sandlock, against ``subprocess.run`` from the
  same Python;
- ripgrep (``rg -c import``) over CPython's standard library: bare, under ``isolates run
  --pledge "stdio rpath" --read TREE`` and under ``bwrap --ro-bind / /`` (target: <= 1.05x);
- a real web framework: aiohttp (chosen: an asyncio framework whose server and client
  install from one wheel, the load comes from wrk), a small JSON endpoint on 127.0.0.1,
  bare vs the server under ``isolates run`` allowed to bind that port and read its code
  (and /etc/mime.types, which aiohttp reads at import) and nothing else (checked first:
  it cannot read /etc/passwd) (target: >= 0.97x);
- the demo's split: its HTTP server with a separate writer worker over a channel vs the
  same server writing in-process (bench_supervisor.py's, target: >= 0.8x);
- a real library's own test suite: CPython's ``test_json`` (regrtest) bare vs under
  ``isolates run`` reading only Python and its working directory.

Programs come from the distribution's packages (``apt-get install bubblewrap ripgrep wrk
firejail``) and the bench extra (aiohttp, sandlock); a row whose tool is missing, or
whose confined run does not do what the bare one does, says so instead of a timing.

    pip install '.[bench]' && python benches/bench_real.py [--quick] [--rows a,b]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import table, verdict

PY = sys.executable
ISOLATES = [PY, "-m", "isolates.orchestrator._cli"]
BWRAP = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--unshare-all"]
PY_READS = sorted({sys.prefix, sys.base_prefix, *(p for p in sys.path if p.startswith("/"))})

Rows = list[list[str]]


def _isolates() -> list[str]:
    """The installed command, as a user runs it (its own script: bin/isolates)."""
    found = shutil.which("isolates", path=os.path.dirname(PY) + os.pathsep + os.environ["PATH"])
    return [found] if found else ISOLATES


def _wall(argv: Sequence[str], times: int, **kw: object) -> float:
    """Mean wall time of ``times`` runs of ``argv`` (output discarded)."""
    start = time.perf_counter()
    for _ in range(times):
        subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, **kw
        )  # type: ignore[call-overload]
    return (time.perf_counter() - start) / times


def _rounds(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each measure once per round, the order reversed every other round."""
    out: dict[str, list[float]] = {name: [] for name in measures}
    names = list(measures)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            out[name].append(measures[name]())
    return out


def _ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Median of the per-round ratios a/b, and their spread (min, max)."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def _fmt(r: tuple[float, float, float]) -> str:
    return f"{r[0]:.2f}x ({r[1]:.2f}-{r[2]:.2f})"


def _ok(argv: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)  # type: ignore[call-overload]


# -- start-up ------------------------------------------------------------------------------


def startup(rounds: int, times: int) -> Rows:
    run = [*_isolates(), "run", "--", "/bin/true"]
    in_place = [*_isolates(), "run", "--no-report", "--", "/bin/true"]
    for argv in (run, in_place):
        _ok(argv)  # the first run builds and keeps the policy; every later one starts from it
    measures: dict[str, Callable[[], float]] = {
        "bare": lambda: _wall(["/bin/true"], times),
        "isolates run": lambda: _wall(run, times),
        "isolates run --no-report (exec in place)": lambda: _wall(in_place, times),
        "python -c pass (the interpreter's own start)": lambda: _wall([PY, "-c", "pass"], times),
    }
    missing = []
    if shutil.which("bwrap") and _ok([*BWRAP, "/bin/true"]).returncode == 0:
        measures["bubblewrap"] = lambda: _wall([*BWRAP, "/bin/true"], times)
    else:
        missing.append("bubblewrap (apt-get install bubblewrap)")
    firejail = ["firejail", "--quiet", "--noprofile", "/bin/true"]
    if shutil.which("firejail") and _ok(firejail).returncode == 0:
        measures["firejail"] = lambda: _wall(firejail, times)
    else:
        missing.append("firejail")
    sandlock = _sandlock(times)
    if sandlock is not None:
        measures["sandlock (from Python)"] = sandlock
        measures["subprocess.run (same Python)"] = lambda: _wall(["/bin/true"], times)
    else:
        missing.append("sandlock (pip install sandlock)")
    got = _rounds(measures, rounds)
    rows = []
    for name, samples in got.items():
        row = [f"/bin/true: {name}", f"{statistics.median(samples) * 1e3:.1f} ms",
               _fmt(_ratio(samples, got["bare"]))]  # fmt: skip
        if name.startswith("isolates run") and "bubblewrap" in got:
            r = _ratio(samples, got["bubblewrap"])
            row += [f"{_fmt(r)} of bubblewrap", "<= 3x", verdict(r[0], 3.0)]
        elif name.startswith("sandlock"):
            r = _ratio(samples, got["subprocess.run (same Python)"])
            row += [f"{_fmt(r)} of subprocess.run", "", ""]
        else:
            row += ["", "", ""]
        rows.append(row)
    rows += [[f"/bin/true: {m}", "not run: not installed", "", "", "", ""] for m in missing]
    return rows


def _sandlock(times: int) -> Callable[[], float] | None:
    try:
        import sandlock
    except ImportError:
        return None
    box = sandlock.Sandbox(fs_readable=["/"])
    try:
        if box.run(["/bin/true"], timeout=30).exit_code != 0:  # type: ignore[attr-defined]
            return None
    except Exception:
        return None

    def measure() -> float:
        start = time.perf_counter()
        for _ in range(times):
            sandlock.Sandbox(fs_readable=["/"]).run(["/bin/true"], timeout=30)
        return (time.perf_counter() - start) / times

    return measure


# -- ripgrep --------------------------------------------------------------------------------


def ripgrep(rounds: int) -> Rows:
    if not shutil.which("rg"):
        return [["ripgrep", "not run: apt-get install ripgrep", "", "", "", ""]]
    tree = sysconfig.get_paths()["stdlib"]
    bare = ["rg", "-c", "import", tree]
    confined = [*_isolates(), "run", "--pledge", "stdio rpath", "--read", tree, "--", *bare]
    bwrap = [*BWRAP, *bare]
    expected = sorted(_ok(bare).stdout.splitlines())  # rg walks in parallel: any order
    commands = {
        "bare": bare,
        "isolates run (read the tree only)": confined,
        # Where the time goes: the filter alone (guards only, a minimal domain), and the
        # Landlock domain alone.
        "isolates run, no options (guards only)": [*_isolates(), "run", "--", *bare],
        "isolates run --read TREE (Landlock only)": [*_isolates(), "run", "--read", tree, "--",
                                                     *bare],
    }  # fmt: skip
    if shutil.which("bwrap"):
        commands["bubblewrap (read-only /)"] = bwrap
    rows: Rows = []
    for name, argv in list(commands.items())[1:]:
        if sorted(_ok(argv).stdout.splitlines()) != expected:
            rows.append([f"rg: {name}", "not timed: its output differs from bare", "", "", "", ""])
            del commands[name]
    denied = _ok([*confined[:-4], "--", "rg", "-c", "root", "/etc/shadow"])
    assert denied.returncode != 0, "rg read /etc/shadow under a policy reading only the tree"
    got = _rounds({n: (lambda a=a: _wall(a, 2)) for n, a in commands.items()}, rounds)
    for name, samples in got.items():
        r = _ratio(samples, got["bare"])
        target = name == "isolates run (read the tree only)"
        rows.append([f"rg -c import stdlib: {name}", f"{statistics.median(samples) * 1e3:.1f} ms",
                     _fmt(r), "", "<= 1.05x" if target else "",
                     verdict(r[0], 1.05) if target else ""])  # fmt: skip
    return rows


# -- a web framework --------------------------------------------------------------------------

SERVER = textwrap.dedent("""
    import sys
    from aiohttp import web

    async def hello(request):
        return web.json_response({"hello": "world", "n": 42})

    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
""")
PROBE = "open('/etc/passwd').read()"


def web_framework(rounds: int, seconds: int) -> Rows:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return [["aiohttp", "not run: pip install aiohttp (bench extra)", "", "", "", ""]]
    if not shutil.which("wrk"):
        return [["aiohttp", "not run: apt-get install wrk", "", "", "", ""]]
    folder = tempfile.mkdtemp(prefix="bench-real-")
    script = os.path.join(folder, "server.py")
    with open(script, "w") as f:
        f.write(SERVER)

    def policy(port: int) -> list[str]:
        # Its code, and the MIME table aiohttp's file responses load at import (what
        # ``isolates trace --emit`` finds for it).
        reads = [arg for path in [*PY_READS, folder, "/etc/mime.types"] if os.path.exists(path)
                 for arg in ("--read", path)]  # fmt: skip
        return [*_isolates(), "run", "--net-bind", str(port), *reads, "--"]

    probe = _ok([*policy(_free_port()), PY, "-c", PROBE])
    if "PermissionError" not in probe.stderr:
        return [["aiohttp", "not timed: its policy let it read /etc/passwd", "", "", "", ""]]

    def serve(confined: bool) -> float:
        port = _free_port()
        argv = [*(policy(port) if confined else []), PY, script, str(port)]
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_port(port, server)
            load = ["wrk", "-t1", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
            out = _ok(load).stdout
            return float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
        finally:
            server.terminate()
            server.wait(10)

    got = _rounds({"bare": lambda: serve(False), "isolates run": lambda: serve(True)}, rounds)
    r = _ratio(got["isolates run"], got["bare"])
    return [
        ["aiohttp JSON, wrk 32 conns: bare", f"{statistics.median(got['bare']):.0f} req/s",
         "1.00x", "", "", ""],
        ["aiohttp JSON: isolates run (bind the port, read its code)",
         f"{statistics.median(got['isolates run']):.0f} req/s", _fmt(r), "", ">= 0.97x",
         verdict(r[0], 0.97, lower_is_better=False)],
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read()!r}")  # type: ignore[union-attr]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("the server never listened")


# -- the demo's split -----------------------------------------------------------------------


def split(rounds: int) -> Rows:
    import bench_supervisor as sup

    got = _rounds({"separated": sup.separated_server, "in-process": sup.in_process_server},
                  rounds)  # fmt: skip
    r = _ratio(got["separated"], got["in-process"])
    return [
        ["demo: server + separated writer worker",
         f"{statistics.median(got['separated']):.0f} req/s", _fmt(r), "", ">= 0.8x",
         verdict(r[0], 0.8, lower_is_better=False)],
        ["demo: the same server writing in-process",
         f"{statistics.median(got['in-process']):.0f} req/s", "1.00x", "", "", ""],
    ]  # fmt: skip


# -- a library's own test suite -------------------------------------------------------------


def library(rounds: int) -> Rows:
    work = tempfile.mkdtemp(prefix="bench-real-json-")
    suite = [PY, "-m", "test", "-q", "test_json"]
    reads = [arg for path in PY_READS if os.path.exists(path) for arg in ("--read", path)]
    confined = [*_isolates(), "run", *reads, "--rw", work, "--", *suite]
    if _ok(suite, cwd=work).returncode != 0:
        return [["test_json", "not run: CPython's test package is missing", "", "", "", ""]]
    done = _ok(confined, cwd=work)
    if done.returncode != 0:
        return [
            ["test_json", f"not timed: failed confined: {done.stderr[-200:]!r}", "", "", "", ""]
        ]
    got = _rounds({"bare": lambda: _wall(suite, 1, cwd=work),
                   "isolates run": lambda: _wall(confined, 1, cwd=work)}, rounds)  # fmt: skip
    r = _ratio(got["isolates run"], got["bare"])
    return [
        ["CPython test_json: bare", f"{statistics.median(got['bare']):.2f} s", "1.00x", "", "", ""],
        ["CPython test_json: isolates run (read Python, write its dir)",
         f"{statistics.median(got['isolates run']):.2f} s", _fmt(r), "", "", ""],
    ]  # fmt: skip


ROWS = {"startup": None, "ripgrep": None, "web": None, "split": None, "library": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"some of {','.join(ROWS)}")
    args = parser.parse_args()
    chosen = args.rows.split(",")
    rounds = 3 if args.quick else 7
    rows: Rows = []
    if "startup" in chosen:
        rows += startup(rounds, 10 if args.quick else 30)
    if "ripgrep" in chosen:
        rows += ripgrep(rounds)
    if "web" in chosen:
        rows += web_framework(3 if args.quick else 5, 2 if args.quick else 4)
    if "split" in chosen:
        rows += split(3 if args.quick else 5)
    if "library" in chosen:
        rows += library(3 if args.quick else 5)
    machine = (f"Linux {platform.release()}, {os.cpu_count()} cores, Python "
               f"{platform.python_version()}")  # fmt: skip
    table(f"Real programs ({machine}); ratio: median of alternating rounds (spread)",
          ["what", "median", "vs bare", "vs peer", "target", ""], rows)  # fmt: skip


if __name__ == "__main__":
    main()

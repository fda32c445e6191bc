"""What reporting denials costs ``isolates run`` (on by default; ``--no-report`` execs in
place instead), every row a ratio against ``--no-report`` in the same run (median of
alternating rounds, with the spread of the rounds):

- start-up: ``isolates run -- /bin/true``, its policy cached;
- allowed calls: a Python loop of ``getppid()`` under ``--pledge "stdio rpath"``, timed
  inside the program (target: 1.00x: an allowed call never leaves the kernel);
- denied calls: a loop of ``socket()`` the same policy fails with EPERM, timed inside
  the program (each denial is a round trip to run, which answers and records it).

    pip install '.[bench]' && python benches/bench_report.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import table, verdict
from bench_real import PY_READS, _fmt, _isolates, _ratio, _rounds, _wall

LOOP = textwrap.dedent("""
    import os, socket, sys, time
    calls = int(sys.argv[2])
    start = time.perf_counter()
    if sys.argv[1] == "allowed":
        for _ in range(calls):
            os.getppid()
    else:
        for _ in range(calls):
            try:
                socket.socket()
            except PermissionError:
                pass
    print((time.perf_counter() - start) / calls)
""")
MODES = {"--no-report": ["--no-report"], "default": [], "--report": ["--report"]}


def startup(rounds: int, times: int) -> list[list[str]]:
    runs = {mode: [*_isolates(), "run", *flags, "--", "/bin/true"] for mode, flags in MODES.items()}
    for argv in runs.values():  # fill the cache
        subprocess.run(argv, check=True)
    got = _rounds({m: (lambda a=a: _wall(a, times)) for m, a in runs.items()}, rounds)
    return [
        [
            f"/bin/true, {mode}",
            f"{statistics_ms(got[mode])}",
            _fmt(_ratio(got[mode], got["--no-report"])),
            "",
            "",
        ]
        for mode in MODES
    ]


def statistics_ms(samples: list[float]) -> str:
    return f"{sorted(samples)[len(samples) // 2] * 1000:.1f} ms"


def loops(rounds: int, calls: int) -> list[list[str]]:
    with tempfile.TemporaryDirectory() as work:
        script = os.path.join(work, "loop.py")
        with open(script, "w") as f:
            f.write(LOOP)
        paths = [p for p in (*PY_READS, script) if os.path.exists(p)]
        reads = [arg for path in paths for arg in ("--read", path)]

        def per_call(kind: str, mode: str) -> float:
            argv = [*_isolates(), "run", *MODES[mode], "--pledge", "stdio rpath", *reads,
                    "--", sys.executable, "-I", script, kind, str(calls)]  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, check=True)
            return float(done.stdout)

        rows = []
        for kind, target in (("allowed", 1.05), ("denied", None)):
            got = _rounds({m: (lambda m=m, k=kind: per_call(k, m)) for m in MODES}, rounds)
            for mode in ("default", "--report"):
                ratio = _ratio(got[mode], got["--no-report"])
                us = f"{sorted(got[mode])[rounds // 2] * 1e6:.2f} us/call"
                base = f"{sorted(got['--no-report'])[rounds // 2] * 1e6:.2f} us/call"
                goal = f"<= {target}x" if target else ""
                met = verdict(ratio[0], target) if target else ""
                rows.append(
                    [f"{kind} {calls} calls, {mode} (vs {base})", us, _fmt(ratio), goal, met]
                )
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    rows = startup(rounds, 10 if args.quick else 30)
    rows += loops(rounds, 20_000 if args.quick else 200_000)
    machine = f"Linux {platform.release()}, {os.cpu_count()} cores"
    table(
        f"Reporting denials ({machine}); ratio to --no-report: median of alternating rounds "
        "(spread)",
        ["row", "median", "ratio", "target", ""],
        rows,
    )


if __name__ == "__main__":
    main()

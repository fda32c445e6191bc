"""Landlock's run-time cost: a grep-like walk and an open-heavy loop, with and without it.

    python benches/bench_landlock.py [--files N] [--samples S]

Two forked children run the same workload, one confined and one not (Landlock is
irreversible, so never this process); the parent asks them in turn for one run at a
time, ``--samples`` times each. Runs are short (tens of milliseconds), interleaved and
pinned to one CPU, so a burst of load from elsewhere spoils a few samples of both rather
than the whole of one; the ratio is the median of the ratios of neighbouring runs
(confined / unconfined), all measured in this run.

The confined child enforces ``Landlock().read(tree)`` (every filesystem right handled,
read granted on the tree). Rows:

- grep-like walk: os.walk the tree, read every file, search each with a regex;
- open-heavy loop: ``open(path, "rb").read()`` over the files, again and again;
- raw open+close: ``os.open``/``os.close`` alone, the worst case (no target). On every
  open Landlock walks from the file up to the filesystem root, since it must learn
  whether TRUNCATE is granted anywhere above it: its cost grows with the path's depth;
- the grep-like walk and the open-heavy loop under a seccomp Policy, against that Policy
  alone (seccomp + Landlock vs seccomp).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from statistics import median

sys.path.insert(0, os.path.dirname(__file__))

from _util import table, verdict

from isolates.sandbox import Landlock, Policy, SystemIO
from isolates.sandbox._landlock import apply_plan
from isolates.sandbox._landlock_sys import abi

PATTERN = re.compile(rb"needle-\d+")
OPENS = 10_000  # per run of the open loops


def make_tree(root: str, files: int, per_dir: int = 50, depth: int = 3) -> list[str]:
    """``files`` files of 4 KiB, ``per_dir`` to a directory, ``depth`` + 1 levels down."""
    paths = []
    for i in range(files):
        parts = [f"d{(i // per_dir) % 10 ** (k + 1) // 10**k}" for k in range(depth)]
        folder = os.path.join(root, *parts, f"b{i // per_dir}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"f{i}.txt")
        with open(path, "wb") as f:
            f.write((b"lorem ipsum dolor sit amet " * 150)[:4000] + b" needle-%d\n" % i)
        paths.append(path)
    return paths


def grep(root: str) -> int:
    hits = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                hits += len(PATTERN.findall(f.read()))
    return hits


def open_loop(paths: list[str]) -> int:
    size, count = 0, len(paths)
    for i in range(OPENS):
        with open(paths[i % count], "rb") as f:
            size += len(f.read())
    return size


def raw_open_loop(paths: list[str]) -> int:
    count = len(paths)
    for i in range(OPENS):
        os.close(os.open(paths[i % count], os.O_RDONLY | os.O_CLOEXEC))
    return OPENS


class Runner:
    """A forked child, confined by ``confine``, that runs ``work`` once per request."""

    def __init__(self, confine: Callable[[], object] | None, work: Callable[[], int]) -> None:
        request, self._ask = os.pipe()
        self._answer, answer = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: confine, then serve runs until the pipe closes
            os.close(self._ask)
            os.close(self._answer)
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})  # both on one CPU
            try:
                if confine is not None:
                    confine()
                while os.read(request, 1):
                    start = time.perf_counter()
                    work()
                    os.write(answer, struct.pack("d", time.perf_counter() - start))
            finally:
                os._exit(0)
        os.close(request)
        os.close(answer)

    def run(self) -> float:
        os.write(self._ask, b".")
        data = os.read(self._answer, 8)
        if len(data) != 8:
            raise RuntimeError("the benchmark child died (could it confine itself?)")
        return float(struct.unpack("d", data)[0])

    def close(self) -> None:
        os.close(self._ask)
        os.close(self._answer)
        os.waitpid(self.pid, 0)


def compare(samples: int, base: Callable[[], object] | None, confine: Callable[[], object],
            work: Callable[[], int]) -> tuple[float, float, float]:  # fmt: skip
    """Median run times of ``work`` without and with ``confine``, sampled in turn, and the
    median of the ratios of neighbouring runs (slow drifts of the machine cancel out)."""
    plain, confined = Runner(base, work), Runner(confine, work)
    try:
        times = [(plain.run(), confined.run()) for _ in range(samples)]
    finally:  # the later child holds the earlier one's pipes: it must go first
        confined.close()
        plain.close()
    ratios = [with_ / without for without, with_ in times]
    return median(t[0] for t in times), median(t[1] for t in times), median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-landlock-")
    try:
        run(os.path.join(root, "tree"), args.files, args.samples)
    finally:
        shutil.rmtree(root)


def run(tree: str, files: int, samples: int) -> None:
    paths = make_tree(tree, files)
    assert grep(tree) == files  # also warms the page cache and the dentry cache
    landlock = Landlock().read(tree)
    plan = landlock.plan()
    # reads for the walk; writes: each child reports its times through a pipe
    io = SystemIO.nothing().allow_open_readonly().allow_metadata()
    seccomp = Policy(io.allow_read().allow_write())
    both = seccomp.extend(landlock)
    seccomp.compile(), both.compile()
    cases = [
        ("grep-like walk", None, lambda: apply_plan(plan), lambda: grep(tree), 1.05),
        ("open-heavy loop", None, lambda: apply_plan(plan), lambda: open_loop(paths), 1.15),
        ("raw open+close", None, lambda: apply_plan(plan), lambda: raw_open_loop(paths), None),
        ("grep-like, under seccomp", seccomp.apply, both.apply, lambda: grep(tree), 1.05),
        ("open-heavy, under seccomp", seccomp.apply, both.apply, lambda: open_loop(paths), 1.15),
    ]
    rows = []
    for name, base, confine, work, target in cases:
        plain, confined, ratio = compare(samples, base, confine, work)
        goal = f"<= {target:.2f}x" if target else "-"
        rows.append([name, f"{plain * 1e3:.2f} ms", f"{confined * 1e3:.2f} ms",
                     f"{ratio:.3f}x", goal, verdict(ratio, target) if target else ""])  # fmt: skip
    title = (
        f"Landlock cost: a walk of {files} files of 4 KiB, loops of {OPENS} opens; "
        f"{samples} interleaved runs each, medians (Landlock ABI {abi()})"
    )
    table(title, ["workload", "without", "with Landlock", "ratio", "target", ""], rows)


if __name__ == "__main__":
    main()

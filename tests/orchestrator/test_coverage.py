"""Coverage of code run inside isolates (issue 16, item 5: _core/coverage*.py).

Each test runs a small project's tests under a real ``coverage run`` (and pytest-cov
where installed) in a subprocess, then reads coverage.py's own report: lines run inside
an @isolate call under a killing policy, and inside a Supervisor worker, are counted;
lines never run are not; the denial the policy makes is unchanged by measuring.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MODULE = """
import os


def inside(n):
    total = 0
    for i in range(n):
        if i % 2:
            total += i
    return total


def worker(ctx, n):
    kept = []
    for i in range(n):
        kept.append(i * i)
    return kept


def denied():
    return os.uname().sysname


def never():
    return "not run"
"""

TESTS = """
import errno

from isolates.orchestrator import Supervisor, isolate
from isolates.orchestrator.testing import assert_denied
from isolates.sandbox import Action, Policy, RuleSet

import project


def test_in_an_isolate_under_a_killing_policy():
    assert isolate(Policy(default=Action.KILL_PROCESS))(project.inside)(5) == 4


def test_in_a_supervisor_worker():
    sup = Supervisor()
    sup.add_worker("squares", project.worker, args=(4,))
    sup.run(timeout=60)
    assert sup.workers["squares"].result == [0, 1, 4, 9]


def test_the_denial_is_unchanged_by_measuring():
    uname = RuleSet.nothing().deny("uname", action=Action.ERRNO(errno.EPERM))
    policy = Policy(uname, default=Action.ALLOW)
    assert_denied(project.denied, policy=policy, errno=errno.EPERM, syscall="uname")
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "project.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "test_project.py").write_text(textwrap.dedent(TESTS))
    return tmp_path


def _missing(tmp_path: Path, measure: list[str], *, combine: bool) -> dict[str, list[int]]:
    """Run the project's tests under ``measure``; the lines each file missed."""
    run = [sys.executable, "-m", *measure, "-q", "-p", "no:cacheprovider", "test_project.py"]
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    coverage = [sys.executable, "-m", "coverage"]
    if combine:
        subprocess.run([*coverage, "combine", "--append", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*coverage, "json", "-q", "-o", "cov.json"], cwd=tmp_path, check=True)
    files = json.loads((tmp_path / "cov.json").read_text())["files"]
    return {Path(name).name: info["missing_lines"] for name, info in files.items()}


def _line(text: str) -> int:
    """The line of the project module that holds ``text``."""
    lines = textwrap.dedent(MODULE).splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


@pytest.mark.parametrize("branch", [False, True])
def test_coverage_run_counts_lines_run_in_isolates_and_workers(
    tmp_path: Path, branch: bool
) -> None:
    measure = ["coverage", "run", f"--source={tmp_path}", *(["--branch"] if branch else [])]
    missing = _missing(_project(tmp_path), [*measure, "-m", "pytest"], combine=True)["project.py"]
    assert _line('return "not run"') in missing  # never run anywhere: still missing
    for ran in ("total += i", "kept.append(i * i)", "return kept", "os.uname().sysname"):
        assert _line(ran) not in missing, ran  # run only inside isolates


def test_pytest_cov_combines_the_isolates_lines_by_itself(tmp_path: Path) -> None:
    measure = ["pytest", f"--cov={tmp_path}", "--cov-report="]
    missing = _missing(_project(tmp_path), measure, combine=False)["project.py"]
    assert _line("total += i") not in missing and _line('return "not run"') in missing


def test_what_an_isolate_sends_is_held_to_the_roots_it_was_asked_for(tmp_path: Path) -> None:
    """A Coverage message naming files outside the measured directories (a hostile
    isolate's) adds nothing for them; the files beneath are added."""
    script = f"""
import coverage, os
from isolates.orchestrator._core import coverage as ours
from isolates.orchestrator._core.wire import Coverage
cov = coverage.Coverage(source=[{str(tmp_path)!r}], data_file={str(tmp_path / ".coverage")!r})
cov.start()
inside = os.path.join({str(tmp_path)!r}, "project.py")
ours.merge(Coverage(lines={{inside: [5, 6], "/etc/passwd": [1], "/usr/lib/x.py": [2]}}))
cov.stop()
data = coverage.CoverageData(basename={str(tmp_path / ".coverage")!r}, suffix=None)
names = []
for name in os.listdir({str(tmp_path)!r}):
    if name.startswith(".coverage."):
        part = coverage.CoverageData(os.path.join({str(tmp_path)!r}, name))
        part.read()
        names += [(f, sorted(part.lines(f))) for f in part.measured_files()]
print(names)
"""
    _project(tmp_path)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr([(str(tmp_path / "project.py"), [5, 6])])

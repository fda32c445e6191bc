"""The README's tour runs as written: every ```python block is a whole program, run in a
fresh ``python -I`` (nothing imported but what the block imports), and says what the
README says it does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.S | re.M)

#: For each block (found by what it calls): what its output must contain.
EXPECTED = {
    "policy.run(first_line": ["/etc/passwd: Permission denied", "seccomp: enforced"],
    'profiles.pledge("stdio rpath inet dns").apply()': ["SystemCallFilter=@system-service"],
    "@isolate(": ["{'user': 'alice'}", "{'user': 'bob'}", "calling openat("],
    "sup.run()": ["'writer': ['part0.txt', 'part1.txt', 'part2.txt']", "'producer': 3"],
}


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "tour.py"
    script.write_text(code)
    return subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)  # fmt: skip


def _marker(code: str) -> str:
    found = [marker for marker in EXPECTED if marker in code]
    assert len(found) == 1, f"a README block this test does not know: {code[:200]!r}"
    return found[0]


def test_the_tour_has_every_block_this_test_checks() -> None:
    assert sorted(map(_marker, BLOCKS)) == sorted(EXPECTED)


def test_the_profiles_block_builds_a_profile_after_pledging() -> None:
    # The README's own sequence: pledge() applied, then systemd() built under it.
    (block,) = [b for b in BLOCKS if "profiles." in b]
    assert block.index("profiles.pledge(") < block.index(".apply()") < block.index("systemd(")


@pytest.mark.parametrize("code", BLOCKS, ids=[_marker(b)[:24] for b in BLOCKS])
def test_a_readme_block_runs_as_written(code: str, tmp_path: Path) -> None:
    done = _run(code, tmp_path)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    for text in EXPECTED[_marker(code)]:
        assert text in done.stdout + done.stderr, (text, done.stdout, done.stderr)

"""What every test shares: a scratch directory for what tests leave in the temporary
directory, removed when the session ends.

``tempfile`` here, in forked children and in every subprocess (``TMPDIR``) makes its
files beneath it; children confined by a test's policy cannot remove what they made,
and this process, never confined, removes it all at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

pytest_plugins = ["pytester"]  # tests of isolates' own pytest plugin run small suites


@pytest.fixture(scope="session", autouse=True)
def _scratch() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="isolates-tests-")
    before = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = base
    os.environ["TMPDIR"] = base
    try:
        yield base
    finally:
        tempfile.tempdir = before[0]
        if before[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before[1]
        shutil.rmtree(base, ignore_errors=True)

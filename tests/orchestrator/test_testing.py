"""The testing helpers isolates ships: in_child and the pytest marker."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from isolates.orchestrator.testing import Outcome, in_child
from isolates.sandbox import Action, Policy

pytest_plugins = ["pytester"]


def _denied_uname() -> int:
    Policy().apply()
    try:
        os.uname()
    except OSError as exc:
        return exc.errno or 0
    return 0


def test_in_child_reports_a_value_an_error_and_a_signal() -> None:
    assert in_child(_denied_uname).unwrap() == errno.EPERM
    assert isinstance(in_child(int, "x").error, ValueError)
    killed = in_child(lambda: (Policy(default=Action.KILL_PROCESS).apply(), os.uname()))
    assert killed.signal == signal.SIGSYS and not killed.ok
    with pytest.raises(AssertionError, match="SIGSYS"):
        killed.unwrap()


def test_in_child_leaves_this_process_unconfined() -> None:
    in_child(_denied_uname)
    assert os.uname().sysname == "Linux"


def test_the_fixture_is_the_same_helper(in_child: object) -> None:
    outcome = in_child(lambda: 7)  # type: ignore[operator]
    assert isinstance(outcome, Outcome) and outcome.value == 7


@pytest.mark.isolate(Policy(default=Action.ERRNO(errno.EACCES)))
def test_marked_tests_run_confined_in_an_isolate(tmp_path: Path) -> None:
    # The runner may write to tmp_path; only the isolate's policy refuses it.
    with pytest.raises(PermissionError) as err:
        (tmp_path / "x").write_text("denied")
    assert err.value.errno == errno.EACCES


def test_a_failing_isolated_test_fails_with_the_isolate_traceback(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_inner="""
        import os, pytest
        from isolates.sandbox import Policy

        @pytest.mark.isolate(Policy())
        def test_runs_confined():
            assert os.getppid() == -1, "getppid was allowed: not confined"  # EPERM -> -1

        @pytest.mark.isolate(Policy())
        def test_fails():
            assert 1 + 1 == 3, "arithmetic"
        """
    )
    result = pytester.runpytest_subprocess()  # the plugin loads through its entry point
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*traceback in the isolate*", "*assert 1 + 1 == 3*", "*AssertionError: arithmetic*"]
    )

"""isolates' pytest plugin as a user meets it: small test files run by pytest itself
(pytester), their outcomes and messages checked."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_a_fixture_that_cannot_cross_is_named_with_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        from isolates.sandbox import Policy

        @pytest.mark.isolate(Policy())
        def test_asks(request):
            assert request.node
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fixture 'request' cannot cross into an isolate*"])


def test_a_hanging_isolated_test_fails_with_its_timeout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import time
        import pytest
        from isolates.sandbox import Policy, Time

        @pytest.mark.isolate(Policy(Time.everything()), timeout=1)
        def test_hangs():
            time.sleep(60)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ResourceExceeded*wall_time*timed out*"])


def test_assert_denied_proves_a_denial_and_how(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import errno, os
        from isolates.orchestrator.testing import assert_denied
        from isolates.sandbox import Action, Policy

        def read_shadow():
            with open("/etc/shadow") as f:
                return f.read()

        def test_errno_and_syscall():
            exc = assert_denied(read_shadow, policy=Policy(), errno=errno.EPERM, syscall="openat")
            assert isinstance(exc, PermissionError)

        def test_a_kill_names_the_syscall():
            assert_denied(os.uname, policy=Policy(default=Action.KILL_PROCESS), syscall="uname")

        def test_not_denied_fails():
            assert_denied(os.getpid, policy=Policy())

        def test_the_wrong_syscall_fails():
            assert_denied(read_shadow, policy=Policy(), syscall="uname")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*getpid was not denied: it returned *",
            "*uname was not among the calls denied (openat)*",
        ]
    )


def test_writable_lets_the_isolated_test_write_its_tmp_path_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        from isolates.sandbox import Policy, SystemIO

        POLICY = Policy(SystemIO.everything())

        @pytest.mark.isolate(POLICY, writable=["tmp_path"])
        def test_writes(tmp_path):
            (tmp_path / "out.txt").write_text("x")
            assert (tmp_path / "out.txt").read_text() == "x"

        @pytest.mark.isolate(POLICY, writable=["tmp_path"])
        def test_elsewhere_refused(tmp_path):
            with pytest.raises(PermissionError):
                open("/etc/hostname")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_failed_assert_in_an_isolated_test_shows_its_values(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        from isolates.sandbox import Policy

        def double(x):
            return x * 2

        @pytest.mark.isolate(Policy())
        def test_values():
            got = double(2)
            assert got == 5
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: assert 4 == 5*"])


def test_an_isolated_tests_output_reaches_the_report_whatever_its_policy(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("""
        import sys
        import pytest
        from isolates.sandbox import Action, Policy

        @pytest.mark.isolate(Policy(default=Action.KILL_PROCESS))  # no write of its own
        def test_prints_then_fails():
            print("printed by the isolated test")
            print("and to stderr", file=sys.stderr)
            assert False
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Captured stdout call*", "printed by the isolated test",
                                 "*Captured stderr call*", "and to stderr"])  # fmt: skip


def test_capsys_works_inside_an_isolated_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        from isolates.sandbox import Policy

        @pytest.mark.isolate(Policy())
        def test_reads_its_output(capsys):
            print("hello")
            assert capsys.readouterr().out == "hello\\n"
            assert capsys.readouterr().out == ""

        @pytest.mark.isolate(Policy())
        def test_binary(capsysbinary):
            print("bytes")
            assert capsysbinary.readouterr().out == b"bytes\\n"
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)

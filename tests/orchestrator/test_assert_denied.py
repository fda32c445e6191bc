"""assert_denied's keywords beyond errno and syscall: ``message=`` (part of what the
exception says, its notes included) and @isolate's own options (``limits=``,
``report_denials=``, ``name=``...). Each passes on a real denial and fails, with
AssertionError, when the call is allowed or denied some other way."""

from __future__ import annotations

import errno
import os

import pytest

from isolates.orchestrator import IsolateViolation, Limits, ResourceExceeded
from isolates.orchestrator.testing import assert_denied
from isolates.sandbox import Action, Policy, Rule, Threads
from tests.orchestrator import limit_targets

FILES = Policy("openat", "read", "fstat", "newfstatat", "lseek", "ioctl")
THREADS = Policy(Threads.everything())


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def spin() -> None:
    while True:
        pass


# -- message= ----------------------------------------------------------------------------


def test_message_matches_the_exceptions_text_or_its_notes() -> None:
    killed = assert_denied(read, "/etc/shadow", policy=Policy(default=Action.KILL_PROCESS),
                           syscall="openat", message='openat(AT_FDCWD, "/etc/shadow"')  # fmt: skip
    assert isinstance(killed, IsolateViolation)  # in its text
    noted = assert_denied(read, "/etc/shadow", policy=Policy(), name="reader",
                          errno=errno.EPERM, message="denied by reader's policy:")  # fmt: skip
    assert "denied by reader's policy:" not in str(noted)  # in its note only


def test_message_fails_when_the_denial_says_something_else() -> None:
    with pytest.raises(AssertionError, match="'no such words' is not in what it said"):
        assert_denied(read, "/etc/shadow", policy=Policy(), errno=errno.EPERM,
                      message="no such words")  # fmt: skip


def test_message_fails_when_the_call_is_allowed() -> None:
    with pytest.raises(AssertionError, match="read was not denied: it returned"):
        assert_denied(read, "/etc/hostname", policy=FILES, message="Permission")


# -- @isolate's options ------------------------------------------------------------------


def test_limits_are_the_isolates_and_deny_what_goes_over_them() -> None:
    err = assert_denied(limit_targets.start_one_thread, policy=THREADS,
                        limits=Limits(processes=1), message="processes")  # fmt: skip
    assert isinstance(err, ResourceExceeded)
    # the same call with room for its thread is not denied, and assert_denied says so
    with pytest.raises(AssertionError, match="was not denied: it returned 'started'"):
        assert_denied(limit_targets.start_one_thread, policy=THREADS, limits=Limits(processes=2))


def test_limits_with_a_wall_time_give_the_timeout() -> None:
    err = assert_denied(spin, policy=Policy(), limits=Limits(wall_time=0.5), message="timed out")
    assert isinstance(err, ResourceExceeded)


def test_limits_keep_a_policys_refusal_and_check_how_it_was_refused() -> None:
    refusing = Policy("wait4", Rule("clone", action=Action.ERRNO(errno.EACCES)))
    assert_denied(os.fork, policy=refusing, limits=Limits(processes=8), errno=errno.EACCES,
                  syscall="clone")  # fmt: skip
    with pytest.raises(AssertionError, match="expected an OSError with errno 11"):
        assert_denied(os.fork, policy=refusing, limits=Limits(processes=8), errno=errno.EAGAIN)


def test_report_denials_is_passed_on_and_a_denial_it_hides_fails_syscall() -> None:
    err = assert_denied(read, "/etc/shadow", policy=Policy(), errno=errno.EPERM,
                        report_denials=False)  # fmt: skip
    assert not hasattr(err, "denials")
    with pytest.raises(AssertionError, match=r"openat was not among the calls denied \(none\)"):
        assert_denied(read, "/etc/shadow", policy=Policy(), syscall="openat",
                      report_denials=False)  # fmt: skip


def test_an_unknown_option_is_an_error_not_a_denial() -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        assert_denied(read, "/etc/shadow", policy=Policy(), no_such_option=True)

"""Denials say what they were: an isolate's errno denials go through its parent, which
answers each with the policy's own errno and records it in words, shown on a failure
(``.denials``, and a note in the traceback). Real isolates, real denials."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from isolates.orchestrator import Supervisor, WorkerFailed, isolate
from isolates.orchestrator._core.denials import MAX_DENIALS
from isolates.orchestrator.testing import assert_denied
from isolates.sandbox import Action, Policy, Rule
from tests.forked import in_child
from tests.orchestrator import denial_targets as t

FILES = Policy("openat", "read", "fstat", "newfstatat", "lseek", "ioctl")


def test_a_failed_call_lists_what_was_denied_with_its_path_and_errno() -> None:
    shown = 'denied by reader\'s policy:\n  openat(AT_FDCWD, "/etc/shadow"'  # its traceback's note
    err = assert_denied(t.read, "/etc/shadow", policy=Policy(), name="reader",
                        errno=errno.EPERM, syscall="openat", message=shown)  # fmt: skip
    (denial,) = err.denials  # type: ignore[attr-defined]
    assert denial.call == 'openat(AT_FDCWD, "/etc/shadow", O_RDONLY|O_CLOEXEC, 0)'
    assert (denial.error, denial.times, denial.allow) == ("EPERM", 1, "Rule('openat')")
    # the allowed neighbour: the same function, a policy that lets it read
    assert isolate(FILES)(t.read)("/etc/hostname") == Path("/etc/hostname").read_text()


def test_a_call_the_guards_refuse_says_no_rule_allows_it() -> None:
    """ptrace is refused by isolates' guards under every policy: the denial says so rather
    than offering a Rule that would change nothing; uname's still names its Rule."""
    policy = Policy(Rule("uname", action=Action.ERRNO(errno.EPERM)), default=Action.ALLOW)
    err = assert_denied(t.ptrace_then_uname, policy=policy, errno=errno.EPERM, syscall="uname")
    allows = {d.call.split("(")[0]: d.allow for d in err.denials}  # type: ignore[attr-defined]
    assert allows == {"ptrace": "no rule or option: isolates refuses it under every policy",
                      "uname": "Rule('uname')"}  # fmt: skip


def test_a_denial_keeps_the_policys_own_errno_and_never_runs() -> None:
    denies = Policy(Rule("uname", action=Action.ERRNO(errno.EACCES)))
    assert_denied(os.uname, policy=denies, errno=errno.EACCES, syscall="uname")
    assert_denied(os.uname, policy=Policy(), errno=errno.EPERM, syscall="uname")
    assert isolate(Policy("uname"))(t.uname_errno)() == "ran"


def test_a_call_that_handles_its_denial_returns_normally() -> None:
    assert isolate(Policy())(t.uname_then)(7) == 7


def test_without_reporting_the_kernel_alone_denies() -> None:
    err = assert_denied(t.read, "/etc/shadow", policy=Policy(), report_denials=False,
                        errno=errno.EPERM)  # fmt: skip
    assert not hasattr(err, "denials") and not getattr(err, "__notes__", None)
    # the allowed neighbour: unreported too, a policy that lets it read reads
    reads = isolate(FILES, report_denials=False)(t.read)("/etc/hostname")
    assert reads == Path("/etc/hostname").read_text()


def test_denials_are_counted_and_bounded() -> None:
    err = assert_denied(t.open_many, MAX_DENIALS + 36, policy=Policy(), syscall="openat",
                        message="  and 36 more")  # fmt: skip
    assert isinstance(err, RuntimeError)
    assert len(err.denials) == MAX_DENIALS  # type: ignore[attr-defined]


def test_a_kill_is_still_a_violation_not_a_denial() -> None:
    killing = Policy(default=Action.KILL_PROCESS)
    err = assert_denied(t.read, "/etc/shadow", policy=killing, syscall="openat")
    assert err.denials == () and '"/etc/shadow"' in err.call  # type: ignore[attr-defined]


def test_a_failed_worker_carries_its_denials_and_they_are_logged() -> None:
    def run() -> tuple[list[str], bool]:
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logging.getLogger("isolates").addHandler(handler)
        sup = Supervisor()
        sup.add_worker("w", t.uname_worker)
        try:
            sup.run(timeout=60)
        except WorkerFailed as exc:
            logged = any("denied by w's policy" in r.getMessage() for r in records)
            return [str(d) for d in exc.denials], logged
        return [], False

    denials, logged = in_child(run).unwrap()
    assert len(denials) == 1 and denials[0].startswith("uname(0x") and logged
    assert denials[0].endswith("-> EPERM; allowed by Rule('uname')")


def test_remembered_verdicts_are_the_programs_own_answers() -> None:
    import itertools
    import termios

    from isolates.orchestrator._core.verdicts import Verdicts
    from isolates.sandbox import Arg, SystemIO
    from isolates.sandbox.lowlevel import action_of, evaluate, syscall_number

    policy = Policy(SystemIO.nothing().allow_stdout(), Rule("ioctl", Arg(1) == termios.FIONBIO),
                    Rule("kill", Arg(1) == 0), default=Action.ERRNO(errno.EACCES))  # fmt: skip
    program = policy.compile(notify_kills=True, all_threads=True).bpf
    verdicts = Verdicts(program)
    values = [0, 1, 2, termios.FIONBIO, termios.TCGETS, 1 << 32 | termios.FIONBIO, (1 << 64) - 1]
    for name in ("write", "ioctl", "kill", "uname", "openat"):
        nr = syscall_number(name)
        for first, second in itertools.product(values, repeat=2):
            args = (first, second, 0, 0, 0, 0)
            expected = action_of(evaluate(program, nr, args))
            assert verdicts.of(nr, args) == expected, (name, args)
            assert verdicts.of(nr, args) == expected  # remembered, the same

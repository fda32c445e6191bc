"""profiles.pledge without loading anything: bad promises, execpromises, unveil, the
Landlock half, equivalence with hand-built policies (through the BPF evaluator), and the
generated tables in docs/profiles.md."""

from __future__ import annotations

import errno
import itertools
import socket
from pathlib import Path

import pytest

from isolates.sandbox import (
    Action,
    Arg,
    Pipes,
    Policy,
    PolicyError,
    Processes,
    Rule,
    RuleSet,
    Signals,
    SystemIO,
    Threads,
    Time,
    profiles,
)
from isolates.sandbox._bpf import decide
from isolates.sandbox._landlock_abi import AccessFs
from isolates.sandbox._syscalls import table
from isolates.sandbox.profiles._pledge import unveil_rights
from isolates.sandbox.profiles._tables import CONDITIONS, NOTES, fill, promise_rules

DOCS = Path(__file__).parents[2] / "docs" / "profiles.md"


@pytest.mark.parametrize(
    ("promises", "kwargs", "message"),
    [
        ("stdoi rpath", {}, r"unknown promise 'stdoi' in promises; did you mean 'stdio'"),
        ("stdio inte", {}, r"did you mean 'inet'"),
        ("stdio ps", {}, r"'ps' has no Linux meaning \(sysctl.*/proc.*ignore=\{'ps'\}"),
        ("stdio bpf", {}, r"not Linux's bpf\(2\)"),
        ("stdio", {"ignore": ["pss"]}, r"unknown promise 'pss' in ignore; did you mean 'ps'"),
        ("stdio", {"unveil": {"/tmp": "rq"}}, r"use 'q'; only r \(read\), w \(write\)"),
        ("stdio rpath", {"unveil": {"/no/such/dir": "r"}}, r"'/no/such/dir' does not exist"),
    ],
)
def test_bad_promises_raise_policy_error_saying_why(
    promises: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        profiles.pledge(promises, **kwargs)  # type: ignore[arg-type]


def test_a_non_string_is_refused() -> None:
    with pytest.raises(PolicyError, match="a string of promises"):
        profiles.pledge(["stdio"])  # type: ignore[arg-type]


def test_ignore_drops_promises_without_a_linux_meaning() -> None:
    ignored = profiles.pledge("stdio ps vminfo", ignore={"ps", "vminfo"})
    assert ignored.entries() == profiles.pledge("stdio").entries()


def test_every_promise_openbsd_knows_is_known() -> None:
    assert set(profiles.PROMISES) == {
        "stdio", "rpath", "wpath", "cpath", "dpath", "tmppath", "inet", "mcast", "fattr",
        "chown", "flock", "unix", "dns", "getpw", "sendfd", "recvfd", "tape", "tty", "proc",
        "exec", "prot_exec", "settime", "id", "unveil", "error", "pf", "route", "wroute",
        "audio", "video", "bpf", "ps", "vminfo", "disklabel", "drm", "vmm",
    }  # fmt: skip


def test_execpromises_can_only_narrow() -> None:
    with pytest.raises(PolicyError, match="without 'exec' in promises"):
        profiles.pledge("stdio rpath", "stdio")
    with pytest.raises(PolicyError, match="'inet' exceed the promises: a seccomp filter"):
        profiles.pledge("stdio rpath exec", "stdio inet")
    narrowed = profiles.pledge("stdio rpath exec", "stdio rpath")
    assert narrowed.entries() == profiles.pledge("stdio rpath exec").entries()


def test_rulesets_are_named_after_their_promise() -> None:
    names = [rs.name for rs in profiles.pledge("stdio inet").rulesets]
    assert names == ["PythonRuntime", "pledge 'inet'", "pledge 'stdio'", "pledge 'no prot_exec'"]


def test_violations_kill_unless_error_is_promised() -> None:
    assert profiles.pledge("stdio").default == Action.KILL_PROCESS
    assert profiles.pledge("stdio error").default == Action.ERRNO(errno.ENOSYS)


# --- the Landlock half ----------------------------------------------------------------------


def test_landlock_only_when_something_is_bound_to_paths() -> None:
    assert profiles.pledge("stdio rpath wpath cpath inet").landlock is None
    for promises in ("stdio tmppath", "stdio dns", "stdio getpw", "stdio tty"):
        assert profiles.pledge(promises).landlock is not None, promises
    assert profiles.pledge("stdio rpath", unveil={"/etc": "r"}).landlock is not None


def _grants(promises: str, unveil: dict[str, str] | None = None) -> dict[str, AccessFs]:
    landlock = profiles.pledge(promises, unveil=unveil).landlock
    assert landlock is not None
    return dict(landlock.grants())


def test_global_promises_grant_beneath_root_when_landlock_is_in_use() -> None:
    grants = _grants("stdio rpath wpath tmppath")
    read_write = AccessFs.READ_FILE | AccessFs.READ_DIR | AccessFs.WRITE_FILE
    assert grants["/"] & read_write == read_write
    assert not grants["/"] & (AccessFs.MAKE_REG | AccessFs.EXECUTE)  # no cpath, no exec
    assert grants["/tmp"] & AccessFs.MAKE_REG
    assert "/" not in _grants("stdio tmppath")  # nothing global to grant


def test_unveil_replaces_root_with_the_unveiled_paths(tmp_path: Path) -> None:
    grants = _grants("stdio rpath cpath", {str(tmp_path): "rc", "/etc/hostname": "r"})
    assert "/" not in grants
    assert grants[str(tmp_path)] & (AccessFs.READ_DIR | AccessFs.MAKE_REG | AccessFs.REFER)
    assert grants["/etc/hostname"] == AccessFs.READ_FILE | AccessFs.IOCTL_DEV  # a file


@pytest.mark.parametrize(
    ("letters", "promises", "granted", "absent"),
    [
        ("r", "rpath", AccessFs.READ_FILE | AccessFs.READ_DIR, AccessFs.WRITE_FILE),
        ("r", "wpath", AccessFs(0), AccessFs.READ_FILE),  # r needs rpath
        ("w", "wpath", AccessFs.WRITE_FILE | AccessFs.TRUNCATE, AccessFs.READ_FILE),
        ("x", "exec", AccessFs.EXECUTE | AccessFs.READ_FILE, AccessFs.WRITE_FILE),
        ("x", "rpath", AccessFs(0), AccessFs.EXECUTE),  # x needs exec
        ("c", "cpath", AccessFs.MAKE_REG | AccessFs.REMOVE_DIR, AccessFs.MAKE_FIFO),
        ("c", "cpath dpath", AccessFs.MAKE_FIFO | AccessFs.MAKE_SOCK, AccessFs.READ_FILE),
        ("c", "cpath unix", AccessFs.MAKE_SOCK, AccessFs.MAKE_FIFO),
        ("", "rpath wpath cpath", AccessFs(0), AccessFs.READ_FILE),
    ],
)
def test_unveil_letters_map_to_landlock_rights_within_the_promises(
    letters: str, promises: str, granted: AccessFs, absent: AccessFs
) -> None:
    rights = unveil_rights(letters, frozenset(promises.split()))
    assert rights & granted == granted
    assert not rights & absent


# --- equivalence with hand-built policies, through the evaluator -----------------------------

SOL_SOCKET, AT_EMPTY_PATH, PROT_EXEC = socket.SOL_SOCKET, 0x1000, 0x4


def hand_built_stdio() -> list[RuleSet]:
    """stdio as docs/profiles.md describes it, written with the builtins."""
    io = SystemIO.nothing().allow_read().allow_write().allow_close().allow_poll().allow_sync()
    outright = RuleSet(
        "dup", "dup2", "dup3", "lseek", "fstat", "ftruncate", "eventfd2", "madvise", "msync",
        "mincore", "munmap", "mremap", "restart_syscall", "set_tid_address", "getppid",
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
        "getpgid", "getpgrp", "getsid", "getrlimit", "getrusage", "umask", "uname", "sysinfo",
        "times", "shutdown", "recvfrom", "recvmsg", "sendmsg", "recvmmsg", "sendmmsg",
    )  # fmt: skip
    f_cmds = (0, 1, 2, 3, 4, 1030, 1032, 1034)  # F_DUPFD ... F_GET_SEALS
    ioctls = (0x541B, 0x5421, 0x5451, 0x5450, 0x5401)  # FIONREAD ... TCGETS
    conditional = RuleSet(
        *(Rule("fcntl", Arg(1) == c) for c in f_cmds),
        *(Rule("ioctl", Arg(1) == c) for c in ioctls),
        Rule("prlimit64", Arg(2) == 0),
        Rule("sendto", Arg(4) == 0),
        Rule("socketpair", Arg(0) == socket.AF_UNIX),
        Rule("getsockopt", Arg(1) == SOL_SOCKET),
        Rule("setsockopt", Arg(1) == SOL_SOCKET),
    )
    return [io, Pipes.nothing().allow_create(), Time.nothing().allow_sleep().allow_timers(),
            Signals.everything(), Threads.nothing().allow_create(),
            Processes.nothing().allow_wait(), outright, conditional]  # fmt: skip


def hand_built_rpath() -> list[RuleSet]:
    extra = RuleSet("getdents", "chdir", "fchdir", "getxattr", "lgetxattr", "fgetxattr",
                    "listxattr", "llistxattr", "flistxattr", "fadvise64")  # fmt: skip
    return [SystemIO.nothing().allow_open_readonly().allow_metadata(), extra]


NO_PROT_EXEC = RuleSet(Rule("mmap", Arg(2) & PROT_EXEC == 0), Rule("mprotect", Arg(2) & 4 == 0))
ID_PROC_EXEC = [
    Processes.nothing().allow_fork().allow_exec().allow_sessions(),
    Time.nothing().allow_set_time(),
    RuleSet(Rule("fcntl", Arg(1) == 8)),  # F_SETOWN: proc may make descriptors signal
    # proc reaches other processes' priorities, unlike Threads.allow_priority():
    RuleSet("kill", "tgkill", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open",
            "pidfd_send_signal", "prlimit64", "setrlimit", "arch_prctl", "setuid", "setgid",
            "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid",
            "setfsgid", "capget", "capset", "getpriority", "setpriority", "sched_getparam",
            "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min",
            "sched_setaffinity"),
]  # fmt: skip


def _arg_samples(policies: list[Policy], syscall: str) -> list[tuple[int, ...]]:
    """Argument vectors that satisfy, and narrowly miss, every condition on ``syscall``."""
    samples: set[tuple[int, ...]] = {(0,) * 6}
    for policy in policies:
        for entry in (e for e in policy.entries() if e.syscall == syscall):
            exact = [0] * 6
            for c in entry.conditions:
                _, _, value, _ = c.resolve(4242)
                exact[c.arg] = value
            samples.add(tuple(exact))
            for c, delta in itertools.product(entry.conditions, (1, -1, 1 << 40, 0x80)):
                near = list(exact)
                near[c.arg] = (exact[c.arg] + delta) % (1 << 64)
                samples.add(tuple(near))
    return sorted(samples)


def assert_same_decisions(pledged: Policy, hand: Policy) -> int:
    one, other = pledged.compile(4242).bpf, hand.compile(4242).bpf
    checked = 0
    for name, nr in sorted(table().items()):
        for args in _arg_samples([pledged, hand], name):
            assert decide(one, nr, args) == decide(other, nr, args), (name, args)
            checked += 1
    return checked


def test_stdio_rpath_equals_its_hand_built_policy() -> None:
    hand = Policy(*hand_built_stdio(), *hand_built_rpath(), NO_PROT_EXEC,
                  default=Action.KILL_PROCESS)  # fmt: skip
    assert assert_same_decisions(profiles.pledge("stdio rpath"), hand) > 400


def test_proc_exec_settime_id_equals_its_hand_built_policy() -> None:
    hand = Policy(*ID_PROC_EXEC, default=Action.KILL_PROCESS)
    pledged = profiles.pledge("proc exec prot_exec settime id")
    assert assert_same_decisions(pledged, hand) > 300


def test_a_different_policy_is_told_apart() -> None:
    # The comparison can fail: drop one ioctl from the hand-built stdio.
    hand = hand_built_stdio()
    hand[-1] = RuleSet(*(r for r in hand[-1].rules() if r.conditions[0].value != 0x5401))
    with pytest.raises(AssertionError, match="ioctl"):
        assert_same_decisions(
            profiles.pledge("stdio"), Policy(*hand, NO_PROT_EXEC, default=Action.KILL_PROCESS)
        )


# --- the tables in the docs ----------------------------------------------------------------


def test_the_docs_show_the_current_tables() -> None:
    text = DOCS.read_text()
    assert fill(text) == text, (
        "docs/profiles.md is out of date: python -m isolates.sandbox.profiles._tables "
        "docs/profiles.md"
    )


@pytest.mark.parametrize(
    "name", [p for p in profiles.PROMISES if p not in profiles.NO_LINUX_MEANING]
)
def test_the_table_explains_every_conditional_rule(name: str) -> None:
    conditional = {r.syscall for r in promise_rules(name) if r.conditions}
    words = CONDITIONS.get(name, "")
    assert all(s in words for s in conditional), (name, conditional)
    assert name in NOTES

"""profiles.systemd: SystemCallFilter= grammar, every group, in real children and, for
whole groups at once, through the BPF evaluator."""

from __future__ import annotations

import errno
import gc
import json
import os
import signal
import threading

import pytest

from isolates.sandbox import ALWAYS_DENIED, Action, Policy, PolicyError, PythonRuntime, profiles
from isolates.sandbox._bpf import decide
from isolates.sandbox._syscalls import exists, number
from tests.forked import in_child
from tests.sandbox.syscall import raw

MARK = errno.ENOANO  # default_errno in most tests: an errno none of these calls returns
Call = tuple[str, tuple[int, ...]]

# For every group: a call it allows (harmless: invalid descriptors, NULL pointers, bad
# magic numbers), and extra names when the group alone allows nothing new (its members
# are all in ALWAYS_DENIED, or all in @default already).
REPRESENTATIVE: dict[str, tuple[Call, str]] = {
    "@default": (("getppid", ()), ""),
    "@aio": (("io_destroy", (0,)), ""),
    "@basic-io": (("lseek", (4000, 0, 0)), ""),
    "@chown": (("fchown", (4000, -1, -1)), ""),
    "@clock": (("adjtimex", (0,)), ""),
    "@cpu-emulation": (("modify_ldt", (0, 0, 0)), ""),
    "@debug": (("pidfd_getfd", (4000, 0, 0)), ""),
    "@file-system": (("getcwd", (0, 0)), ""),
    "@io-event": (("epoll_wait", (4000, 0, 1, 0)), ""),
    "@ipc": (("msgctl", (-1, 2, 0)), ""),
    "@keyring": (("keyctl", (0, -1, 0)), "keyctl"),  # KEYCTL_GET_KEYRING_ID, thread
    "@memlock": (("mlock", (0, 0)), ""),
    "@module": (("delete_module", (0, 0)), "delete_module"),
    "@mount": (("chroot", (0,)), ""),
    "@network-io": (("shutdown", (4000, 0)), ""),
    "@obsolete": (("afs_syscall", ()), ""),
    "@pkey": (("pkey_free", (1000,)), ""),
    "@privileged": (("capset", (0, 0)), ""),
    "@process": (("getrusage", (0, 0)), ""),
    "@raw-io": (("ioperm", (0, 0, 0)), ""),
    "@reboot": (("reboot", (0, 0, 0, 0)), ""),  # bad magic: EINVAL before anything else
    "@resources": (("ioprio_set", (99, 0, 0)), ""),
    "@sandbox": (("landlock_create_ruleset", (0, 0, 1)), ""),  # asks for the ABI version
    "@setuid": (("setresuid", (-1, -1, -1)), ""),
    "@signal": (("rt_sigpending", (0, 8)), ""),
    "@swap": (("swapoff", (0,)), ""),
    "@sync": (("fdatasync", (4000,)), ""),
    "@system-service": (("shutdown", (4000, 0)), ""),
    "@timer": (("getitimer", (0, 0)), ""),
    "@known": (("afs_syscall", ()), ""),
}
# Harmless calls to find one outside a group (the evaluator picks the first it denies).
OUTSIDE: tuple[Call, ...] = (
    ("lseek", (4000, 0, 0)), ("getcwd", (0, 0)), ("adjtimex", (0,)),
    ("reboot", (0, 0, 0, 0)), ("ptrace", (0xFFFF, 0, 0, 0)),
)  # fmt: skip


def _errno_of(call: Call) -> int | None:
    try:
        raw(call[0], *call[1])
    except OSError as exc:
        return exc.errno
    return None


def _errnos(policy: Policy, calls: list[Call]) -> list[int | None]:
    policy.apply()
    return [_errno_of(c) for c in calls]


def _outside(policy: Policy) -> Call:
    bpf = policy.compile().bpf
    return next(c for c in OUTSIDE if decide(bpf, number(c[0]), c[1]) == policy.default)


def test_every_systemd_group_has_a_representative() -> None:
    assert set(REPRESENTATIVE) == set(profiles.groups())


@pytest.mark.parametrize("group", sorted(REPRESENTATIVE))
def test_a_group_allows_its_syscalls_and_denies_others(group: str) -> None:
    call, extra = REPRESENTATIVE[group]
    policy = profiles.systemd(f"{group} {extra}", default_errno=MARK)
    outside = _outside(policy)
    allowed, denied = in_child(_errnos, policy, [call, outside]).unwrap()
    assert allowed != MARK, f"{call} should pass the filter under {group}"
    assert denied == MARK, f"{outside} should be denied under {group}"


@pytest.mark.parametrize("group", sorted(profiles.groups()))
def test_every_member_of_every_group_is_allowed_and_nothing_else(group: str) -> None:
    policy = profiles.systemd(group, default_errno=MARK)
    bpf = policy.compile().bpf
    members = set(profiles.groups()[group].native())
    always = set(profiles.groups()["@default"].native()) | set(PythonRuntime.SYSCALLS)
    for name in sorted(members | always):
        expected = Action.ALLOW
        if name in ALWAYS_DENIED and name not in PythonRuntime.SYSCALLS:
            expected = Action.ERRNO(MARK)  # the documented deviation: group-only, denied
        elif name == "clone3":
            expected = Action.ERRNO(errno.ENOSYS)
        assert decide(bpf, number(name), (0,)) == expected, name
    for name in ("reboot", "mount", "ptrace", "getcwd", "socket", "lseek"):
        if name not in members | always:
            assert decide(bpf, number(name)) == Action.ERRNO(MARK), name


@pytest.mark.parametrize("group", sorted(profiles.groups()))
def test_a_deny_list_denies_every_member_and_nothing_else(group: str) -> None:
    policy = profiles.systemd(f"~{group}:EXFULL")
    bpf = policy.compile().bpf
    members = set(profiles.groups()[group].native())
    for name in sorted(members):
        assert decide(bpf, number(name), (0,)) == Action.ERRNO(errno.EXFULL), name
    for name in ("getppid", "reboot", "getcwd", "socket", "lseek", "uname"):
        if name not in members:
            assert decide(bpf, number(name)) == Action.ALLOW, name


def test_a_denied_call_kills_by_default() -> None:
    policy = profiles.systemd("@basic-io")
    outcome = in_child(_errnos, policy, [("lseek", (4000, 0, 0)), ("getcwd", (0, 0))])
    assert outcome.signal == signal.SIGSYS


def test_a_deny_list_kills_only_what_it_lists() -> None:
    policy = profiles.systemd("~@clock")
    assert in_child(_errnos, policy, [("getcwd", (0, 0))]).unwrap() == [errno.ERANGE]
    assert in_child(_errnos, policy, [("adjtimex", (0,))]).signal == signal.SIGSYS


def test_errno_suffixes_and_the_default_errno() -> None:
    policy = profiles.systemd("~@clock:EACCES reboot:kill getcwd", default_errno="EPERM")
    calls = [("adjtimex", (0,)), ("getcwd", (0, 0)), ("lseek", (4000, 0, 0))]
    assert in_child(_errnos, policy, calls).unwrap() == [errno.EACCES, errno.EPERM, errno.EBADF]
    assert in_child(_errnos, policy, [("reboot", (0, 0, 0, 0))]).signal == signal.SIGSYS


def _python_works(policy: Policy) -> tuple[int, str, int]:
    policy.apply()
    blob = [{"n": i, "s": str(i) * 50} for i in range(20000)]  # grows the heap (mmap/brk)
    text = json.dumps(blob)
    gc.collect()
    out: list[int] = []
    thread = threading.Thread(target=lambda: out.append(len(text)))
    thread.start()
    thread.join()
    return out[0], text[:9], os.getpid()


SPECS = [("@system-service",), ("@basic-io @process",), ("@system-service", "~@privileged")]


@pytest.mark.parametrize("spec", SPECS)
def test_cpython_keeps_working_under_a_profile(spec: tuple[str, ...]) -> None:
    length, head, pid = in_child(_python_works, profiles.systemd(*spec)).unwrap()
    assert length > 1_000_000 and head == '[{"n": 0,' and pid > 0


def test_group_only_always_denied_syscalls_stay_denied() -> None:
    calls: list[Call] = [("unshare", (0,)), ("keyctl", (0, -1, 0)), ("clone", (0x10000000 | 17,))]
    group_only = profiles.systemd("@system-service")
    assert in_child(_errnos, group_only, calls).unwrap() == [errno.EPERM] * 3
    named = profiles.systemd("@system-service unshare")
    assert in_child(_errnos, named, calls[:1]).unwrap() == [None]  # unshare(0): a no-op


def test_a_deny_list_can_give_back_an_always_denied_syscall_by_name() -> None:
    bpf = profiles.systemd("~@clock", "unshare").compile().bpf
    assert decide(bpf, number("unshare")) == Action.ALLOW
    assert decide(bpf, number("setns")) == Action.ERRNO(errno.EPERM)  # still guarded


def test_later_assignments_add_and_remove() -> None:
    allow = profiles.systemd("@basic-io", "~write", "~pwrite64:EACCES", default_errno="EIO")
    bpf = allow.compile().bpf
    assert decide(bpf, number("read")) == Action.ALLOW
    assert decide(bpf, number("write")) == Action.ERRNO(errno.EIO)  # removed: the default
    assert decide(bpf, number("pwrite64")) == Action.ERRNO(errno.EACCES)  # kept with errno
    deny = profiles.systemd("~@clock", "adjtimex").compile().bpf
    assert decide(deny, number("adjtimex")) == Action.ALLOW
    assert decide(deny, number("settimeofday")) == Action.KILL_PROCESS


def test_an_empty_assignment_resets_the_list() -> None:
    bpf = profiles.systemd("~@clock", "", "@basic-io").compile().bpf
    assert decide(bpf, number("adjtimex")) == Action.KILL_PROCESS  # now an allow-list
    assert decide(bpf, number("read")) == Action.ALLOW


def test_other_architectures_names_are_skipped() -> None:
    assert not exists("mmap2") and not exists("_llseek")
    bpf = profiles.systemd("@basic-io mmap2 _llseek").compile().bpf
    assert decide(bpf, number("read")) == Action.ALLOW


def test_groups_carry_systemds_help_text() -> None:
    assert profiles.groups()["@clock"].help == "Change the system time"
    assert "@process" in profiles.groups()["@system-service"].includes
    assert "setns" in profiles.groups()["@system-service"].syscalls


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("@fle-system",), {}, r"unknown group '@fle-system'; did you mean '@file-system'"),
        (("@nonsense-group-xyz",), {}, r"the groups are @aio, @basic-io"),
        (("@basic-io reaad",), {}, r"'reaad' is not a syscall.*did you mean 'read'"),
        (("read:EPERM",), {}, r"only denied entries take an errno; write '~read:EPERM'"),
        (("~read:EPRM",), {}, r"'EPRM' is not an errno name; did you mean 'EPERM'"),
        (("~read:0",), {}, r"errno 0 cannot be expressed"),
        (("~read:5000",), {}, r"errno 5000 cannot be expressed"),
        (("@basic-io ~@mount",), {}, r"'~' goes once, at the start"),
        (("~read:",), {}, r"write name:ERRNO"),
        (("",), {}, r"no filter given"),
        ((), {}, r"no filter given"),
        (("@basic-io",), {"default_errno": "EPRM"}, r"did you mean 'EPERM'"),
        (("@basic-io",), {"default_errno": 1.5}, r"an errno number, a name such as 'EPERM'"),
    ],
)
def test_bad_specs_raise_policy_error_with_a_suggestion(
    args: tuple[str, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        profiles.systemd(*args, **kwargs)  # type: ignore[arg-type]

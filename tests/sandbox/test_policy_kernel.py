"""Loading policies into real children: the always-denied list, other ABIs, threads,
stacking, actions, and Policy.run."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import signal
import threading
import time

import pytest

from isolates.sandbox import (
    Action,
    Networking,
    Pipes,
    Policy,
    Processes,
    RuleSet,
    SandboxError,
    Signals,
    SystemIO,
    Threads,
    Time,
)
from tests.forked import in_child
from tests.sandbox.syscall import raw

CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17
EVERYTHING = (SystemIO, Networking, Threads, Time, Pipes, Processes, Signals)


def _errno_of(fn: object, *args: int) -> int | None:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as exc:
        return exc.errno
    return None


def _always_denied_under(policy: Policy) -> dict[str, int | None]:
    policy.apply()
    return {
        "clone(CLONE_NEWUSER)": _errno_of(raw, "clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
        "clone(CLONE_NEWNET)": _errno_of(raw, "clone", CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0),
        "io_uring_setup": _errno_of(raw, "io_uring_setup", 8, 0),
        "unshare": _errno_of(raw, "unshare", CLONE_NEWUSER),
        "setns": _errno_of(raw, "setns", 0, 0),
        "ptrace": _errno_of(raw, "ptrace", 0, 0, 0, 0),
        "bpf": _errno_of(raw, "bpf", 0, 0, 0),
        "perf_event_open": _errno_of(raw, "perf_event_open", 0, 0, -1, -1, 0),
        "userfaultfd": _errno_of(raw, "userfaultfd", 0),
        "keyctl": _errno_of(raw, "keyctl", 0, 0),
        "mount": _errno_of(raw, "mount", 0, 0, 0, 0, 0),
        "fsopen": _errno_of(raw, "fsopen", 0, 0),
        "clone3": _errno_of(raw, "clone3", 0, 0),
    }


def test_everything_still_denies_the_dangerous_calls() -> None:
    everything = Policy(*(k.everything() for k in EVERYTHING))
    result = in_child(_always_denied_under, everything).unwrap()
    clone3 = result.pop("clone3")
    assert clone3 == errno.ENOSYS, "clone3 must answer ENOSYS so libc falls back to clone"
    assert result == dict.fromkeys(result, errno.EPERM)


def test_a_permissive_default_still_denies_the_dangerous_calls() -> None:
    result = in_child(_always_denied_under, Policy(default=Action.ALLOW)).unwrap()
    assert result.pop("clone3") == errno.ENOSYS
    assert result == dict.fromkeys(result, errno.EPERM)


def test_threads_and_fork_still_work_under_everything() -> None:
    def check() -> tuple[int, int]:
        Policy(*(k.everything() for k in EVERYTHING)).apply()
        out: list[int] = []
        t = threading.Thread(target=lambda: out.append(1))
        t.start()
        t.join()
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        return out[0], os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    assert in_child(check).unwrap() == (1, 3)


def test_naming_unshare_explicitly_allows_it() -> None:
    def check() -> int | None:
        Policy(RuleSet.nothing().allow("unshare")).apply()
        return _errno_of(raw, "unshare", 0)  # unshare(0) is a valid no-op

    assert in_child(check).unwrap() is None


# An i386 getpid through int 0x80: mov eax, 20; int 0x80; ret.
_I386_GETPID = bytes.fromhex("b814000000cd80c3")


def _i386_getpid(policy: Policy | None) -> int:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(_I386_GETPID)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    call = ctypes.CFUNCTYPE(ctypes.c_int)(address)
    if policy is not None:
        policy.apply()
    return int(call())


def test_the_i386_abi_works_without_a_policy() -> None:
    # Proves the machine code really makes a syscall on this machine.
    assert in_child(_i386_getpid, None).unwrap() > 0


def test_a_syscall_through_the_i386_abi_is_killed() -> None:
    outcome = in_child(_i386_getpid, Policy("getpid", default=Action.ALLOW))
    assert outcome.signal == signal.SIGSYS


def test_a_syscall_through_the_x32_abi_is_killed() -> None:
    x32_getpid = 39 | 0x40000000

    def check() -> int:
        Policy(default=Action.ALLOW).apply()
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.syscall(ctypes.c_long(x32_getpid)))

    assert in_child(check).signal == signal.SIGSYS


def _uname_in_other_thread_after(all_threads: bool) -> tuple[int | None, int | None]:
    go, done = threading.Event(), threading.Event()
    seen: list[int | None] = []

    def other() -> None:
        go.wait()
        seen.append(_errno_of(os.uname))
        done.set()

    threading.Thread(target=other).start()
    Policy(Threads.nothing().allow_create()).apply(all_threads=all_threads)
    go.set()
    done.wait()
    return _errno_of(os.uname), seen[0]


def test_apply_confines_the_calling_thread_only() -> None:
    assert in_child(_uname_in_other_thread_after, False).unwrap() == (errno.EPERM, None)


def test_apply_all_threads_confines_every_thread() -> None:
    assert in_child(_uname_in_other_thread_after, True).unwrap() == (errno.EPERM, errno.EPERM)


def test_threads_started_later_inherit_the_filter() -> None:
    def check() -> int | None:
        Policy(Threads.nothing().allow_create()).apply()
        seen: list[int | None] = []
        t = threading.Thread(target=lambda: seen.append(_errno_of(os.uname)))
        t.start()
        t.join()
        return seen[0]

    assert in_child(check).unwrap() == errno.EPERM


def test_a_second_policy_stacks_as_the_intersection() -> None:
    def check() -> tuple[int | None, int | None, int | None]:
        second = Policy("uname", "getppid", default=Action.ERRNO(errno.EACCES))
        second.compile()  # libseccomp cannot run once the first policy is in force
        Policy("uname", "getcwd").apply()
        second.apply()
        return _errno_of(os.uname), _errno_of(os.getcwd), _errno_of(raw, "getppid")

    # uname: allowed by both. getcwd: only by the first. getppid: only by the second.
    assert in_child(check).unwrap() == (None, errno.EACCES, errno.EPERM)


@pytest.mark.parametrize(
    ("action", "sig"),
    [(Action.KILL_PROCESS, signal.SIGSYS), (Action.TRAP, signal.SIGSYS)],
)
def test_killing_actions_end_the_process_with_sigsys(action: Action, sig: int) -> None:
    def check() -> None:
        Policy(default=action).apply()
        os.uname()

    assert in_child(check).signal == sig


def test_kill_thread_kills_only_the_offending_thread() -> None:
    def check() -> bool:
        tids: list[int] = []

        def offend() -> None:
            tids.append(threading.get_native_id())
            Policy(default=Action.KILL_THREAD).apply()
            os.uname()

        threading.Thread(target=offend).start()
        # A thread killed by seccomp never tells Python it ended: watch the kernel's view.
        while not tids or os.path.exists(f"/proc/self/task/{tids[0]}"):
            time.sleep(0.001)
        return True  # and this thread is still running

    assert in_child(check).unwrap() is True


def test_log_allows_and_logs() -> None:
    def check() -> str:
        Policy(default=Action.LOG).apply()
        return os.uname().sysname

    assert in_child(check).unwrap() == "Linux"


def test_errno_action_is_what_the_caller_sees() -> None:
    def check() -> int | None:
        Policy(default=Action.ERRNO(errno.EROFS)).apply()
        return _errno_of(os.uname)

    assert in_child(check).unwrap() == errno.EROFS


def test_loading_failure_is_a_sandbox_error_saying_why() -> None:
    def check() -> str:
        Policy(default=Action.ALLOW).compile().apply_with_listener()
        try:  # the kernel allows one notification listener per filter stack
            Policy(default=Action.ALLOW).compile().apply_with_listener()
        except SandboxError as exc:
            return str(exc)
        return "loaded"

    assert "already installed" in in_child(check).unwrap()


def test_a_confined_process_compiles_and_stacks_a_narrower_policy() -> None:
    def check() -> tuple[int, int | None, int | None]:
        Policy("uname", "getcwd").apply()  # nothing to compile with but memory from now on
        narrower = Policy("uname")
        size = len(narrower.compile().bpf)
        narrower.apply()
        return size, _errno_of(os.uname), _errno_of(os.getcwd)

    size, uname, getcwd = in_child(check).unwrap()
    assert size > 0 and uname is None and getcwd == errno.EPERM


def test_run_returns_the_value_and_confines_only_its_thread() -> None:
    def check() -> tuple[str, int | None]:
        value = Policy("uname").run(lambda: os.uname().sysname)
        return value, _errno_of(os.getcwd)

    assert in_child(check).unwrap() == ("Linux", None)


def test_run_reraises_the_exception_raised_in_the_thread() -> None:
    def check() -> tuple[str, int | None]:
        try:
            Policy().run(os.uname)
        except PermissionError as exc:
            return type(exc).__name__, exc.errno
        return "no error", None

    assert in_child(check).unwrap() == ("PermissionError", errno.EPERM)


def test_run_passes_arguments_and_keywords() -> None:
    assert Policy().run(lambda a, *, b: a + b, 2, b=3) == 5


def test_the_runtime_reads_who_it_runs_as_but_cannot_change_it() -> None:
    def child() -> tuple[int, int, tuple[int, int, int], str]:
        Policy().apply()
        try:
            os.setuid(os.getuid())
            changed = "setuid ran"
        except PermissionError:
            changed = "setuid denied"
        return os.getuid(), os.getegid(), os.getresuid(), changed

    uid = os.getuid()
    assert in_child(child).unwrap() == (uid, os.getegid(), (uid, uid, uid), "setuid denied")

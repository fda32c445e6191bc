"""Hostile tests: each power a policy must not grant, tried by every door that reaches it
in a real child, with the allowed neighbour proven beside it.

The victim is an unconfined process of the same user (a ``sleep`` the test starts, or
the test runner itself): what a confined process must never reach.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import subprocess
import termios
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isolates.sandbox import (
    Action,
    Arg,
    Landlock,
    Networking,
    Pipes,
    Policy,
    Processes,
    Rule,
    RuleSet,
    SandboxError,
    Signals,
    SystemIO,
    Threads,
    Time,
    profiles,
)
from isolates.sandbox.lowlevel import uapi
from tests.forked import in_child
from tests.sandbox.syscall import raw

BUILTINS = (SystemIO, Networking, Threads, Time, Pipes, Processes, Signals)
CLONE_FLAGS = uapi.CLONE_NAMESPACES
SIGCHLD = 17
HIGH = 1 << 32  # bits the kernel ignores in a 32-bit argument


def err(fn: Callable[..., Any], *args: Any) -> str:
    """ "ok", or the name of the errno ``fn(*args)`` failed with."""
    try:
        fn(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok"


def run(fn: Callable[..., Any], *args: Any) -> Any:
    return in_child(fn, *args).unwrap()


@pytest.fixture
def victim() -> Iterator[int]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- 1. ptrace-class doors: /proc/PID/{mem,environ,maps,fd}, pidfd_getfd, kcmp -------------


def _proc_doors(policy: Policy, target: int) -> dict[str, str]:
    pidfd = os.pidfd_open(target)
    own = os.pidfd_open(os.getpid())
    policy.apply()

    def read(name: str) -> None:
        with open(f"/proc/{target}/{name}", "rb") as f:
            f.read(16)

    return {
        "mem rw": err(lambda: os.close(os.open(f"/proc/{target}/mem", os.O_RDWR))),
        "environ": err(read, "environ"),
        "maps": err(read, "maps"),
        "auxv": err(read, "auxv"),
        "fd/0": err(os.readlink, f"/proc/{target}/fd/0"),
        "fd/0 reopened": err(lambda: os.close(os.open(f"/proc/{target}/fd/0", os.O_RDONLY))),
        "cwd": err(os.readlink, f"/proc/{target}/cwd"),
        "root": err(os.listdir, f"/proc/{target}/root/"),
        "pidfd_getfd": err(raw, "pidfd_getfd", pidfd, 0, 0),
        "kcmp": err(raw, "kcmp", os.getpid(), target, 0, 0, 0),
        # The neighbours: this process's own memory and descriptors stay reachable.
        "self mem": err(lambda: os.close(os.open("/proc/self/mem", os.O_RDWR))),
        "self pidfd_getfd": err(lambda: os.close(raw("pidfd_getfd", own, 0, 0))),
    }


DENIED_DOORS = {
    "mem rw": "EACCES", "environ": "EACCES", "maps": "EACCES", "auxv": "EACCES",
    "fd/0": "EACCES", "fd/0 reopened": "EACCES", "cwd": "EACCES", "root": "EACCES",
    "pidfd_getfd": "EPERM", "kcmp": "EPERM",
    "self mem": "ok", "self pidfd_getfd": "ok",
}  # fmt: skip
PTRACE_TARGET_CALLS = RuleSet("pidfd_getfd", "kcmp", "pidfd_open", name="probes")
POLICIES_WITHOUT_PATHS = {
    "SystemIO.everything()": lambda: Policy(SystemIO.everything(), PTRACE_TARGET_CALLS),
    "default=ALLOW": lambda: Policy(default=Action.ALLOW),
    "pledge stdio rpath wpath": lambda: profiles.pledge("stdio rpath wpath").extend(
        PTRACE_TARGET_CALLS
    ),
    "systemd @system-service": lambda: profiles.systemd(
        "@system-service", default_errno="EPERM"
    ).extend(PTRACE_TARGET_CALLS),
    **{
        f"{b.__name__}.everything()": (
            lambda b=b: Policy(b.everything(), SystemIO.everything(), PTRACE_TARGET_CALLS)
        )
        for b in BUILTINS[1:]
    },
}


@pytest.mark.parametrize("name", POLICIES_WITHOUT_PATHS)
def test_no_policy_reaches_another_processs_memory_or_descriptors(name: str, victim: int) -> None:
    policy = POLICIES_WITHOUT_PATHS[name]()
    assert run(_proc_doors, policy, victim) == DENIED_DOORS


def test_the_parent_is_out_of_reach_too() -> None:
    policy = Policy(SystemIO.everything(), PTRACE_TARGET_CALLS)
    assert run(_proc_doors, policy, os.getpid()) == DENIED_DOORS


def test_the_status_names_the_domain() -> None:
    status = run(lambda: Policy(SystemIO.everything()).apply())
    assert status.landlock is not None and status.landlock.domain
    assert status.enforcement == "full"


def test_a_root_process_loses_the_capabilities_that_bypass_the_domain() -> None:
    def caps() -> tuple[int, int]:
        Policy(SystemIO.everything()).apply()
        fields = dict(
            line.split(":\t") for line in Path("/proc/self/status").read_text().splitlines()
        )
        return int(fields["CapEff"], 16), int(fields["CapBnd"], 16)

    effective, bounding = run(caps)
    for cap in (21, 38):  # CAP_SYS_ADMIN, CAP_PERFMON
        assert not effective >> cap & 1 and not bounding >> cap & 1
    if os.geteuid() == 0:
        assert effective >> 1 & 1  # CAP_DAC_OVERRIDE: the rest stays as it was


# -- 4. namespace flags and the always-denied set, under every default --------------------


def _clone_and_unshare(policy: Policy) -> dict[str, str]:
    policy.apply()
    out = {
        name: err(raw, "clone", flag | SIGCHLD, 0, 0, 0, 0) for name, flag in CLONE_FLAGS.items()
    }
    out["unshare"] = err(raw, "unshare", CLONE_FLAGS["CLONE_NEWUSER"])
    out["setns"] = err(raw, "setns", 0, 0)
    out["ptrace"] = err(raw, "ptrace", 0, 0, 0, 0)
    pid = os.fork()  # the neighbour: a plain fork still works
    if pid == 0:
        os._exit(7)
    out["fork"] = str(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    return out


PERMISSIVE = {
    "Threads+Processes, default=ALLOW": lambda: Policy(
        Threads.everything(), Processes.everything(), default=Action.ALLOW
    ),
    "allow_fork, default=ALLOW": lambda: Policy(
        Processes.nothing().allow_fork().allow_wait(), default=Action.ALLOW
    ),
    "allow_fork, default=LOG": lambda: Policy(
        Processes.nothing().allow_fork().allow_wait(), default=Action.LOG
    ),
    "everything of every builtin": lambda: Policy(*(b.everything() for b in BUILTINS)),
    "systemd @system-service": lambda: profiles.systemd("@system-service", default_errno="EPERM"),
    "pledge stdio proc": lambda: profiles.pledge("stdio proc error"),
}


@pytest.mark.parametrize("name", PERMISSIVE)
def test_namespace_flags_stay_denied_under_every_default(name: str) -> None:
    result = run(_clone_and_unshare, PERMISSIVE[name]())
    assert result.pop("fork") == "7"
    expected = "ENOSYS" if name.startswith("pledge") else "EPERM"
    assert result == dict.fromkeys(result, expected), result


def test_naming_a_namespace_flag_explicitly_is_the_exception() -> None:
    newuser = CLONE_FLAGS["CLONE_NEWUSER"]
    policy = Policy(
        Processes.nothing().allow_fork().allow_wait(),
        RuleSet(Rule("clone", Arg(0) & newuser == newuser)),
        default=Action.ALLOW,
    )
    assert policy.decide("clone", newuser | SIGCHLD) == Action.ALLOW
    assert policy.decide("clone", CLONE_FLAGS["CLONE_NEWNET"] | SIGCHLD) != Action.ALLOW


# -- 5. SELF_PID is the process that applies -----------------------------------------------


def test_a_policy_compiled_in_the_parent_names_the_child_as_self() -> None:
    parent = os.getpid()
    for policy in (profiles.pledge("stdio error"), Policy(Signals.everything())):
        policy.compile()  # here, in the parent

        def child(policy: Policy = policy) -> tuple[str, str]:
            policy.apply()
            return err(os.kill, parent, 0), err(os.kill, os.getpid(), 0)

        other, own = run(child)
        assert other in ("EPERM", "ENOSYS") and own == "ok"


def test_a_compiled_filter_refuses_to_load_in_another_process() -> None:
    compiled = Policy(Signals.everything()).compile()
    error = in_child(compiled.apply).error
    assert isinstance(error, SandboxError) and "compiled for process" in str(error)


# -- 6. signals by other doors -------------------------------------------------------------

F_SETOWN, F_SETSIG, F_SETOWN_EX, F_GETOWN = 8, 10, 15, 9
FIOSETOWN, SIOCSPGRP, FIOASYNC = 0x8901, 0x8902, 0x5452


def _owner_doors(policy: Policy, target: int) -> dict[str, str]:
    r, w = os.pipe()
    policy.apply()
    owner_ex = ctypes.create_string_buffer(8)  # struct f_owner_ex {int type; pid_t pid}
    ctypes.memmove(owner_ex, (ctypes.c_int * 2)(1, target), 8)
    pid_buf = ctypes.c_int(target)
    return {
        "F_SETOWN": err(raw, "fcntl", r, F_SETOWN, target),
        "F_SETOWN high bits": err(raw, "fcntl", r, F_SETOWN | HIGH, target),
        "F_SETOWN_EX": err(raw, "fcntl", r, F_SETOWN_EX, ctypes.addressof(owner_ex)),
        "F_SETSIG": err(raw, "fcntl", r, F_SETSIG, signal.SIGKILL),
        "O_ASYNC": err(raw, "fcntl", r, fcntl.F_SETFL, os.O_ASYNC),
        "FIOSETOWN": err(raw, "ioctl", r, FIOSETOWN, ctypes.addressof(pid_buf)),
        "SIOCSPGRP": err(raw, "ioctl", r, SIOCSPGRP, ctypes.addressof(pid_buf)),
        "FIOASYNC": err(raw, "ioctl", r, FIOASYNC, ctypes.addressof(ctypes.c_int(1))),
        # The neighbours: flags and descriptor state of one's own descriptors.
        "F_SETFL O_NONBLOCK": err(raw, "fcntl", r, fcntl.F_SETFL, os.O_NONBLOCK),
        "F_GETOWN": err(raw, "fcntl", w, F_GETOWN, 0),
    }


OWNER_POLICIES = {
    "tcp clients": lambda: Policy(Networking.nothing().allow_tcp_clients()),
    "allow_dup": lambda: Policy(SystemIO.nothing().allow_dup().allow_all_ioctl()),
    "SystemIO.everything()": lambda: Policy(SystemIO.everything()),
    "default=ALLOW": lambda: Policy(default=Action.ALLOW),
    "systemd": lambda: profiles.systemd("@system-service", default_errno="EPERM"),
}


@pytest.mark.parametrize("name", OWNER_POLICIES)
def test_no_descriptor_can_be_made_to_signal_another_process(name: str, victim: int) -> None:
    result = run(_owner_doors, OWNER_POLICIES[name](), victim)
    neighbours = {k: result.pop(k) for k in ("F_SETFL O_NONBLOCK", "F_GETOWN")}
    assert neighbours == {"F_SETFL O_NONBLOCK": "ok", "F_GETOWN": "ok"}
    assert result == dict.fromkeys(result, "EPERM"), result
    assert alive(victim)


def test_the_sigio_kill_from_the_review_is_refused(victim: int) -> None:
    def attack(target: int) -> str:
        r, w = os.pipe()
        Policy(Networking.nothing().allow_tcp_clients(), SystemIO.nothing().allow_write()).apply()
        try:
            fcntl.fcntl(r, F_SETOWN, target)
            fcntl.fcntl(r, F_SETSIG, signal.SIGKILL)
            fcntl.fcntl(r, fcntl.F_SETFL, os.O_ASYNC)
        except OSError as exc:
            return errno.errorcode[exc.errno or 0]
        finally:
            os.write(w, b"x")
        return "ok"

    assert run(attack, victim) == "EPERM"
    assert alive(victim)


def test_pledge_proc_may_still_own_descriptors(victim: int) -> None:
    assert run(_owner_doors, profiles.pledge("stdio proc error"), victim)["F_SETOWN"] == "ok"


def _priority_doors(target: int) -> dict[str, str]:
    Policy(Threads.everything()).apply()
    prio_process, prio_user = 0, 2
    return {
        "setpriority other": err(os.setpriority, prio_process, target, 19),
        "setpriority user": err(os.setpriority, prio_user, 0, 19),
        "getpriority other": err(os.getpriority, prio_process, target),
        "sched_setaffinity other": err(os.sched_setaffinity, target, {0}),
        "sched_getparam other": err(os.sched_getparam, target),
        "setpriority self": err(os.setpriority, prio_process, 0, 5),
        "setpriority own pid": err(os.setpriority, prio_process, os.getpid(), 6),
        "sched_setaffinity self": err(os.sched_setaffinity, 0, {0}),
        "sched_getaffinity self": err(os.sched_getaffinity, 0),
    }


def test_priorities_reach_this_process_only(victim: int) -> None:
    result = run(_priority_doors, victim)
    assert result == {
        "setpriority other": "EPERM", "setpriority user": "EPERM",
        "getpriority other": "EPERM", "sched_setaffinity other": "EPERM",
        "sched_getparam other": "EPERM", "setpriority self": "ok",
        "setpriority own pid": "ok", "sched_setaffinity self": "ok",
        "sched_getaffinity self": "ok",
    }  # fmt: skip
    assert os.getpriority(0, victim) == 0  # the victim kept its nice value


def _signal_doors(target: int) -> dict[str, str]:
    group = os.getpgrp()
    Policy(Signals.everything()).apply()
    got: list[int] = []
    signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
    buf = ctypes.create_string_buffer(128)
    out = {
        "kill other": err(os.kill, target, 0),
        "kill group": err(os.kill, 0, 0),
        "kill -1": err(os.kill, -1, 0),
        "killpg own group": err(os.killpg, group, 0),
        "tgkill other": err(raw, "tgkill", target, target, 0),
        "tkill other": err(raw, "tkill", target, 0),
        "rt_sigqueueinfo other": err(raw, "rt_sigqueueinfo", target, 0, ctypes.addressof(buf)),
        "rt_tgsigqueueinfo other": err(
            raw, "rt_tgsigqueueinfo", target, target, 0, ctypes.addressof(buf)
        ),
        "kill self": err(os.kill, os.getpid(), 0),
        "raise_signal": err(signal.raise_signal, signal.SIGUSR1),
    }
    out["handled"] = str(got)
    return out


def test_signals_reach_this_process_only(victim: int) -> None:
    result = run(_signal_doors, victim)
    assert (result.pop("kill self"), result.pop("raise_signal"), result.pop("handled")) == (
        "ok", "ok", "[1]",
    )  # fmt: skip
    assert result == dict.fromkeys(result, "EPERM"), result
    assert alive(victim)


def test_a_timer_cannot_signal_a_thread_of_another_process(victim: int) -> None:
    def child(target: int) -> tuple[str, str]:
        Policy(Time.everything()).apply()

        class SigEvent(ctypes.Structure):
            _fields_ = (("value", ctypes.c_void_p), ("signo", ctypes.c_int),
                        ("notify", ctypes.c_int), ("tid", ctypes.c_int),
                        ("pad", ctypes.c_int * 11))  # fmt: skip

        sigev_thread_id = 4
        timer = ctypes.c_int()
        other = SigEvent(None, signal.SIGKILL, sigev_thread_id, target)
        own = SigEvent(None, signal.SIGUSR1, sigev_thread_id, threading.get_native_id())
        refs = ctypes.addressof(other), ctypes.addressof(own), ctypes.addressof(timer)
        clock_monotonic = 1
        return (
            err(raw, "timer_create", clock_monotonic, refs[0], refs[2]),
            err(raw, "timer_create", clock_monotonic, refs[1], refs[2]),
        )

    assert run(child, victim) == ("EINVAL", "ok")  # the kernel checks the thread group


# -- 7. implied rules exactly as wide as their rights; TIOCSTI ------------------------------

TIOCSTI, TIOCLINUX = termios.TIOCSTI, 0x541C


def _terminal_doors(policy: Policy) -> dict[str, str]:
    master, slave = os.openpty()
    policy.apply()
    char = ctypes.create_string_buffer(b"x")
    sig = ctypes.c_int(signal.SIGKILL)
    return {
        "TIOCSIG": err(raw, "ioctl", master, 0x40045436, ctypes.addressof(sig)),
        "TIOCSTI": err(raw, "ioctl", slave, TIOCSTI, ctypes.addressof(char)),
        "TIOCSTI high bits": err(raw, "ioctl", slave, TIOCSTI | HIGH, ctypes.addressof(char)),
        "TIOCLINUX": err(raw, "ioctl", slave, TIOCLINUX, ctypes.addressof(char)),
        "TCGETS": err(termios.tcgetattr, slave),
    }


TTY_POLICIES = {
    "Landlock tmp": lambda d: Policy(SystemIO.nothing().allow_write(), Landlock().tmp(d)),
    "SystemIO.everything()": lambda d: Policy(SystemIO.everything()),
    "systemd @system-service": lambda d: profiles.systemd("@system-service", default_errno="EPERM"),
    "default=ALLOW": lambda d: Policy(default=Action.ALLOW),
}


@pytest.mark.parametrize("name", TTY_POLICIES)
def test_nothing_types_into_a_terminal(name: str, tmp_path: Path) -> None:
    result = run(_terminal_doors, TTY_POLICIES[name](tmp_path))
    assert result.pop("TCGETS") == "ok"
    assert result == dict.fromkeys(result, "EPERM"), result


def _bind_udp(policy: Policy) -> tuple[str, str]:
    import socket

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    policy.apply()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return err(sock.bind, ("127.0.0.1", 0)), err(sock.connect, ("127.0.0.1", port))


@pytest.mark.parametrize("grant", ["tmp", "bind_tcp", "connect_tcp"])
def test_a_udp_client_never_gets_bind_from_a_landlock_right(grant: str, tmp_path: Path) -> None:
    ll = {"tmp": Landlock().tmp(tmp_path), "bind_tcp": Landlock().bind_tcp(8080),
          "connect_tcp": Landlock().connect_tcp(8080)}[grant]  # fmt: skip
    policy = Policy(Networking.nothing().allow_udp_clients(), ll)
    assert run(_bind_udp, policy) == ("EPERM", "ok")


def test_make_fifo_implies_mknod_of_fifos_only(tmp_path: Path) -> None:
    def child() -> tuple[str, str, str]:
        from isolates.sandbox import AccessFs

        Policy(Landlock().allow(tmp_path, AccessFs.MAKE_FIFO)).apply()
        return (
            err(os.mkfifo, tmp_path / "fifo"),
            err(os.mknod, tmp_path / "null", 0o600 | 0o020000, os.makedev(1, 3)),
            err(os.mknod, tmp_path / "file", 0o600 | 0o100000),
        )

    assert run(child) == ("ok", "EPERM", "EPERM")


# -- 8. a grant is on the object it named when the policy was built -------------------------


def _job(tmp_path: Path) -> tuple[Path, Policy]:
    job = tmp_path / "job"
    (job / "inputs").mkdir(parents=True)
    (job / "inputs" / "data").write_text("input")
    policy = Policy(
        SystemIO.nothing().allow_read().allow_open_readonly().allow_metadata(),
        Landlock().tmp(job).read(job / "inputs"),
    )
    return job, policy


def _read_after_apply(policy: Policy, path: Path) -> str:
    policy.apply()
    return path.read_text()


def test_a_symlink_planted_in_place_of_a_grant_is_refused(tmp_path: Path) -> None:
    job, policy = _job(tmp_path)
    assert run(_read_after_apply, policy, job / "inputs" / "data") == "input"  # as built
    (job / "inputs").rename(job / "away")
    (job / "inputs").symlink_to("/")
    outcome = in_child(_read_after_apply, policy, job / "inputs" / "etc" / "hostname")
    assert isinstance(outcome.error, SandboxError) and outcome.error.errno == errno.ESTALE
    assert "no longer the object the policy granted" in str(outcome.error)


def test_a_grant_replaced_by_another_directory_is_refused(tmp_path: Path) -> None:
    job, policy = _job(tmp_path)
    (job / "inputs").rename(job / "away")
    (job / "inputs").mkdir()
    assert isinstance(in_child(policy.apply).error, SandboxError)


def test_a_missing_grant_may_appear_but_not_as_a_symlink(tmp_path: Path) -> None:
    later = tmp_path / "later"
    policy = Policy(SystemIO.everything(), Landlock().read(later, missing_ok=True))
    later.symlink_to("/etc")
    error = in_child(policy.apply).error
    assert isinstance(error, SandboxError) and error.errno == errno.ELOOP
    later.unlink()
    later.mkdir()
    (later / "f").write_text("real")
    assert run(_read_after_apply, policy, later / "f") == "real"


# -- 9. path-based metadata changes Landlock cannot see --------------------------------------


def _metadata_doors(policy: Policy, inside: Path, outside: Path) -> dict[str, str]:
    fd = os.open(inside, os.O_RDONLY)
    policy.apply()
    return {
        "chmod outside": err(os.chmod, outside, 0o4777),
        "utime outside": err(os.utime, outside, (0, 0)),
        "chmod inside by path": err(os.chmod, inside, 0o600),
        "fchmod inside": err(os.chmod, fd, 0o640),
        "futimens inside": err(os.utime, fd, (1, 1)),
    }


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    d = tmp_path / "d"
    d.mkdir()
    (d / "f").write_text("x")
    (tmp_path / "outside").write_text("y")
    return d, d / "f", tmp_path / "outside"


def test_builtins_change_no_metadata_by_path_beside_a_landlock_domain(tmp_path: Path) -> None:
    d, inside, outside = _files(tmp_path)
    before = outside.stat()
    result = run(
        _metadata_doors, Policy(SystemIO.everything(), Landlock().read(d)), inside, outside
    )
    assert result == {
        "chmod outside": "EPERM", "utime outside": "EPERM", "chmod inside by path": "EPERM",
        "fchmod inside": "ok", "futimens inside": "ok",
    }  # fmt: skip
    after = outside.stat()
    assert (after.st_mode, after.st_mtime) == (before.st_mode, before.st_mtime)
    assert inside.stat().st_mode & 0o777 == 0o640


def test_profiles_change_no_metadata_by_path_beside_a_landlock_domain(tmp_path: Path) -> None:
    d, inside, outside = _files(tmp_path)
    pledged = profiles.pledge("stdio rpath wpath fattr error", unveil={str(d): "rw"})
    systemd = profiles.systemd("@system-service", default_errno="EPERM").extend(Landlock().read(d))
    for policy, denied in ((pledged, "ENOSYS"), (systemd, "EPERM")):
        result = run(_metadata_doors, policy, inside, outside)
        assert result["chmod outside"] == result["utime outside"] == denied
        assert result["fchmod inside"] == result["futimens inside"] == "ok"


def test_naming_the_call_in_a_ruleset_of_ones_own_keeps_it(tmp_path: Path) -> None:
    d, inside, outside = _files(tmp_path)
    policy = Policy(SystemIO.everything(), RuleSet("chmod", "fchmodat"), Landlock().read(d))
    assert run(_metadata_doors, policy, inside, outside)["chmod outside"] == "ok"


def test_without_landlock_the_builtins_keep_their_path_forms(tmp_path: Path) -> None:
    _, inside, outside = _files(tmp_path)
    assert (
        run(_metadata_doors, Policy(SystemIO.everything()), inside, outside)["utime outside"]
        == "ok"
    )


# -- 11. dropping privileges in stages -------------------------------------------------------


def test_a_stricter_policy_stacks_on_one_without_uname_or_prctl_rules(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("sub")
    (tmp_path / "g").write_text("g")

    def child() -> tuple[str, str, str]:
        first = Policy(SystemIO.everything(), Processes.nothing().allow_prctl_name(),
                       Landlock().read(tmp_path))  # fmt: skip
        second = Policy(SystemIO.everything(), Landlock().read(tmp_path / "sub"))
        second.compile()  # libseccomp needs pipe2: compile before the first is in force
        first.apply()
        second.apply()
        return (tmp_path / "sub" / "f").read_text(), err((tmp_path / "g").read_text), err(os.uname)

    assert run(child) == ("sub", "EACCES", "EPERM")


def test_stacking_landlock_where_opens_are_denied_says_why(tmp_path: Path) -> None:
    def child() -> str:
        second = Policy(Landlock().read(tmp_path))
        second.compile()
        Policy().apply()
        try:
            second.apply()
        except SandboxError as exc:
            return str(exc)
        return "applied"

    assert "openat(O_PATH)" in run(child)


def test_a_confined_thread_cannot_load_a_filter_onto_the_others() -> None:
    def child() -> tuple[str, str, str]:
        prog = (ctypes.c_uint64 * 1)(0x7FFF0000_00000006)  # one "ret ALLOW" instruction
        fprog = (ctypes.c_uint64 * 2)(1, ctypes.addressof(prog))
        seccomp_set_mode_filter, tsync, landlock_tsync = 1, 1, 1 << 3

        def confined() -> tuple[str, str, str]:
            return (
                err(raw, "seccomp", seccomp_set_mode_filter, tsync, ctypes.addressof(fprog)),
                err(raw, "landlock_restrict_self", -1, landlock_tsync),
                err(raw, "seccomp", seccomp_set_mode_filter, 0, ctypes.addressof(fprog)),
            )

        result = Policy(SystemIO.everything()).run(confined)
        os.uname()  # the caller's thread stays unconfined
        return result

    assert run(child) == ("EPERM", "EPERM", "ok")


def test_a_process_wide_policy_may_stack_process_wide() -> None:
    def child() -> None:
        second = Policy(SystemIO.everything())
        second.compile(all_threads=True)
        Policy(SystemIO.everything()).apply(all_threads=True)
        second.apply(all_threads=True)

    assert in_child(child).ok


def test_allow_fork_gives_no_child_to_our_parent() -> None:
    def child() -> tuple[str, str]:
        Policy(Processes.nothing().allow_fork().allow_wait()).apply()
        clone_parent = 0x00008000
        refused = err(raw, "clone", clone_parent | SIGCHLD, 0, 0, 0, 0)
        pid = os.fork()  # the neighbour: a child of our own
        if pid == 0:
            os._exit(0)
        return refused, str(os.waitpid(pid, 0)[1])

    assert run(child) == ("EPERM", "0")

"""Limits(processes=N), in real isolates, workers and ``isolates run``, as root: the
parent counts the isolate's tasks and answers every clone; N tasks at once, itself
included, and the next clone fails with EAGAIN; a fork bomb stops at N and leaves
nothing behind; and the count never lets run a clone the policy itself refuses."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import threading
import time

import pytest

from isolates.orchestrator import (
    Limits,
    Namespaces,
    ResourceExceeded,
    Restart,
    Supervisor,
    WorkerFailed,
    isolate,
)
from isolates.orchestrator._lifecycle import State
from isolates.orchestrator.testing import assert_denied
from isolates.sandbox import Action, Policy, PolicyError, Processes, Rule, Threads, Time
from tests.forked import in_child
from tests.orchestrator import limit_targets as t

THREADS = Policy(Threads.everything())
FORKS = Policy(Processes.everything(), Time.everything(), "getpgrp")


@pytest.mark.parametrize("start", ["fork-server", "exec"])
def test_four_tasks_allow_three_threads_and_refuse_the_next(start: str) -> None:
    f = isolate(THREADS, limits=Limits(processes=4), start=start)(t.start_threads)
    assert f(5) == ["ok", "ok", "ok", "can't start new thread", "can't start new thread"]
    # the threads ended: the count is of live tasks, so the next call starts three again
    assert f(3) == ["ok", "ok", "ok"]
    assert isolate(THREADS, start=start)(t.start_threads)(5) == ["ok"] * 5  # no limit


def test_four_tasks_allow_three_children_and_fail_the_next_fork_with_eagain() -> None:
    f = isolate(FORKS, limits=Limits(processes=4))(t.start_children)
    assert f(5) == ["ok", "ok", "ok", "EAGAIN", "EAGAIN"]


def test_an_uncaught_refusal_is_resource_exceeded_naming_the_clone() -> None:
    f = isolate(THREADS, limits=Limits(processes=1), name="lonely")(t.start_one_thread)
    with pytest.raises(ResourceExceeded) as err:
        f()
    exc = err.value
    assert (exc.name, exc.resource) == ("lonely", "processes")
    assert exc.observed == "clone refused (EAGAIN) with 1 tasks live"
    assert "seccomp notify" in str(exc) and "1 tasks" in str(exc)
    assert isolate(THREADS, limits=Limits(processes=2))(t.start_one_thread)() == "started"


def _children() -> list[int]:
    found = []
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            found += [int(pid) for pid in f.read().split()]
    return found


def test_a_fork_bomb_stops_at_the_limit_and_leaves_nothing_behind() -> None:
    f = isolate(FORKS, limits=Limits(processes=8), start="exec")(t.fork_bomb)
    outcome: list[tuple[int, int]] = []
    bombing = threading.Thread(target=lambda: outcome.append(f(2.0)))
    bombing.start()
    most = 0
    while bombing.is_alive():  # watched from outside: every process of its group
        for child in _children():
            most = max(most, len(t.group_members(child)))
        time.sleep(0.005)
    bombing.join()
    group, refused = outcome[0]
    assert 2 <= most <= 8 and refused > 0
    assert t.group_members(group) == []  # all of it killed and reaped


def test_the_count_never_runs_a_clone_the_policy_refuses() -> None:
    # an errno rule keeps its errno (not EAGAIN, not a run clone) ...
    refusing = Policy("wait4", Rule("clone", action=Action.ERRNO(errno.EACCES)))
    assert_denied(os.fork, policy=refusing, limits=Limits(processes=8), errno=errno.EACCES,
                  syscall="clone")  # fmt: skip
    # ... a policy that kills for it still kills, and names the call
    killing = Policy(Time.everything(), default=Action.KILL_PROCESS)
    assert_denied(os.fork, policy=killing, limits=Limits(processes=8), syscall="clone")
    # and the allowed neighbour forks under the same limit
    assert isolate(FORKS, limits=Limits(processes=8))(t.forks_with_errno)() == "forked"


def test_a_pid_namespace_mirror_is_not_counted() -> None:
    ns = Namespaces(user=True, pid=True)
    f = isolate(THREADS, namespaces=ns, limits=Limits(processes=2))(t.start_threads)
    assert f(2) == ["ok", "can't start new thread"]


@pytest.mark.parametrize("value", [0, -1, True, 2.5, "4"])
def test_an_invalid_processes_limit_names_its_field(value: object) -> None:
    with pytest.raises(PolicyError, match=r"Limits\.processes"):
        Limits(processes=value)  # type: ignore[arg-type]


def test_a_worker_counts_its_own_tasks_and_a_restart_starts_from_zero() -> None:
    def run() -> tuple[list[str], list[list[str]], int]:
        sup = Supervisor(limits=Limits(processes=3))
        sup.add_worker("b", t.threads_of_worker, args=(3,), policy=THREADS,
                       limits=Limits(processes=8))  # fmt: skip
        w = sup.add_worker("a", t.threads_then_fail, args=(3,), policy=THREADS,
                           restart=Restart.on_failure(limit=1, backoff=0.01))  # fmt: skip
        sup.connect(w, sup, list[str], name="said")
        sup.start()
        runs = [sup.channel("said").recv(timeout=30)]
        while w.restarts == 0 or w.state not in (State.RELEASED, State.FAILED):
            time.sleep(0.01)
        runs.append(sup.channel("said").recv(timeout=30))  # the renewed channel
        with contextlib.suppress(WorkerFailed):
            sup.join(timeout=60)
        return sup.workers["b"].result, runs, w.restarts

    b, runs, restarts = in_child(run).unwrap()
    assert b == ["ok", "ok", "ok"] and restarts == 1
    assert runs == [["ok", "ok", "can't start new thread"]] * 2


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "isolates.orchestrator._cli", "run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


FORK_FIVE = """
import os, time
said = []
for _ in range(5):
    try:
        if os.fork() == 0:
            time.sleep(0.5); os._exit(0)
        said.append("ok")
    except BlockingIOError:
        said.append("EAGAIN")
print(" ".join(said))
"""


def test_isolates_run_processes_refuses_the_fork_past_the_limit() -> None:
    done = _run("--processes", "4", "--", sys.executable, "-c", FORK_FIVE)
    assert (done.returncode, done.stdout.split()) == (0, ["ok"] * 3 + ["EAGAIN"] * 2)
    # execs still run under the count: a shell starting programs one after another
    loop = "for i in 1 2 3 4 5; do /bin/true; done; echo ok"
    chain = _run("--processes", "3", "--", "sh", "-c", loop)
    assert (chain.returncode, chain.stdout) == (0, "ok\n")


def test_isolates_run_keeps_the_policys_own_refusal_of_fork() -> None:
    code = "import os\ntry:\n    os.fork()\nexcept OSError as e:\n    print(e.errno)"
    done = _run("--processes", "8", "--pledge", "stdio rpath", "--read", "/",
                "--", sys.executable, "-c", code)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, str(errno.EPERM))


BOMB = "b(){ b|b& };b"


def test_isolates_run_contains_a_shell_fork_bomb_and_leaves_nothing_behind() -> None:
    marker = f"bomb-{os.getpid()}"  # $0 of every shell of the bomb: found in /proc
    began = time.monotonic()
    bomb = ["bash", "-c", f"{BOMB}; sleep 30", marker]
    done = _run("--processes", "8", "--wall-time", "2", "--", *bomb)
    assert done.returncode == 128 + 9 and time.monotonic() - began < 30
    assert "isolates run: killed: wall time limit 2 s" in done.stderr
    assert "fork: retry: Resource temporarily unavailable" in done.stderr
    assert _left(marker) == []
    # a bomb whose first shell returns at once: run ends the rest of its tree
    quick = _run("--processes", "8", "--", "sh", "-c", BOMB, marker)
    assert quick.returncode == 0 and _left(marker) == []


def _left(marker: str) -> list[int]:
    """The processes whose command line names ``marker``."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if marker.encode() in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def test_a_confined_supervisor_counts_its_workers_and_reads_nothing_but_proc() -> None:
    def run() -> tuple[list[str], str, str]:
        sup = Supervisor(policy=Policy(Time.everything()))
        sup.add_worker("a", t.threads_of_worker, args=(3,), policy=THREADS,
                       limits=Limits(processes=3))  # fmt: skip
        sup.run(timeout=60)
        try:
            open("/etc/hostname").close()
            outside = "opened"
        except PermissionError as exc:
            outside = errno.errorcode[exc.errno or 0]
        with open(f"/proc/{os.getpid()}/status") as f:
            proc = "read" if f.read() else "empty"
        return sup.workers["a"].result, outside, proc

    assert in_child(run).unwrap() == (["ok", "ok", "can't start new thread"], "EACCES", "read")


def test_no_clone_leaves_the_count_through_clone_parent_or_clone3() -> None:
    anything = Policy(Rule("clone"), "clone3", "wait4", "getpid")
    f = isolate(anything, limits=Limits(processes=8))(t.escape_the_count)
    assert f() == ("EPERM", "ENOSYS", "forked")


THREAD_FORKS = """
import os, threading, time
t = threading.Thread(target=os.fork)
t.start(); t.join()
time.sleep(30)
"""


def test_isolates_run_kills_a_killed_for_fork_made_from_a_thread() -> None:
    python = ["--read", os.path.realpath(sys.base_exec_prefix), "--read", sys.prefix]
    done = _run("--processes", "8", "--kill", "--pledge", "stdio rpath", *python, "--",
                sys.executable, "-I", "-c", THREAD_FORKS, timeout=30)  # fmt: skip
    assert done.returncode == 128 + 9
    assert "isolates run: killed: clone is not allowed by the policy" in done.stderr
    # the allowed neighbour: a thread alone runs under the same options
    thread = "import threading; threading.Thread().start()"
    alone = _run("--processes", "8", "--kill", "--pledge", "stdio rpath", *python, "--",
                 sys.executable, "-I", "-c", thread)  # fmt: skip
    assert alone.returncode == 0, alone.stderr

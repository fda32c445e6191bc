"""Isolates and workers cannot reach outside: their parent's memory, or paths a worker
swapped under a grant before a restart."""

from __future__ import annotations

import os
from pathlib import Path

from isolates.orchestrator import Restart, Supervisor, WorkerFailed
from isolates.sandbox import Landlock, Policy, SystemIO
from tests.forked import in_child
from tests.orchestrator import escapes

DENIED = {"parent mem": "EACCES", "parent environ": "EACCES", "own mem": "ok"}


def test_an_isolate_cannot_write_its_callers_memory() -> None:
    assert escapes.poke_parent(os.getpid()) == DENIED


def test_a_worker_cannot_write_its_supervisors_memory() -> None:
    def run() -> object:
        sup = Supervisor(policy=Policy(SystemIO.everything()))
        w = sup.add_worker("poke", escapes.poke_supervisor, args=(os.getpid(),),
                           policy=Policy(SystemIO.everything()))  # fmt: skip
        sup.run(timeout=30)
        return w.result

    assert in_child(run).unwrap() == DENIED


def test_a_restart_does_not_follow_a_symlink_the_worker_planted(tmp_path: Path) -> None:
    job = tmp_path / "job"
    (job / "inputs").mkdir(parents=True)
    policy = Policy(
        SystemIO.everything(), Landlock().tmp(job).read(job / "inputs").python_runtime()
    )

    def run() -> str:
        sup = Supervisor(policy=Policy(SystemIO.everything()))
        sup.add_worker("job", escapes.plant_symlink_then_read, args=(str(job),), policy=policy,
                       restart=Restart.on_failure(limit=1, backoff=0.01))  # fmt: skip
        try:
            sup.run(timeout=30)
        except WorkerFailed as exc:
            return str(exc)
        return "the restarted worker ran"

    message = in_child(run).unwrap()
    assert "no longer the object the policy granted" in message, message
    assert str(job / "inputs") in message
    assert (job / "inputs").is_symlink()  # the first run really did plant it


def test_a_program_under_isolates_run_cannot_read_its_callers_environment() -> None:
    from tests.orchestrator.test_cli import isolates

    me = os.getpid()
    outside = isolates("run", "--", "cat", f"/proc/{me}/environ")
    assert outside.returncode != 0 and "Permission denied" in outside.stderr
    own = isolates("run", "--", "sh", "-c", "cat /proc/self/environ > /dev/null && echo ok")
    assert own.stdout.strip() == "ok", own.stderr

"""``isolates trace``: real programs traced through seccomp user notification.

The tracer runs in a forked child (it becomes a subreaper and reaps every child it has)
or as the command line in a subprocess. Covers are proven both ways: the BPF a covering
policy compiles to allows every call traced, and the program really runs under it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import isolates.sandbox as sandbox
from isolates.orchestrator._cli.trace import TraceError, call_of, trace
from isolates.orchestrator._cli.trace_cover import Cover, _greedy, covers, relevance
from isolates.orchestrator._cli.traced import SELF, Trace, TracedCall
from isolates.sandbox import Action, Policy, RuleSet, profiles
from isolates.sandbox._bpf import NATIVE_ARCH, decide, evaluate
from isolates.sandbox._kernel import Notification, load_seccomp
from isolates.sandbox._kernel_trace import MARKER, notify_program
from isolates.sandbox._syscalls import number
from tests.forked import Outcome, in_child

CLI = [sys.executable, "-m", "isolates.orchestrator._cli"]
PYTHON = sys.executable
READ_AND_PRINT = "import sys; sys.stdout.write(open(sys.argv[1]).read())"
THREADED = "import threading; t = threading.Thread(target=print, args=('x',)); t.start(); t.join()"


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "hello.txt"
    path.write_text("hello\n")
    return path


def traced(*argv: str) -> Trace:
    result: Trace = in_child(trace, list(argv), None, relevance()).unwrap()
    return result


def cli(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "report.json"
    done = subprocess.run([*CLI, "trace", "--json", "-o", str(out), "--", *argv],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return done, json.loads(out.read_text()) if out.exists() else {}


# --- what is counted ----------------------------------------------------------------------


def test_true_through_the_command_line(tmp_path: Path) -> None:
    done, report = cli(tmp_path, "true")
    assert done.returncode == 0, done.stderr
    assert (report["command"], report["exit_code"], report["tasks"]) == (["true"], 0, 1)
    assert report["syscalls"]["execve"] == 1 and report["syscalls"]["exit_group"] == 1
    assert report["calls"] == sum(report["syscalls"].values()) and report["syscalls"]["mmap"] > 1
    assert "Processes.nothing().allow_exec()" in report["builtins"]["cover"]
    assert {"exec", "prot_exec"} <= set(report["pledge"]["cover"].split())
    assert set(report["systemd"]) == {"cover", "chosen", "always", "uncovered"}


def test_text_report_on_standard_error(text_file: Path) -> None:
    done = subprocess.run([*CLI, "trace", "--", "cat", str(text_file)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.stdout == "hello\n"  # the program's output is its own
    assert "exited with 0 (1 task," in done.stderr
    assert "   calls  syscall" in done.stderr and "  openat\n" in done.stderr
    for family in ("builtins: Policy(", "pledge: '", "systemd: '"):
        assert f"\n{family}" in done.stderr


def test_cat_and_python_make_the_expected_calls(text_file: Path) -> None:
    cat = traced("cat", str(text_file)).counts()
    assert cat["openat"] >= 2 and cat["read"] >= 1  # the loader's and the file's
    python = traced(PYTHON, "-c", READ_AND_PRINT, str(text_file)).counts()
    assert python["openat"] > 10 and python["read"] > 10 and python["write"] >= 1


def test_threads_and_children_are_followed(tmp_path: Path) -> None:
    forks = traced("sh", "-c", "/usr/bin/true; /usr/bin/true")
    assert len(forks.tasks) == 3 and forks.counts()["execve"] == 3  # sh and two children
    assert forks.counts()["wait4"] >= 2
    threads = traced(PYTHON, "-c", THREADED)
    assert len(threads.tasks) == 2
    assert "clone" in threads.counts() and "clone3" in threads.counts()  # clone3: ENOSYS
    builtins = covers(threads)[0]
    assert "Threads.allow_create" in builtins.chosen


def test_exit_codes_are_returned(tmp_path: Path) -> None:
    done, report = cli(tmp_path, "sh", "-c", "exit 3")
    assert done.returncode == 3 and report["exit_code"] == 3
    done, report = cli(tmp_path, "sh", "-c", "kill -KILL $$")
    assert done.returncode == 128 + signal.SIGKILL == report["exit_code"]


def test_unknown_command_exits_127(tmp_path: Path) -> None:
    done, report = cli(tmp_path, "no-such-command-here")
    assert done.returncode == 127 and report == {}
    assert done.stderr == "isolates trace: no-such-command-here: command not found\n"


def test_a_second_listener_is_refused_with_a_reason() -> None:
    def under_a_listener() -> str:
        load_seccomp(Policy(default=Action.ALLOW).compile().bpf, listener=True)
        with pytest.raises(TraceError) as caught:
            trace(["true"])
        return str(caught.value)

    assert "notification listener is already installed" in in_child(under_a_listener).unwrap()


# --- covers are real ----------------------------------------------------------------------


def _policies(found: list[Cover]) -> dict[str, tuple[Policy, Policy]]:
    """Per family: (the cover, the cover plus the syscalls it does not cover)."""
    builtins, promises, groups = found
    rulesets = [eval(text, vars(sandbox)) for text in builtins.spelled()]  # what we print
    extra = RuleSet.nothing().allow(*builtins.uncovered) if builtins.uncovered else RuleSet()
    spec = " ".join(["@default", *groups.chosen])
    return {
        "builtins": (Policy(*rulesets), Policy(*rulesets, extra)),
        "pledge": (profiles.pledge(" ".join(promises.chosen)),
                   profiles.pledge(" ".join(promises.chosen)).extend(
                       RuleSet.nothing().allow(*promises.uncovered))),
        "systemd": (profiles.systemd(spec), profiles.systemd(" ".join([spec, *groups.uncovered]))),
    }  # fmt: skip


@pytest.mark.parametrize("program", ["true", "cat", "python", "threads"])
def test_covers_allow_every_traced_call_and_no_more(program: str, text_file: Path) -> None:
    argv = {"true": ["true"], "cat": ["cat", str(text_file)],
            "python": [PYTHON, "-c", READ_AND_PRINT, str(text_file)],
            "threads": [PYTHON, "-c", THREADED]}[program]  # fmt: skip
    result = traced(*argv)
    found = covers(result)
    calls = [c for c in result.calls if c.name != "clone3"]
    for family, (cover, completed) in _policies(found).items():
        uncovered = next(c.uncovered for c in found if c.family == family)
        bpf, full = cover.compile().bpf, completed.compile().bpf
        assert all(decide(full, c.nr, c.args) == Action.ALLOW for c in calls), family
        for call in calls:  # exactly the calls of the uncovered names are denied
            allowed = decide(bpf, call.nr, call.args) == Action.ALLOW
            assert allowed or call.name in uncovered, (family, call)
        denied = {c.name for c in calls if decide(bpf, c.nr, c.args) != Action.ALLOW}
        assert denied == set(uncovered), family


def _run_under(policy: Policy, argv: list[str]) -> Outcome:
    path = shutil.which(argv[0])
    assert path is not None

    def confined() -> None:
        policy.apply(all_threads=True)
        os.execv(path, argv)

    policy.compile()
    return in_child(confined)


@pytest.mark.parametrize("program", ["cat", "python"])
def test_the_program_runs_under_its_builtin_cover(program: str, text_file: Path) -> None:
    argv = {"cat": ["cat", str(text_file)],
            "python": [PYTHON, "-c", READ_AND_PRINT, str(text_file)]}[program]  # fmt: skip
    _, completed = _policies(covers(traced(*argv)))["builtins"]
    killing = Policy(*completed.rulesets[1:], default=Action.KILL_PROCESS)
    outcome = _run_under(killing, argv)
    assert (outcome.signal, outcome.exitcode) == (None, 0)
    without_files = [rs for rs in completed.rulesets[1:] if rs.name != "SystemIO"]
    narrower = Policy(*without_files, default=Action.KILL_PROCESS)
    assert _run_under(narrower, argv).signal == signal.SIGSYS  # the cover is what lets it run


# --- the pieces ---------------------------------------------------------------------------


def test_the_filter_notifies_everything_but_the_handoff() -> None:
    program, sendmsg = notify_program(), number("sendmsg")
    notify, allow = 0x7FC00000, 0x7FFF0000
    assert evaluate(program, sendmsg, [3, 0, MARKER << 32]) == allow
    assert evaluate(program, sendmsg, [3, 0, 0]) == notify
    assert evaluate(program, sendmsg, [3, 0, (MARKER + 1) << 32]) == notify
    assert evaluate(program, number("getpid")) == notify
    assert evaluate(program, sendmsg, [3, 0, MARKER << 32], arch=0x40000003) == notify  # i386


def test_a_call_keeps_only_compared_arguments_and_self() -> None:
    me, kill = os.getpid(), number("kill")
    own = call_of(Notification(1, me, kill, NATIVE_ARCH, (me, 9, 7, 7, 7, 7)), relevance())
    assert own.args[0] == SELF and own.args[2:] == (0, 0, 0, 0)
    other = call_of(Notification(1, me, kill, NATIVE_ARCH, (1, 9, 0, 0, 0, 0)), relevance())
    assert other.args[0] == 1
    getpid = call_of(Notification(1, me, number("getpid"), NATIVE_ARCH, (5,) * 6), relevance())
    assert getpid == TracedCall(number("getpid"))


def test_greedy_prefers_coverage_then_prunes_what_became_redundant() -> None:
    calls = frozenset(TracedCall(n) for n in range(6))
    sets = {"p": {0, 1, 2, 3}, "q": {0, 1, 4}, "r": {2, 3, 5}, "s": {5}}
    sizes = {name: len(sets[name]) for name in "pqr"}

    def covered(chosen: frozenset[str]) -> frozenset[TracedCall]:
        return frozenset(TracedCall(n) for name in chosen for n in sets[name])

    assert _greedy(calls, sizes, covered) == {"q", "r"}  # p went first, then was redundant
    assert _greedy(calls, {"s": 1}, covered) == {"s"}  # covers what it can, then stops


def test_a_tcp_clients_cover_is_allow_tcp_clients_not_a_servers(tmp_path: Path) -> None:
    import http.server
    import threading

    handler = http.server.SimpleHTTPRequestHandler
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        done, report = cli(tmp_path, "curl", "-s", "-o", "/dev/null", url)
    finally:
        server.shutdown()
    assert done.returncode == 0
    builtins = " ".join(report["builtins"]["cover"])
    assert "allow_tcp_clients" in builtins and "allow_start_tcp_servers" not in builtins


NESTED = """
from isolates.orchestrator import isolate
from isolates.sandbox import Action, Policy
def add(x: int) -> int:
    return x + 1
print(isolate(Policy(default=Action.KILL_PROCESS))(add)(1))
"""


def test_a_program_that_uses_isolates_itself_can_be_traced(tmp_path: Path) -> None:
    done, report = cli(tmp_path, PYTHON, "-c", NESTED)
    assert (done.returncode, done.stdout, report["exit_code"]) == (0, "2\n", 0), done.stderr
    assert report["tasks"] >= 2 and report["syscalls"]["seccomp"] >= 2


def test_sigterm_to_trace_reaches_the_program_and_the_report_is_written(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    script = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); "
        "print('up', flush=True); time.sleep(30)"
    )
    proc = subprocess.Popen([*CLI, "trace", "--json", "-o", str(out), "--", PYTHON, "-c", script],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 7  # the program's own exit, through its handler
    assert json.loads(out.read_text())["exit_code"] == 7

"""``isolates run`` as the program's answering parent (orchestrator/_cli/run_report.py): by
default the policy's errno denials are answered by run and said when the program fails,
and the program sees what it would see with run in place (``--no-report``): the same
answers, exit status, signals, and descriptors, and processes it leaves behind keep
their answers. Every run is a real ``isolates run`` in a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "isolates.orchestrator._cli"]
PYTHON = [a for p in sorted({sys.base_prefix, sys.prefix}) for a in ("--read", p)]


def run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*CLI, "run", *args], capture_output=True, text=True, timeout=60, **kw
    )


def python(tmp_path: Path, code: str, *options: str) -> list[str]:
    """Options and command: ``code`` as a script, run by this Python under ``options``."""
    script = tmp_path / "program.py"
    script.write_text(code)
    return [*options, *PYTHON, "--read", str(script), "--", sys.executable, "-I", str(script)]


DENIED = """
import ctypes, errno, socket, sys
try:
    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
except OSError as exc:
    print(errno.errorcode[exc.errno])
libc = ctypes.CDLL(None, use_errno=True)
print(libc.syscall(101, 0, 0, 0, 0), errno.errorcode[ctypes.get_errno()])  # ptrace(TRACEME)
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("mode", ["default", "--report", "--no-report"])
@pytest.mark.parametrize("status", [0, 3])
def test_denials_are_answered_alike_and_said_when_the_program_fails_or_asked(
    tmp_path: Path, mode: str, status: int
) -> None:
    options = [] if mode == "default" else [mode]
    command = python(tmp_path, DENIED, *options, "--pledge", "stdio rpath")
    done = run(*command, str(status))
    assert done.returncode == status, done.stderr
    assert done.stdout.split() == ["EPERM", "-1", "EPERM"]  # the same answers in every mode
    said = mode == "--report" or (mode == "default" and status != 0)
    assert ("2 calls denied by the policy:" in done.stderr) == said, done.stderr
    if said:
        assert (
            "socket(AF_INET6, SOCK_DGRAM|SOCK_CLOEXEC, 0) -> EPERM; allowed by --allow socket"
            in (done.stderr)
        )
        # ptrace is refused by the guards: no option lifts it, and the report says so.
        assert "ptrace(" in done.stderr and "allowed by no rule or option" in done.stderr
        assert "--allow ptrace" not in done.stderr


def test_a_signal_that_kills_the_program_ends_run_the_same_way(tmp_path: Path) -> None:
    code = "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n"
    for options in ([], ["--no-report"]):
        done = run(*python(tmp_path, code, *options))
        assert done.returncode == -signal.SIGTERM, (options, done.stderr)


TRAPS_TERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
print("ready", flush=True)
time.sleep(30)
"""


def test_signals_sent_to_run_reach_the_program(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "run", *python(tmp_path, TRAPS_TERM)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 7  # the program's own handler ran: it got the signal
    finally:
        proc.kill()
        proc.wait()


def test_the_program_never_holds_the_listener(tmp_path: Path) -> None:
    """A listener in the program's hands would let it answer (CONTINUE) its own denials."""
    code = (
        "import os\n"
        "links = []\n"
        "for n in os.listdir('/proc/self/fd'):\n"
        "    try:\n"
        "        links.append(os.readlink(f'/proc/self/fd/{n}'))\n"
        "    except OSError:\n"
        "        pass  # the listing's own descriptor\n"
        "print(sum('seccomp' in link for link in links), len(links) > 2)\n"
    )
    done = run(*python(tmp_path, code, "--pledge", "stdio rpath", "--read", "/proc"))
    assert (done.returncode, done.stdout) == (0, "0 True\n"), done.stderr


LEAVES_A_DAEMON = """
import os, subprocess, sys
out = sys.argv[1]
subprocess.Popen(
    ["/bin/sh", "-c", "sleep 0.5; exec " + sys.executable + " -I -c '"
     "import socket, sys\\n"
     "try:\\n    socket.socket()\\n"
     "except OSError as e:\\n    open(sys.argv[1], \\"w\\").write(str(e.errno))' " + out],
    start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
"""


def test_processes_left_behind_keep_their_answers_after_the_program_ends(
    tmp_path: Path,
) -> None:
    """A daemon's execs and denials after the program (and run) ended are still answered
    as the policy says (EPERM, not the ENOSYS of a parked call with no listener), and
    run does not wait for it."""
    out = tmp_path / "out" / "errno"
    out.parent.mkdir()
    command = python(tmp_path, LEAVES_A_DAEMON, "--pledge", "stdio rpath wpath cpath proc exec",
                     "--exec", "/bin", "--exec", "/usr/bin", "--rw", str(out.parent),
                     "--read", "/dev/null", "--write", "/dev/null")  # fmt: skip
    began = time.monotonic()
    done = run(*command, str(out))
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - began < 10 and not out.exists()  # run ended first
    deadline = time.monotonic() + 20
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert out.read_text() == "1"  # EPERM: still answered by the policy


def test_killing_run_kills_the_program(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "run", *python(tmp_path, TRAPS_TERM.replace("7", "0"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1
    proc.kill()
    proc.wait()
    program = int(children[0])
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{program}") and time.monotonic() < deadline:
        time.sleep(0.05)  # (reaped by init: the pid goes away)
    state = (
        Path(f"/proc/{program}/stat").read_text().split()[2]
        if os.path.exists(f"/proc/{program}")
        else "gone"
    )
    assert state in ("gone", "Z")


def test_under_a_tracer_run_loads_the_policy_itself_and_still_denies(tmp_path: Path) -> None:
    """Under ``isolates trace`` a listener is installed above run's: run's program is the
    policy's own (answered in the kernel), so the program runs and is denied as ever."""
    command = python(tmp_path, DENIED, "--pledge", "stdio rpath")
    done = subprocess.run(
        [*CLI, "trace", "--", *CLI, "run", *command, "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:3] == ["EPERM", "-1", "EPERM"]


def test_a_killing_policy_names_the_call_and_ends_as_the_kernel_would(tmp_path: Path) -> None:
    """Under --kill the violation is named with its arguments in words, and the program
    (and so run) still ends by SIGSYS, as with run in place, where nothing is said."""
    command = python(tmp_path, DENIED, "--kill", "--pledge", "stdio rpath")
    said = "killed: socket(AF_INET6, SOCK_DGRAM|SOCK_CLOEXEC, 0) is not allowed by the policy"
    done = run(*command, "0")
    assert done.returncode == -signal.SIGSYS and done.stdout == ""
    assert said in done.stderr
    quiet = run("--no-report", *command, "0")
    assert quiet.returncode == -signal.SIGSYS and "killed" not in quiet.stderr


def test_a_violation_deeper_in_the_tree_is_named_with_its_process(tmp_path: Path) -> None:
    command = python(tmp_path, "import subprocess, sys\n"
                     "print(subprocess.run([sys.executable, '-I', '-c', 'import socket; "
                     "socket.socket()']).returncode)\n",
                     "--kill", "--pledge", "stdio rpath proc exec")  # fmt: skip
    done = run(*command)
    assert (done.returncode, done.stdout) == (0, f"{-signal.SIGKILL}\n"), done.stderr
    assert "killed: socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0) is not allowed" in done.stderr
    assert "(in process " in done.stderr


UNDER_ANOTHER_POLICY = """
import errno, os, sys
from isolates.sandbox import Action, Policy, Rule, RuleSet
refuse = RuleSet(Rule("pidfd_getfd", action=Action.ERRNO(errno.EPERM)))
Policy(refuse, default=Action.ALLOW).apply(all_threads=True)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def test_where_the_listener_cannot_be_taken_run_says_so_and_runs_in_place(
    tmp_path: Path,
) -> None:
    """Under someone else's policy refusing pidfd_getfd (or ptrace_scope 3), run kills
    its child before the exec, says why, and runs the program in place: denied alike."""
    outer = tmp_path / "outer.py"
    outer.write_text(UNDER_ANOTHER_POLICY)
    command = python(tmp_path, DENIED, "--pledge", "stdio rpath")
    done = subprocess.run([sys.executable, str(outer), "-m", "isolates.orchestrator._cli", "run",
                           *command, "3"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stdout.split() == ["EPERM", "-1", "EPERM"]
    assert "denials cannot be reported here (pidfd_getfd: Operation not permitted)" in done.stderr
    assert "calls denied" not in done.stderr


COUNTS_INTERRUPTS = """
import signal, sys, time
got = []
signal.signal(signal.SIGINT, lambda *_: got.append(1))
print("ready", flush=True)
deadline = time.monotonic() + 20
while not got and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(1)  # a second SIGINT, forwarded, would come within this
print("interrupts", len(got), flush=True)
"""


@pytest.mark.parametrize("limited", [False, True])
def test_ctrl_c_at_a_terminal_reaches_the_program_once(tmp_path: Path, limited: bool) -> None:
    """The terminal sends Ctrl-C to its foreground group, run and the program both: run
    does not send it a second time (the program would take two KeyboardInterrupts)."""
    import pty

    limit = ["--wall-time", "60"] if limited else []
    argv = [*CLI, "run", *limit, *python(tmp_path, COUNTS_INTERRUPTS)]
    pid, terminal = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    said = b""
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in said and time.monotonic() < deadline:
            said += os.read(terminal, 1024)
        os.write(terminal, b"\x03")  # Ctrl-C
        while b"interrupts" not in said and time.monotonic() < deadline:
            said += os.read(terminal, 1024)
        while not said.endswith(b"\n"):
            said += os.read(terminal, 1024)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    assert b"interrupts 1" in said, said
    assert os.waitstatus_to_exitcode(status) == 0


WITHOUT_CAPABILITIES = """
import os, sys
from isolates.sandbox.lowlevel import ns
ns.keep_only_capabilities((), for_exec=True)  # root as any user is: no capability
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""

REACHES_FOR_ITS_PARENT = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
parent = os.getppid()
taken = []
pidfd = os.pidfd_open(parent)
for fd in range(1024):  # pidfd_getfd: any descriptor of run's, its listener among them
    got = libc.syscall(438, pidfd, fd, 0)
    if got >= 0:
        taken.append(fd)
print("taken", taken)
for path in (f"/proc/{parent}/mem", f"/proc/{parent}/environ"):
    try:
        open(path, "rb").read(1)
        print("read", path)
    except OSError as exc:
        print("refused", errno.errorcode[exc.errno])
try:
    os.readlink(f"/proc/{parent}/fd/0")  # what run's descriptors are
    print("read its descriptors")
except OSError as exc:
    print("refused", errno.errorcode[exc.errno])
print("own", open("/proc/self/status").readline().split()[0])  # the allowed neighbour
libc.syscall(101, 0, 0, 0, 0)  # ptrace(PTRACE_TRACEME): a denial run still answers
"""


@pytest.mark.parametrize("limits", [[], ["--processes", "16"]])
def test_the_program_cannot_take_runs_listener_even_without_landlock(
    tmp_path: Path, limits: list[str]
) -> None:
    """run holds the program's listener: were the program able to take it (pidfd_getfd),
    it could let its own denied calls run. Landlock's domain refuses that outward; here
    there is none (ISOLATES_LANDLOCK_ABI=0) and run has no capability over the program
    (as for any user but root), so run itself must be out of reach: it is not dumpable."""
    outer = tmp_path / "outer.py"
    outer.write_text(WITHOUT_CAPABILITIES)
    command = python(tmp_path, REACHES_FOR_ITS_PARENT, "--report", *limits)
    env = {**os.environ, "ISOLATES_LANDLOCK_ABI": "0"}
    done = subprocess.run([sys.executable, str(outer), "-m", "isolates.orchestrator._cli",
                           "run", *command], capture_output=True, text=True, timeout=60,
                          env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:5] == ["taken []", "refused EACCES", "refused EACCES",
                                           "refused EACCES", "own Name:"], done.stdout  # fmt: skip
    assert "ptrace(0, 0, NULL, NULL) -> EPERM" in done.stderr  # the listener: still run's

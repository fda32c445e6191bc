"""profiles.pledge in real children: for every promise, what it allows works, what it
does not is killed with SIGSYS (or fails with ENOSYS under ``error``), and the same call
without the promise is killed."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gc
import grp
import mmap
import os
import pickle
import pwd
import signal
import socket
import struct
import subprocess
import sys
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from isolates.sandbox import profiles
from tests.forked import Outcome, in_child
from tests.sandbox.syscall import raw


@dataclass
class Ctx:
    """What a case prepares before the policy is loaded."""

    dir: Path
    file: str = ""
    fd: int = -1
    pipe: tuple[int, int] = (-1, -1)
    extra: dict[str, Any] = field(default_factory=dict)


def _prepare(dir: Path) -> Ctx:
    import encodings.idna  # noqa: F401  # getaddrinfo imports it lazily: not once pledged

    file = dir / "file"
    file.write_text("content\n")
    return Ctx(dir, str(file), os.open(file, os.O_RDWR), os.pipe())


@dataclass
class Case:
    name: str
    allowed: Callable[[Ctx], Any]  # works under "stdio <needs> <name>"
    outside: Callable[[Ctx], Any]  # killed even then: a plain syscall, raising OSError
    needs: str = ""
    setup: Callable[[Ctx], None] = lambda ctx: None
    effect: bool = True  # False: Linux cannot tell this promise's calls from stdio's


def _stdio(c: Ctx) -> tuple[int, bool, bytes]:
    return os.write(c.pipe[1], b"x"), os.getppid() > 0, os.read(c.pipe[0], 1)


def _wpath(c: Ctx) -> int:
    fd = os.open(c.file, os.O_WRONLY | os.O_TRUNC)
    return os.write(fd, b"new")


def _cpath(c: Ctx) -> list[str]:
    fd = os.open(c.dir / "made", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    os.mkdir(c.dir / "sub")
    os.rename(c.dir / "made", c.dir / "sub" / "moved")
    os.symlink("moved", c.dir / "sub" / "link")
    names = sorted(os.listdir(c.dir / "sub"))
    os.unlink(c.dir / "sub" / "link")
    os.unlink(c.dir / "sub" / "moved")
    os.rmdir(c.dir / "sub")
    return names


def _tmppath(c: Ctx) -> bytes:
    path = c.dir / "scratch"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"tmp")
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 3)
    os.unlink(path)
    os.mkdir(c.dir / "d")
    os.rmdir(c.dir / "d")
    return data


def _inet(c: Ctx) -> bytes:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    client.sendall(b"ping")
    return conn.recv(4)


def _mcast(c: Ctx) -> int:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
    return udp.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL)


def _unix_setup(c: Ctx) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(c.dir / "sock"))
    server.listen()
    c.extra["server"] = server


def _unix(c: Ctx) -> int:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(c.dir / "sock"))
    conn, _ = c.extra["server"].accept()
    client.sendall(b"hi")
    return len(conn.recv(2))


def _dns(c: Ctx) -> tuple[str, int]:
    address = socket.getaddrinfo("localhost", 80, socket.AF_INET)[0][4][0]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", 53))
    return address, udp.getsockname()[1] > 0


def _udp_bind(c: Ctx) -> None:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.1", 0))


def _fattr(c: Ctx) -> int:
    os.chmod(c.file, 0o640)
    os.utime(c.file, (1, 1))
    os.chown(c.file, -1, os.getgid())  # to the caller's own group: allowed
    return os.fstat(c.fd).st_mode & 0o7777


def _chown(c: Ctx) -> int:
    os.chown(c.file, 4242, 4243)
    return os.fstat(c.fd).st_uid


def _flock(c: Ctx) -> bool:
    fcntl.flock(c.fd, fcntl.LOCK_EX)
    fcntl.lockf(c.fd, fcntl.LOCK_UN)
    return True


def _sendfd(c: Ctx) -> int:
    a, b = socket.socketpair()
    socket.send_fds(a, [b"fd"], [c.fd])
    _, fds, _, _ = socket.recv_fds(b, 2, 1)
    return len(fds)


def _tape(c: Ctx) -> int | None:
    mtiocget = 0x80306D02
    try:
        fcntl.ioctl(c.fd, mtiocget, bytes(48))
    except OSError as exc:
        return exc.errno  # ENOTTY from the file: the filter let it through
    return None


def _tty_setup(c: Ctx) -> None:
    c.extra["pty"] = os.openpty()


def _tty(c: Ctx) -> tuple[int, ...]:
    size = fcntl.ioctl(c.extra["pty"][1], termios.TIOCGWINSZ, bytes(8))
    return struct.unpack("HHHH", size)


def _tiocsti(c: Ctx) -> None:
    fcntl.ioctl(c.extra["pty"][1] if "pty" in c.extra else 0, termios.TIOCSTI, b"x")


def _proc(c: Ctx) -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    os.kill(pid, 0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _prot_exec(c: Ctx) -> int:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(b"\xc3")
    return len(page)


def _landlock_abi(c: Ctx) -> int:
    return raw("landlock_create_ruleset", 0, 0, 1)


def _open_ro(c: Ctx) -> int:
    return os.open(c.file, os.O_RDONLY)


def _open_wo(c: Ctx) -> int:
    return os.open(c.file, os.O_WRONLY)


def _socket_unix(c: Ctx) -> int:
    return raw("socket", socket.AF_UNIX, socket.SOCK_STREAM, 0)


def _socket_inet(c: Ctx) -> int:
    return raw("socket", socket.AF_INET, socket.SOCK_STREAM, 0)


CASES = [
    Case("stdio", _stdio, _open_ro),
    Case("rpath", lambda c: Path(c.file).read_text(), _open_wo),
    Case("wpath", _wpath, lambda c: os.open(c.dir / "new", os.O_WRONLY | os.O_CREAT)),
    Case("cpath", _cpath, lambda c: os.mkfifo(c.dir / "fifo"), needs="rpath wpath"),
    Case("dpath", lambda c: os.mkfifo(c.dir / "fifo"), lambda c: os.mkdir(c.dir / "d")),
    Case("tmppath", _tmppath, lambda c: os.chmod(c.file, 0o600)),
    Case("inet", _inet, _socket_unix),
    Case("mcast", _mcast, _socket_unix, needs="inet"),
    Case("fattr", _fattr, lambda c: os.chmod(c.file, 0o4755)),
    Case("chown", _chown, lambda c: os.chmod(c.file, 0o600)),
    Case("flock", _flock, _open_ro),
    Case("unix", _unix, _socket_inet, setup=_unix_setup),
    Case("dns", _dns, _udp_bind),
    Case("getpw", lambda c: (pwd.getpwnam("root").pw_uid, grp.getgrgid(0).gr_name), _open_wo),
    Case("sendfd", _sendfd, _socket_inet, effect=False),
    Case("recvfd", _sendfd, _socket_inet, effect=False),
    Case("tape", _tape, lambda c: fcntl.ioctl(c.fd, termios.TIOCGWINSZ, bytes(8))),
    Case("tty", _tty, _tiocsti, setup=_tty_setup),
    Case("proc", _proc, lambda c: os.execv("/bin/true", ["true"])),
    Case("prot_exec", _prot_exec, _open_ro),
    Case("settime", lambda c: raw("settimeofday", 0, 0), _open_ro),  # NULL, NULL: no-op
    Case("id", lambda c: os.setresuid(-1, -1, -1), _open_ro),
    Case("unveil", _landlock_abi, _open_ro, effect=False),
]
EXPECTED = {
    "stdio": (1, True, b"x"), "rpath": "content\n", "wpath": 3, "cpath": ["link", "moved"],
    "dpath": None, "tmppath": b"tmp", "inet": b"ping", "mcast": 2, "fattr": 0o640,
    "chown": 4242, "flock": True, "unix": 2, "dns": ("127.0.0.1", True), "getpw": (0, "root"),
    "sendfd": 1, "recvfd": 1, "tape": errno.ENOTTY, "tty": (0, 0, 0, 0), "proc": 7,
    "prot_exec": mmap.PAGESIZE, "settime": 0, "id": None, "unveil": 7,
}  # fmt: skip


def test_every_promise_with_a_linux_meaning_has_a_case() -> None:
    tested = {c.name for c in CASES} | {"exec", "error"}
    assert tested == set(profiles.PROMISES) - set(profiles.NO_LINUX_MEANING)


def _with(case: Case, *more: str) -> str:
    return " ".join(("" if case.name == "stdio" else "stdio", case.needs, case.name, *more))


def _without(case: Case) -> str:
    return " ".join(("" if case.name == "stdio" else "stdio", case.needs))


def _run(case: Case, spec: str, report: mmap.mmap, dir: Path) -> Any:
    """In the child: prepare, pledge, report the allowed call's result, then go outside."""
    ctx = _prepare(dir)
    case.setup(ctx)
    profiles.pledge(spec).apply()
    data = pickle.dumps(case.allowed(ctx))
    report[: 4 + len(data)] = struct.pack("I", len(data)) + data
    try:
        case.outside(ctx)
    except OSError as exc:
        return exc.errno
    return "outside call succeeded"


def _child(case: Case, spec: str, dir: Path) -> tuple[Any, Outcome]:
    report = mmap.mmap(-1, 1 << 16)
    outcome = in_child(_run, case, spec, report, dir)
    (size,) = struct.unpack("I", report[:4])
    allowed = pickle.loads(report[4 : 4 + size]) if size else "<not reached>"
    return allowed, outcome


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_promise_allows_its_calls_and_kills_others(case: Case, tmp_path: Path) -> None:
    allowed, outcome = _child(case, _with(case), tmp_path)
    assert allowed == EXPECTED[case.name]
    assert outcome.signal == signal.SIGSYS, outcome


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_with_error_a_denied_call_fails_with_enosys(case: Case, tmp_path: Path) -> None:
    allowed, outcome = _child(case, _with(case, "error"), tmp_path)
    assert allowed == EXPECTED[case.name]
    assert outcome.unwrap() == errno.ENOSYS


@pytest.mark.parametrize("case", [c for c in CASES if c.effect], ids=lambda c: c.name)
def test_without_the_promise_its_call_is_killed(case: Case, tmp_path: Path) -> None:
    allowed, outcome = _child(case, _without(case), tmp_path)
    assert allowed == "<not reached>"
    assert outcome.signal == signal.SIGSYS, outcome


@pytest.mark.parametrize("case", [c for c in CASES if not c.effect], ids=lambda c: c.name)
def test_promises_linux_cannot_enforce_change_nothing(case: Case, tmp_path: Path) -> None:
    # sendfd/recvfd: SCM_RIGHTS hides inside sendmsg/recvmsg's buffers, which seccomp
    # cannot read, so stdio alone passes descriptors. unveil: Landlock only ever narrows.
    allowed, outcome = _child(case, _without(case), tmp_path)
    assert allowed == EXPECTED[case.name]
    assert outcome.signal == signal.SIGSYS


def _exec_true(spec: str) -> None:
    profiles.pledge(spec).apply()
    os.execv("/bin/true", ["true"])


def test_exec_runs_a_program_that_inherits_the_promises() -> None:
    # The loader of /bin/true needs rpath (open its libraries) and prot_exec (map them).
    assert in_child(_exec_true, "stdio rpath prot_exec exec").exitcode == 0
    assert in_child(_exec_true, "stdio rpath prot_exec").signal == signal.SIGSYS
    # The exec'd image inherits the filter: without prot_exec its loader is killed.
    assert in_child(_exec_true, "stdio rpath exec").signal == signal.SIGSYS


def _python_keeps_working(spec: str) -> tuple[bool, int, int]:
    profiles.pledge(spec).apply()
    blob = [{"n": i, "s": str(i) * 20} for i in range(50000)]  # grows the heap
    gc.collect()
    return len(repr(blob)) > 10**6, sum(len(str(x)) for x in blob) % 7, os.getpid() > 0


@pytest.mark.parametrize("spec", ["", "stdio", "stdio rpath inet dns tmppath"])
def test_cpython_keeps_working_after_pledging(spec: str) -> None:
    assert in_child(_python_keeps_working, spec).unwrap() == (True, 5, True)


def _callbacks(spec: str, count: int) -> int:
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)
    warm = callback_type(lambda x: x)  # libffi's first closure reads /proc: before pledging
    profiles.pledge(spec).apply()
    later = [callback_type(lambda x, i=i: x + i) for i in range(count)]
    return sum(cb(1) for cb in later) + warm(0)


def test_ctypes_callbacks_need_prot_exec() -> None:
    # libffi maps writable and executable pages for closures, one page at a time.
    assert in_child(_callbacks, "stdio prot_exec", 1000).unwrap() == 500500
    assert in_child(_callbacks, "stdio", 1000).signal == signal.SIGSYS


def _tmp_and_etc(spec: str, dir: Path) -> tuple[int | None, int | None]:
    profiles.pledge(spec).apply()
    results = []
    for path in (dir / "new", Path("/etc/hostname")):
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            results.append(None)
        except OSError as exc:
            results.append(exc.errno)
    return results[0], results[1]


def test_tmppath_confines_its_opens_to_tmp(tmp_path: Path) -> None:
    assert str(tmp_path).startswith("/tmp/")
    assert in_child(_tmp_and_etc, "stdio tmppath", tmp_path).unwrap() == (None, errno.EACCES)


def _read(spec: str, paths: list[str], unveil: dict[str, str] | None = None) -> list[Any]:
    profiles.pledge(spec, unveil=unveil).apply()
    out: list[Any] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                out.append(len(f.read()) > 0)
        except OSError as exc:
            out.append(exc.errno)
    return out


def test_path_bound_promises_read_only_their_files() -> None:
    paths = ["/etc/hosts", "/etc/passwd", "/etc/hostname"]
    assert in_child(_read, "stdio dns", paths).unwrap() == [True, errno.EACCES, errno.EACCES]
    assert in_child(_read, "stdio getpw", paths).unwrap() == [errno.EACCES, True, errno.EACCES]
    # With rpath every path is readable again: the promises add up.
    assert in_child(_read, "stdio rpath dns", paths).unwrap() == [True, True, True]


def test_unveil_limits_rpath_to_the_unveiled_paths(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    paths = [str(tmp_path / "a"), "/etc/hostname"]
    unveil = {str(tmp_path): "r"}
    assert in_child(_read, "stdio rpath", paths, unveil).unwrap() == [True, errno.EACCES]


def _write(spec: str, path: Path, unveil: dict[str, str]) -> int | None:
    profiles.pledge(spec, unveil=unveil).apply()
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        return exc.errno
    return None


def test_unveil_permissions_map_to_landlock_rights(tmp_path: Path) -> None:
    spec = "stdio rpath wpath cpath"
    assert in_child(_write, spec, tmp_path / "x", {str(tmp_path): "rwc"}).unwrap() is None
    assert in_child(_write, spec, tmp_path / "y", {str(tmp_path): "rw"}).unwrap() == errno.EACCES


def test_unveil_never_grants_beyond_the_promises(tmp_path: Path) -> None:
    # "c" without cpath: the O_CREAT open is the promises' to refuse, and they kill.
    assert in_child(_write, "stdio wpath", tmp_path / "z", {str(tmp_path): "rwc"}).signal == (
        signal.SIGSYS
    )


def _write_existing(spec: str, path: Path, unveil: dict[str, str]) -> int | None:
    profiles.pledge(spec, unveil=unveil).apply()
    try:
        os.close(os.open(path, os.O_WRONLY))
    except OSError as exc:
        return exc.errno
    return None


def test_an_unveil_the_promises_grant_nothing_on_still_hides_every_path(tmp_path: Path) -> None:
    # "r" without rpath grants nothing on tmp_path: wpath must not then reach every file.
    target = tmp_path / "file"
    target.write_text("x")
    denied = in_child(_write_existing, "stdio wpath", target, {str(tmp_path): "r"})
    assert denied.unwrap() == errno.EACCES
    allowed = in_child(_write_existing, "stdio wpath", target, {str(tmp_path): "w"})
    assert allowed.unwrap() is None


BUILD_AFTER = """
import ast, sys
from isolates.sandbox import PolicyError, profiles
profiles.pledge(sys.argv[1]).apply()
for kind, args in ast.literal_eval(sys.argv[2]):
    build = profiles.pledge if kind == "pledge" else profiles.systemd
    try:
        print(len(build(*args).entries()) > 0, flush=True)
    except PolicyError as exc:
        print(exc, flush=True)
"""


def _build_after(applied: str, builds: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    """In a fresh interpreter (nothing imported but what isolates imports itself): pledge
    ``applied``, then build profiles. No import may be left for later: reading .py files
    or mapping a C extension with PROT_EXEC would be killed, silently."""
    done = subprocess.run([sys.executable, "-I", "-c", BUILD_AFTER, applied, repr(builds)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, (done.returncode, done.stderr)
    return done.stdout.splitlines()


def test_profiles_can_be_built_under_the_readme_pledge() -> None:
    builds = [("systemd", ("@system-service",)), ("systemd", ("@system-service", "~@privileged")),
              ("pledge", ("stdio rpath inet dns",)), ("pledge", ("stdio tmppath getpw tty",)),
              ("systemd", ("@system-servise",)), ("pledge", ("stdoi",))]  # fmt: skip
    out = _build_after("stdio rpath inet dns", builds)
    assert out[:4] == ["True"] * 4
    assert "did you mean '@system-service'?" in out[4] and "'stdio'?" in out[5]


def test_profiles_without_paths_can_be_built_under_stdio_alone() -> None:
    # stdio opens and stats nothing: any file a builder still had to read would kill.
    bound = {*profiles.NO_LINUX_MEANING, "tmppath", "dns", "getpw", "tty"}
    every = " ".join(p for p in profiles.PROMISES if p not in bound)
    builds = [("systemd", ("@system-service", "~@privileged @resources")), ("pledge", (every,))]
    assert _build_after("stdio", builds) == ["True", "True"]

"""Namespaces entered for real, each in a forked child (never in the pytest process).

Every namespace is proven from both sides: what the child sees inside, and that the
host does not see it (or, with the namespace off, that it does).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from isolates.orchestrator import Bind, Mount, Namespaces, NamespaceStatus
from isolates.orchestrator._namespaces.enter import enter
from isolates.orchestrator._namespaces.mount import runtime_paths
from isolates.sandbox import Action, Policy, PolicyError, SandboxError, Signals
from isolates.sandbox import _kernel_ns as k
from tests.forked import in_child

#: No mount namespace: the fast way to test the other namespaces.
LIGHT = Namespaces(mount=None)
NO_PID = Namespaces(mount=None, pid=False)


def _entered(ns: Namespaces, then: Callable[[NamespaceStatus], Any]) -> Any:
    return in_child(lambda: then(enter(ns))).unwrap()


# --- the option itself ------------------------------------------------------------------


def test_default_enters_every_namespace_and_one_can_be_left_out() -> None:
    assert Namespaces().kinds == ("user", "mount", "pid", "net", "ipc", "uts")
    assert Namespaces(net=False).kinds == ("user", "mount", "pid", "ipc", "uts")
    assert Namespaces().mount == Mount()


def test_namespaces_travel_as_plain_data() -> None:
    ns = Namespaces(
        mount=Mount(ro=("/etc/ssl",), rw=("/var/lib/app",), binds=(Bind("/srv/x", "/x"),)),
        net=False,
        uid=1000,
        hostname="web",
    )
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ns), type=Namespaces) == ns
    assert msgspec.convert(msgspec.to_builtins(ns), Namespaces) == ns
    status = NamespaceStatus(("user", "pid"), 1000, 1000, 1, "web", capabilities=False)
    assert msgspec.json.decode(msgspec.json.encode(status), type=NamespaceStatus) == status
    assert str(status) == (
        "namespaces: user pid (uid 1000, gid 1000, pid 1, hostname 'web', without capabilities)"
    )


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: Namespaces(mount=False), "Namespaces(mount=None) keeps the host's mounts"),
        (lambda: Namespaces(pid="yes"), "Namespaces.pid is True or False"),
        (lambda: Mount(ro=("usr",)), "Mount.ro: an absolute path, not 'usr'"),
        (lambda: Mount(rw=("/a/../b",)), "Mount.rw: write the path without '.', '..'"),
        (lambda: Bind("/srv", "data"), "Bind.target: an absolute path"),
        (lambda: Namespaces(uid=-1), "Namespaces.uid: an id from 0 to 4294967294"),
        (lambda: Namespaces(user=False, uid=1000), "needs user=True"),
        (lambda: Namespaces(hostname=""), "Namespaces.hostname: 1 to 64 bytes"),
    ],
)
def test_bad_options_raise_policy_error(make: Callable[[], object], says: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(says)):
        make()


def test_pid_inside_is_one_in_a_new_pid_namespace() -> None:
    assert Namespaces().pid_inside(4321) == 1
    assert Namespaces(pid=False).pid_inside(4321) == 4321


# --- uts, net, ipc ----------------------------------------------------------------------


def test_uts_hostname_changes_inside_only() -> None:
    host = socket.gethostname()
    inside = _entered(Namespaces(mount=None, hostname="worker-7"), lambda s: socket.gethostname())
    assert inside == "worker-7"
    assert socket.gethostname() == host
    assert _entered(Namespaces(mount=None, uts=False), lambda s: socket.gethostname()) == host


def _lo_flags() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = fcntl.ioctl(sock, 0x8913, struct.pack("16sh22x", b"lo", 0))  # SIOCGIFFLAGS
    return int(struct.unpack("16sh22x", req)[1])


def _echo_over_loopback() -> bytes:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        with client, conn:
            client.sendall(b"ping")
            return conn.recv(4)


def _connect_errno(address: tuple[str, int]) -> int:
    try:
        socket.create_connection(address, timeout=5).close()
    except OSError as exc:
        return exc.errno or -1
    return 0


@pytest.fixture
def host_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_net_has_only_loopback_up_and_cannot_reach_the_host(host_port: int) -> None:
    def inside(_: NamespaceStatus) -> dict[str, object]:
        return {
            "interfaces": socket.if_nameindex(),
            "lo up": bool(_lo_flags() & 1),
            "echo": _echo_over_loopback(),
            "host port": _connect_errno(("127.0.0.1", host_port)),
            "outside": _connect_errno(("192.0.2.1", 80)),
        }

    seen = _entered(LIGHT, inside)
    assert seen == {
        "interfaces": [(1, "lo")],
        "lo up": True,
        "echo": b"ping",
        "host port": errno.ECONNREFUSED,
        "outside": errno.ENETUNREACH,
    }
    shared = Namespaces(mount=None, net=False)
    assert _entered(shared, lambda s: _connect_errno(("127.0.0.1", host_port))) == 0


_libc = ctypes.CDLL(None, use_errno=True)
IPC_CREAT, IPC_RMID = 0o1000, 0


def _shm_create(key: int) -> int:
    return int(_libc.shmget(key, 4096, IPC_CREAT | 0o600))


def _shm_exists(key: int) -> bool:
    shm_id = int(_libc.shmget(key, 0, 0))
    if shm_id >= 0:
        _libc.shmctl(shm_id, IPC_RMID, None)
    return shm_id >= 0


def test_ipc_objects_created_inside_are_invisible_outside() -> None:
    key = 0x150_0000 + os.getpid() % 0xFFFF
    _shm_exists(key)  # removes a leftover of an earlier run
    assert _entered(LIGHT, lambda s: _shm_create(key)) >= 0
    assert not _shm_exists(key)
    assert _entered(Namespaces(mount=None, ipc=False), lambda s: _shm_create(key)) >= 0
    assert _shm_exists(key)


# --- pid --------------------------------------------------------------------------------


def test_pid_one_inside_and_proc_shows_only_the_namespace() -> None:
    def inside(status: NamespaceStatus) -> tuple[int, int, int, list[str]]:
        pids = sorted(p for p in os.listdir("/proc") if p.isdigit())
        return status.pid, os.getpid(), os.getppid(), pids

    assert _entered(Namespaces(), inside) == (1, 1, 0, ["1"])
    assert _entered(NO_PID, lambda s: os.getpid()) != 1


def test_exit_code_is_mirrored() -> None:
    def inside() -> None:
        enter(LIGHT)
        os._exit(7)

    outcome = in_child(inside)
    assert (outcome.exitcode, outcome.signal) == (7, None)


def test_death_by_signal_is_mirrored() -> None:
    violation = Policy(default=Action.KILL_PROCESS).compile(pid=1)

    def inside() -> None:
        enter(LIGHT)
        violation.apply()
        os.getppid()  # not allowed: the kernel kills pid 1 with SIGSYS

    def allowed() -> None:
        enter(LIGHT)
        violation.apply()

    assert in_child(inside).signal == signal.SIGSYS
    assert in_child(allowed).ok


class Spawned:
    """A forked isolate stand-in (own process group, like the real ones) that runs ``fn``
    and talks over a pipe: ``fn(w)`` writes to the test, ``read()`` reads it here.

    Used as a context manager: whatever the test's fate, the child and its pid 1 are
    killed and reaped at the end, so a failing test leaves no process behind.
    """

    def __init__(self, fn: Callable[[int], None], *close_in_child: int) -> None:
        self.r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - runs in the child
            os.setpgid(0, 0)
            for fd in (self.r, *close_in_child):
                os.close(fd)
            try:
                fn(w)
            finally:
                os._exit(99)
        os.close(w)
        self.status: int | None = None
        self.seen: dict[int, int] = {}  # pid 1 (host pid) -> pidfd

    def __enter__(self) -> Spawned:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.status is None:
            self.grandchildren()
            os.kill(self.pid, signal.SIGKILL)
            self.status = os.waitpid(self.pid, 0)[1]
        for fd in self.seen.values():  # in case pid 1 did not follow its mirror
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)  # a pidfd: never a reused pid
            os.close(fd)
        os.close(self.r)

    def read(self) -> bytes:
        return _read_within(self.r, 20)

    def wait(self) -> int:
        """Its exit code (-N: killed by signal N); fails the test after 20s."""
        fd = os.pidfd_open(self.pid)
        exited = select.select([fd], [], [], 20)[0]
        os.close(fd)
        assert exited, f"child {self.pid} still running after 20s"
        self.status = os.waitpid(self.pid, 0)[1]
        return os.waitstatus_to_exitcode(self.status)

    def grandchildren(self) -> list[int]:
        """Host pids of the mirror's children: pid 1 inside, once ``enter`` forked."""
        with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
            pids = [int(pid) for pid in f.read().split()]
        for pid in pids:
            if pid not in self.seen:
                self.seen[pid] = os.pidfd_open(pid)
        return pids

    def pid1(self) -> int:
        (pid,) = self.grandchildren()
        return pid


def _pid1_that(handles_term: bool) -> Callable[[int], None]:
    def run(w: int) -> None:
        got: list[int] = []
        if handles_term:
            signal.signal(signal.SIGTERM, lambda sig, frame: got.append(sig))
        enter(LIGHT)
        os.write(w, b"ready")
        while not got:
            signal.pause()
        os.write(w, f"{len(got)} pgid {os.getpgid(0)}".encode())
        os._exit(0)

    return run


def test_sigterm_to_the_isolate_group_reaches_a_handler_in_pid1_once() -> None:
    with Spawned(_pid1_that(handles_term=True)) as child:
        assert child.read() == b"ready"
        os.killpg(child.pid, signal.SIGTERM)
        assert child.read() == b"1 pgid 1"  # pid 1 leads its own group: no second copy
        assert child.wait() == 0


def test_sigterm_kills_pid1_without_handler_and_the_mirror_dies_by_it() -> None:
    with Spawned(_pid1_that(handles_term=False)) as child:
        assert child.read() == b"ready"
        inner = os.pidfd_open(child.pid1())
        os.kill(child.pid, signal.SIGTERM)
        assert child.wait() == -signal.SIGTERM
        assert select.select([inner], [], [], 0)[0], "pid 1 outlived its mirror"
        os.close(inner)


def test_pid1_dies_when_its_mirror_is_killed() -> None:
    with Spawned(_pid1_that(handles_term=True)) as child:
        assert child.read() == b"ready"
        inner = os.pidfd_open(child.pid1())
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        assert select.select([inner], [], [], 20)[0], "pid 1 survived its mirror: an orphan"
        os.close(inner)


def test_inherited_descriptors_live_on_in_pid1_only() -> None:
    data_r, data_w = os.pipe()
    hold_r, hold_w = os.pipe()

    def run(w: int) -> None:
        enter(LIGHT)
        os.write(data_w, b"from pid 1")
        os.close(data_w)  # the reader must now see EOF: the mirror holds no copy
        os.read(hold_r, 1)
        os._exit(0)

    with Spawned(run, data_r, hold_w) as child:
        os.close(data_w)
        os.close(hold_r)
        received = b""
        while chunk := _read_within(data_r, 20):
            received += chunk
        assert received == b"from pid 1"
        assert os.waitpid(child.pid, os.WNOHANG) == (0, 0), "EOF came from the child's death"
        os.write(hold_w, b"x")
        assert child.wait() == 0
    for fd in (data_r, hold_w):
        os.close(fd)


def _read_within(fd: int, seconds: float) -> bytes:
    assert select.select([fd], [], [], seconds)[0], f"nothing to read for {seconds}s"
    return os.read(fd, 100)


def test_self_pid_rules_compiled_with_pid_inside_match_pid1() -> None:
    ns = Namespaces(mount=None)
    compiled = Policy(Signals.nothing().allow_kill_self()).compile(pid=ns.pid_inside(0))

    def inside(_: NamespaceStatus) -> tuple[list[int], str]:
        got: list[int] = []
        signal.signal(signal.SIGUSR1, lambda sig, frame: got.append(sig))
        compiled.apply()
        os.kill(os.getpid(), signal.SIGUSR1)
        try:
            os.kill(2, 0)
        except OSError as exc:
            return got, errno.errorcode[exc.errno or 0]
        return got, "allowed"

    assert _entered(ns, inside) == ([signal.SIGUSR1], "EPERM")


# --- user -------------------------------------------------------------------------------


def _ids_and_caps(_: NamespaceStatus) -> tuple[int, int, str, int]:
    with open("/proc/self/status") as f:
        cap_eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    with open("/proc/self/uid_map") as f:
        uid_map = " ".join(f.read().split())
    return os.getuid(), os.getgid(), uid_map, cap_eff


def test_user_maps_our_own_ids_by_default() -> None:
    uid, gid = os.getuid(), os.getgid()
    inside_uid, inside_gid, uid_map, _ = _entered(NO_PID, _ids_and_caps)
    assert (inside_uid, inside_gid, uid_map) == (uid, gid, f"{uid} {uid} 1")


def test_user_maps_to_an_unprivileged_id_without_capabilities() -> None:
    ns = Namespaces(mount=None, pid=False, uid=1000, gid=1000)
    assert _entered(ns, _ids_and_caps) == (1000, 1000, f"1000 {os.getuid()} 1", 0)
    root_inside = Namespaces(mount=None, pid=False, uid=0, gid=0)
    assert _entered(root_inside, _ids_and_caps)[3] != 0


def test_an_unprivileged_process_enters_every_namespace_but_mount() -> None:
    def inside() -> tuple[int, int, str]:
        os.setgid(65534)
        os.setuid(65534)
        _libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, as after an exec: /proc/self is ours
        status = enter(Namespaces(mount=None, uid=1000))
        return status.pid, os.getuid(), socket.gethostname()

    assert in_child(inside).unwrap() == (1, 1000, "isolate")


# --- refusals ---------------------------------------------------------------------------


def _user_namespaces_limited_to(limit: int) -> NamespaceStatus:
    """In a user namespace of our own, allow ``limit`` nested ones, then enter."""
    uid, gid = os.getuid(), os.getgid()
    k.unshare(k.CLONE_NEWUSER)
    k.write_id_maps(uid, gid, uid, gid)
    Path("/proc/sys/user/max_user_namespaces").write_text(f"{limit}\n")
    return enter(NO_PID)


def test_forbidden_user_namespaces_give_a_sandbox_error_that_says_how_to_enable() -> None:
    outcome = in_child(_user_namespaces_limited_to, 0)
    assert isinstance(outcome.error, SandboxError), outcome
    assert outcome.error.errno == errno.ENOSPC
    assert "sysctl -w user.max_user_namespaces=" in str(outcome.error)
    assert in_child(_user_namespaces_limited_to, 1).unwrap().entered[0] == "user"


def test_namespaces_without_a_user_namespace_need_privilege() -> None:
    def inside() -> None:
        os.setuid(65534)
        enter(Namespaces(user=False, mount=None, pid=False))

    error = in_child(inside).error
    assert isinstance(error, SandboxError) and error.errno == errno.EPERM
    assert "keep Namespaces(user=True)" in str(error)


def test_enter_refuses_a_threaded_process() -> None:
    def inside() -> None:
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        try:
            enter(NO_PID)
        finally:
            stop.set()

    error = in_child(inside).error
    assert isinstance(error, SandboxError) and "before any thread starts" in str(error)


# --- mount ------------------------------------------------------------------------------


def _root_mount() -> tuple[str, str]:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/":
                return fields[fields.index("-") + 1], fields[5].split(",")[0]
    raise AssertionError("no root mount")


def test_root_is_a_read_only_tmpfs_with_only_what_was_asked() -> None:
    def inside(_: NamespaceStatus) -> tuple[tuple[str, str], bool, bool]:
        return _root_mount(), os.path.exists("/etc/passwd"), os.path.exists("/home")

    assert _entered(Namespaces(), inside) == (("tmpfs", "ro"), False, False)


def test_binds_read_only_writable_and_elsewhere(tmp_path: Path) -> None:
    (ro := tmp_path / "ro").mkdir()
    (ro / "seen").write_text("host data")
    (rw := tmp_path / "rw").mkdir()
    (other := tmp_path / "other").mkdir()
    (other / "f").write_text("moved")
    mount = Mount(ro=(str(ro),), rw=(str(rw),), binds=(Bind(str(other), "/data"),))

    def inside(_: NamespaceStatus) -> dict[str, object]:
        (rw / "written").write_text("from inside")
        return {
            "ro read": (ro / "seen").read_text(),
            "ro write": _write_errno(ro / "new"),
            "elsewhere": Path("/data/f").read_text(),
            "elsewhere write": _write_errno(Path("/data/new")),
        }

    seen = _entered(Namespaces(mount=mount), inside)
    assert seen == {
        "ro read": "host data",
        "ro write": errno.EROFS,
        "elsewhere": "moved",
        "elsewhere write": errno.EROFS,
    }
    assert (rw / "written").read_text() == "from inside"
    assert sorted(p.name for p in ro.iterdir()) == ["seen"]


def _write_errno(path: Path) -> int:
    try:
        path.write_text("x")
    except OSError as exc:
        return exc.errno or -1
    return 0


def test_tmp_is_private(tmp_path: Path) -> None:
    marker = Path("/tmp") / f"isolates-host-{os.getpid()}"
    marker.write_text("host")
    try:

        def inside() -> tuple[bool, int]:
            sys.path.append("/tmp")  # /tmp on sys.path must not make the host's visible
            enter(Namespaces())
            Path("/tmp/made-inside").write_text("x")
            return marker.exists(), _write_errno(Path("/tmp/again"))

        assert in_child(inside).unwrap() == (False, 0)
        assert not Path("/tmp/made-inside").exists()
    finally:
        marker.unlink()


DEV_ENTRIES = ["fd", "full", "null", "random", "shm"]
DEV_ENTRIES += ["stderr", "stdin", "stdout", "urandom", "zero"]


def test_dev_is_minimal_and_its_devices_work() -> None:
    def inside(_: NamespaceStatus) -> dict[str, object]:
        with open("/dev/null", "wb") as null:
            null.write(b"discarded")
        with open("/dev/zero", "rb") as zero, open("/dev/urandom", "rb") as urandom:
            reads = (zero.read(4), len(urandom.read(16)))
        return {
            "entries": sorted(os.listdir("/dev")),
            "reads": reads,
            "full": _write_errno(Path("/dev/full")),
            "create": _write_errno(Path("/dev/sda")),
        }

    assert _entered(Namespaces(), inside) == {
        "entries": DEV_ENTRIES,
        "reads": (b"\0\0\0\0", 16),
        "full": errno.ENOSPC,
        "create": errno.EROFS,
    }


def test_python_imports_lazily_after_enter() -> None:
    # Stdlib modules (some C extensions) that nothing in this suite imports; which are
    # still fresh depends on the tests that ran before, so offer plenty.
    candidates = (
        "sqlite3", "xml.dom.minidom", "wave", "mailbox", "netrc", "plistlib", "tomllib",
        "curses.ascii", "_lzma", "decimal", "zoneinfo", "csv", "ssl",
    )  # fmt: skip
    fresh = [name for name in candidates if name not in sys.modules]
    assert len(fresh) >= 3, f"too few modules left to import lazily: {fresh}"

    def inside(_: NamespaceStatus) -> list[str]:
        import importlib

        return [importlib.import_module(name).__name__ for name in fresh]

    assert _entered(Namespaces(), inside) == fresh


def test_the_interpreter_can_be_executed_inside() -> None:
    def inside(_: NamespaceStatus) -> bytes:
        argv = [sys.executable, "-I", "-c", "import os; print(os.getpid())"]
        return subprocess.run(argv, capture_output=True, check=True).stdout

    assert _entered(Namespaces(), inside) == b"2\n"


def test_runtime_paths_cover_the_interpreter_and_sys_path() -> None:
    paths = runtime_paths()
    for needed in (sys.base_prefix, *(p for p in sys.path if p and os.path.isdir(p))):
        assert any(needed == p or needed.startswith(p + "/") for p in paths), needed
    assert not {"/", "/tmp", "/dev", "/proc"} & set(paths)


def test_without_a_pid_namespace_proc_is_the_hosts() -> None:
    def inside(_: NamespaceStatus) -> tuple[bool, bool]:
        return str(os.getpid()) in os.listdir("/proc"), os.path.exists(f"/proc/{os.getppid()}")

    assert _entered(Namespaces(pid=False), inside) == (True, True)


def test_working_directory_is_kept_when_it_is_visible() -> None:
    cwd = os.getcwd()
    assert _entered(Namespaces(mount=Mount(ro=(cwd,))), lambda s: os.getcwd()) == cwd


def test_missing_bind_source_is_named() -> None:
    error = in_child(enter, Namespaces(mount=Mount(ro=("/no/such/dir",)))).error
    assert isinstance(error, SandboxError) and "/no/such/dir does not exist" in str(error)


def test_a_failing_mount_step_names_itself(tmp_path: Path) -> None:
    # The mount point would have to be created inside a read-only bind.
    clash = Mount(ro=(str(tmp_path),), binds=(Bind("/usr", f"{tmp_path}/new"),))
    error = in_child(enter, Namespaces(mount=clash)).error
    assert isinstance(error, SandboxError) and error.errno == errno.EROFS, error
    assert f"namespaces: mount namespace: bind /usr at {tmp_path}/new: Read-only" in str(error)
    assert not (tmp_path / "new").exists()

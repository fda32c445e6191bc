"""``isolates run``: real programs exec'd under policies built from options.

Every test runs the command line in a subprocess (``python -m isolates.orchestrator._cli``)
and looks at what the confined program could and could not do, side by side.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from isolates.orchestrator._cli.run_startup import exec_chain, library_dirs
from isolates.sandbox.profiles._pledge import too_broad

CLI = [sys.executable, "-m", "isolates.orchestrator._cli"]
PYTHON = sys.executable


def isolates(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "in.txt").write_text("in here\n")
    (tmp_path / "out.txt").write_text("out there\n")
    return tmp_path


# --- files --------------------------------------------------------------------------------


def test_pledge_stdio_rpath_runs_cat(files: Path) -> None:
    done = isolates("run", "--pledge", "stdio rpath", "--", "cat", str(files / "out.txt"))
    assert (done.returncode, done.stdout) == (0, "out there\n"), done.stderr


def test_read_limits_reading_to_the_directory(files: Path) -> None:
    inside, outside = files / "inside" / "in.txt", files / "out.txt"
    done = isolates("run", "--pledge", "stdio rpath", "--read", str(files / "inside"),
                    "--", "cat", str(inside), str(outside))  # fmt: skip
    assert done.stdout == "in here\n"  # allowed, next to the denial
    assert done.returncode == 1
    assert f"{outside}: Permission denied" in done.stderr


def test_paths_without_a_profile_confine_only_the_filesystem(files: Path) -> None:
    script = f"cat {files}/inside/in.txt; cat {files}/out.txt; echo $((6*7))"
    done = isolates("run", "--read", str(files / "inside"), "--", "sh", "-c", script)
    assert done.stdout == "42\n"  # sh runs, but may execute nothing but itself
    assert done.stderr.count("cat: Permission denied") == 2
    done = isolates("run", "--read", str(files / "inside"), "--exec", "/usr/bin",
                    "--", "sh", "-c", script)  # fmt: skip
    assert done.stdout == "in here\n42\n"
    assert f"{files}/out.txt: Permission denied" in done.stderr


def test_writing_needs_wpath_and_cpath(files: Path) -> None:
    target = files / "inside" / "new.txt"
    script = f"echo x > {target}"
    denied = isolates("run", "--pledge", "stdio rpath", "--", "sh", "-c", script)
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr
    assert not target.exists()
    allowed = isolates("run", "--pledge", "stdio rpath wpath cpath", "--", "sh", "-c", script)
    assert allowed.returncode == 0, allowed.stderr
    assert target.read_text() == "x\n"


def test_write_allows_one_directory(files: Path) -> None:
    inside, outside = files / "inside" / "new.txt", files / "new.txt"
    done = isolates("run", "--pledge", "stdio rpath", "--write", str(files / "inside"),
                    "--", "sh", "-c", f"echo a > {inside}; echo b > {outside}")  # fmt: skip
    assert inside.read_text() == "a\n"
    assert not outside.exists() and "Permission denied" in done.stderr


# --- with --pledge, the path options are unveil: they restrict ----------------------------

PATH_BOUND = ("tty", "tmppath", "dns", "getpw")  # promises that bring Landlock paths of their own
SECRET = "/etc/shadow"  # readable by root, which Landlock still confines


@pytest.fixture
def off_tmp() -> Iterator[Path]:
    """dir/file and a sibling, outside /tmp (which tmppath grants itself)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as name:
        root = Path(name)
        (root / "dir").mkdir()
        (root / "dir" / "file").write_text("granted\n")
        (root / "other").write_text("not granted\n")
        yield root


@pytest.mark.parametrize("promise", PATH_BOUND)
def test_read_confines_rpath_beside_a_path_bound_promise(promise: str, off_tmp: Path) -> None:
    granted, other = off_tmp / "dir" / "file", off_tmp / "other"
    done = isolates("run", "--pledge", f"stdio rpath {promise}", "--read", str(off_tmp / "dir"),
                    "--", "cat", str(granted), str(other), SECRET)  # fmt: skip
    assert done.stdout == "granted\n"  # the --read directory, next to the denials
    assert done.returncode == 1
    assert f"{other}: Permission denied" in done.stderr
    assert f"{SECRET}: Permission denied" in done.stderr
    unveiled = isolates("run", "--pledge", f"stdio rpath {promise}", "--", "cat", str(other))
    assert unveiled.stdout == "not granted\n"  # no path option: rpath is pledge's "/"


@pytest.mark.parametrize("promise", PATH_BOUND)
def test_write_confines_wpath_cpath_beside_a_path_bound_promise(
    promise: str, off_tmp: Path
) -> None:
    inside, outside = off_tmp / "dir" / "new", off_tmp / "new"
    script = f"echo a > {inside}; echo b > {outside}; read line < {SECRET} && echo read"
    done = isolates("run", "--pledge", f"stdio rpath wpath cpath {promise}",
                    "--write", str(off_tmp / "dir"), "--", "sh", "-c", script)  # fmt: skip
    assert inside.read_text() == "a\n"
    assert not outside.exists() and done.stdout == ""
    assert done.stderr.count("Permission denied") == 2, done.stderr


def test_exec_confines_exec_and_rpath_beside_a_path_bound_promise(off_tmp: Path) -> None:
    script = f"cat {off_tmp / 'other'} {SECRET}; /usr/bin/true && echo ran"
    done = isolates("run", "--pledge", "stdio rpath proc exec prot_exec tty",
                    "--exec", "/usr/bin", "--", "sh", "-c", script)  # fmt: skip
    assert done.stdout == "ran\n"  # programs beneath --exec run; files elsewhere stay shut
    assert done.stderr.count("Permission denied") == 2, done.stderr


def test_ld_library_path_never_opens_the_root_to_reading(off_tmp: Path) -> None:
    done = isolates("run", "--env", "LD_LIBRARY_PATH=/", "--pledge", "stdio rpath tty",
                    "--read", str(off_tmp / "dir"), "--", "cat", SECRET)  # fmt: skip
    assert done.returncode == 1 and f"{SECRET}: Permission denied" in done.stderr
    done = isolates("run", "--env", "LD_LIBRARY_PATH=/", "--read", str(off_tmp / "dir"),
                    "--", "cat", str(off_tmp / "dir" / "file"))  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "granted\n"), done.stderr


Grant = tuple[str, frozenset[str], str]  # path (or "TCP port N"), rights, source


def _grants(out: str) -> list[Grant]:
    """The Landlock grants --dry-run lists: ``    PATH: RIGHT|RIGHT  [SOURCE]``."""
    section = out.split("added so the program can start:")[0]
    grants = []
    for line in section.splitlines():
        if line.startswith("    "):
            head, source = line.strip().split("  [", 1)
            where, rights = head.rsplit(": ", 1)
            grants.append((where, frozenset(rights.split("|")), source.removesuffix("]")))
    return grants


def _rights(*names: str) -> frozenset[str]:
    return frozenset(names)


def test_dry_run_lists_every_landlock_grant_with_its_source(off_tmp: Path) -> None:
    read, write = off_tmp / "dir", off_tmp
    done = isolates("run", "--pledge", "stdio rpath wpath cpath tty tmppath",
                    "--read", str(read), "--write", str(write), "--exec", "/usr/bin",
                    "--net-connect", "443", "--dry-run", "--", "cat", SECRET)  # fmt: skip
    assert done.returncode == 0, done.stderr
    grants = _grants(done.stdout)
    assert len(grants) == len(set(grants))  # once each
    read_rights = _rights("READ_FILE", "READ_DIR")
    expected = [
        (str(read), read_rights, f"--read {read}"),
        (str(read), read_rights | {"IOCTL_DEV"}, f"pledge 'rpath' (Landlock: unveil '{read}' 'r')"),
        (str(write), _rights("WRITE_FILE", "TRUNCATE", "MAKE_REG"), f"--write {write}"),
        ("/usr/bin", _rights("EXECUTE", "READ_FILE"), "--exec /usr/bin"),
        ("/dev/tty", _rights("READ_FILE", "WRITE_FILE", "IOCTL_DEV"), "pledge 'tty' (Landlock)"),
        ("TCP port 443", _rights("CONNECT_TCP"), "--net-connect 443"),
        (str(Path("/usr/bin/cat").resolve()), _rights("EXECUTE", "READ_FILE"),
         "isolates run: start: the command"),
    ]  # fmt: skip
    for grant in expected:
        assert grant in grants, (grant, grants)
    sources = {source: (where, rights) for where, rights, source in grants}
    assert sources[f"pledge 'wpath cpath' (Landlock: unveil '{write}' 'wc')"][0] == str(write)
    assert sources["pledge 'tmppath' (Landlock)"][0] == "/tmp"
    assert any(s.startswith("isolates run: start: the dynamic loader of") for s in sources)
    assert "isolates run: start: library directory" in sources
    assert not any(where == "/" for where, _, _ in grants)  # nothing beneath "/"


def test_dry_run_shows_pledge_grants_beneath_root_without_path_options() -> None:
    done = isolates("run", "--pledge", "stdio rpath tty", "--dry-run", "--", "true")
    grants = _grants(done.stdout)
    read = _rights("READ_FILE", "READ_DIR", "IOCTL_DEV")
    assert ("/", read, "pledge 'rpath' (Landlock: beneath /)") in grants
    assert ("/dev/tty", _rights("READ_FILE", "WRITE_FILE", "IOCTL_DEV"),
            "pledge 'tty' (Landlock)") in grants  # fmt: skip


def test_kill_turns_a_violation_into_sigsys(files: Path) -> None:
    target = files / "new.txt"
    done = isolates("run", "--kill", "--pledge", "stdio rpath", "--",
                    "sh", "-c", f"echo before; echo x > {target}")  # fmt: skip
    assert done.returncode == -signal.SIGSYS
    assert done.stdout == "before\n" and not target.exists()


def test_systemd_groups(files: Path) -> None:
    path = str(files / "out.txt")
    done = isolates("run", "--systemd", "@basic-io @file-system", "--", "cat", path)
    assert (done.returncode, done.stdout) == (0, "out there\n"), done.stderr
    done = isolates("run", "--systemd", "@basic-io", "--", "cat", path)
    assert done.returncode == 1 and "Permission denied" in done.stderr


# --- network ------------------------------------------------------------------------------

CLIENT = "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1]))).send(b'hi')"


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        listening.setblocking(False)
        yield listening


def _accepted(listening: socket.socket) -> bytes | None:
    try:
        conn, _ = listening.accept()
    except BlockingIOError:
        return None
    with conn:
        conn.setblocking(True)
        return conn.recv(2)


def test_network_client_needs_net_connect(server: socket.socket) -> None:
    port = str(server.getsockname()[1])
    denied = isolates("run", "--pledge", "stdio rpath", "--", PYTHON, "-c", CLIENT, port)
    assert denied.returncode == 1 and "PermissionError" in denied.stderr
    assert _accepted(server) is None
    allowed = isolates("run", "--pledge", "stdio rpath", "--net-connect", port,
                       "--", PYTHON, "-c", CLIENT, port)  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert _accepted(server) == b"hi"


def test_net_connect_allows_only_its_port(server: socket.socket) -> None:
    port = server.getsockname()[1]
    done = isolates("run", "--net-connect", str(port + 1 if port < 65535 else port - 1),
                    "--", PYTHON, "-c", CLIENT, str(port))  # fmt: skip
    assert done.returncode == 1 and "Permission denied" in done.stderr
    assert _accepted(server) is None


# --- what run adds, exit codes, errors ----------------------------------------------------


def test_the_program_cannot_exec_anything_else() -> None:
    script = "/usr/bin/true && echo ran"
    done = isolates("run", "--pledge", "stdio rpath proc", "--", "sh", "-c", script)
    assert done.returncode == 126 and "Permission denied" in done.stderr
    done = isolates("run", "--pledge", "stdio rpath proc exec prot_exec", "--", "sh", "-c", script)
    assert (done.returncode, done.stdout) == (0, "ran\n"), done.stderr


def test_dry_run_shows_only_what_the_policy_lacks() -> None:
    bare = isolates("run", "--pledge", "stdio rpath", "--dry-run", "--", "true").stdout
    assert "seccomp Rule('execve')" in bare and "seccomp Rule('arch_prctl'" in bare
    assert "EXECUTE" in bare and "/etc/ld.so.cache" not in bare  # rpath reads already
    full = isolates("run", "--pledge", "stdio rpath exec prot_exec", "--dry-run", "--", "true")
    added = full.stdout.split("added so the program can start:\n")[1].split("seccomp rules:")[0]
    assert added == "  seccomp: -\n"  # exec and prot_exec: nothing to add, no domain


def test_exit_codes_propagate() -> None:
    assert isolates("run", "--pledge", "stdio", "--", "sh", "-c", "exit 7").returncode == 7
    killed = isolates("run", "--pledge", "stdio", "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == -signal.SIGTERM


def test_environment() -> None:
    done = isolates("run", "--clear-env", "--env", "GREETING=hi", "--env", "PATH", "--",
                    "sh", "-c", "echo $GREETING ${HOME:-no-home}")  # fmt: skip
    assert done.stdout == "hi no-home\n"


def test_unknown_command_exits_127() -> None:
    done = isolates("run", "--pledge", "stdio", "--", "no-such-command-here")
    assert done.returncode == 127
    assert done.stderr == "isolates run: no-such-command-here: command not found\n"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--pledge", "stdoi rpath"], "--pledge 'stdoi rpath': pledge: unknown promise 'stdoi'"),
        (["--systemd", "@basic-oi"], "--systemd '@basic-oi': systemd: unknown group"),
        (["--read", "/no/such/dir"], "--read /no/such/dir: no such file or directory"),
        (["--allow", "getppidd"], "--allow getppidd: unknown syscall 'getppidd'"),
        (["--net-connect", "70000"], "--net-connect 70000: Landlock.connect_tcp(70000)"),
        (["--env", "=x"], "--env =x: expected NAME=VALUE"),
    ],
)
def test_policy_errors_name_the_option(options: list[str], named: str) -> None:
    done = isolates("run", *options, "--", "true")
    assert done.returncode == 2
    assert done.stderr.startswith(f"isolates run: {named}")
    assert done.stderr.count("\n") == 1


def test_no_command_is_a_usage_error() -> None:
    done = isolates("run", "--pledge", "stdio")
    assert done.returncode == 2 and "no command given" in done.stderr


# --- the pieces ---------------------------------------------------------------------------


def test_exec_chain_follows_shebangs_to_the_loader(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh -e\necho hi\n")
    chain = exec_chain(str(script))
    assert chain[0] == str(script)
    assert chain[1] == str(Path("/bin/sh").resolve())
    assert "ld-linux" in Path(chain[2]).name and len(chain) == 3


def test_library_dirs_are_real_and_not_nested() -> None:
    dirs = library_dirs({"LD_LIBRARY_PATH": "/usr/lib/x86_64-linux-gnu:relative:/nope"})
    assert str(Path("/lib").resolve()) in dirs
    assert all(Path(d).is_dir() and Path(d).resolve() == Path(d) for d in dirs)
    assert not any(a != b and b.startswith(a + "/") for a in dirs for b in dirs)


def test_library_dirs_never_hold_the_root_or_home(tmp_path: Path) -> None:
    home = tmp_path / "home" / "me"
    home.mkdir(parents=True)
    env = {"LD_LIBRARY_PATH": f"/:{tmp_path}:{home}:{home}/..", "HOME": str(home)}
    dirs = library_dirs(env)
    assert str(Path("/usr/lib").resolve()) in dirs  # the loader's own, still there
    assert not any(too_broad(d, str(home)) for d in dirs)
    assert too_broad("/") and too_broad(str(tmp_path), str(home)) and not too_broad("/usr/lib")


def test_a_promise_with_no_linux_meaning_is_dropped_by_its_cli_option() -> None:
    refused = isolates("run", "--pledge", "stdio pf", "--", "true")
    assert refused.returncode == 2 and "pass --pledge-ignore pf to drop it" in refused.stderr
    assert "ignore={" not in refused.stderr
    dropped = isolates("run", "--pledge", "stdio pf", "--pledge-ignore", "pf", "--", "true")
    assert (dropped.returncode, dropped.stderr) == (0, "")
    unknown = isolates("run", "--pledge", "stdio", "--pledge-ignore", "bogus", "--", "true")
    assert unknown.returncode == 2 and "'bogus' in --pledge-ignore" in unknown.stderr


NAMESPACED = """
from isolates.orchestrator import Namespaces, isolate
def one() -> int:
    return 1
print(isolate(namespaces=Namespaces())(one)())
"""


def test_a_namespaced_isolate_under_run_blames_runs_filter_not_a_sysctl() -> None:
    done = isolates("run", "--", sys.executable, "-c", NAMESPACED)
    assert done.returncode != 0
    assert "already runs under a seccomp filter, which refuses unshare" in done.stderr
    assert "--allow unshare" in done.stderr and "sysctl" not in done.stderr


DENIED_TWICE = """
import os, socket, sys
for _ in range(2):
    try:
        socket.socket()
    except OSError as exc:
        print(exc.errno)
try:
    os.mkdir(sys.argv[1])
except OSError as exc:
    print(exc.errno)
sys.exit(3)
"""


def test_run_report_names_each_denied_call_with_its_path_and_keeps_the_status(
    tmp_path: Path,
) -> None:
    target = tmp_path / "made"
    python = ["--read", os.path.realpath(sys.base_exec_prefix), "--read", sys.prefix]
    done = isolates("run", "--report", "--pledge", "stdio rpath", *python, "--",
                    sys.executable, "-I", "-c", DENIED_TWICE, str(target))  # fmt: skip
    assert done.returncode == 3 and done.stdout.split() == ["1", "1", "1"]
    assert "isolates run: 3 calls denied by the policy:" in done.stderr
    assert "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0) -> EPERM (2 times)" in done.stderr
    assert f'mkdir("{target}", 0777) -> EPERM; allowed by --allow mkdir' in done.stderr
    assert not target.exists()  # reported, and never run
    quiet = isolates("run", "--no-report", "--pledge", "stdio rpath", *python, "--",
                     sys.executable, "-I", "-c", DENIED_TWICE, str(target))  # fmt: skip
    assert quiet.returncode == 3 and quiet.stdout.split() == ["1", "1", "1"]
    assert "denied" not in quiet.stderr


WRITE_PROMISES = "stdio rpath wpath cpath flock"


def test_rw_lets_sqlite_keep_a_database_and_nothing_else(tmp_path: Path) -> None:
    db = tmp_path / "db" / "data.sqlite"
    db.parent.mkdir()
    sql = "create table t(x); insert into t values (41), (1); select sum(x) from t;"
    done = isolates("run", "--pledge", WRITE_PROMISES, "--rw", str(db.parent), "--",
                    "sqlite3", str(db), sql)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr
    assert sorted(p.name for p in db.parent.iterdir()) == ["data.sqlite"]  # no hot journal
    outside = isolates("run", "--pledge", WRITE_PROMISES, "--rw", str(db.parent), "--",
                       "sqlite3", str(tmp_path / "elsewhere.sqlite"), sql)  # fmt: skip
    assert outside.returncode != 0 and not (tmp_path / "elsewhere.sqlite").exists()


def test_allow_fs_grants_rights_by_name_such_as_making_symlinks(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "file").write_text("x")
    (source / "link").symlink_to("file")
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(source), "."], check=True)
    out = tmp_path / "out"
    out.mkdir()
    # no promises: the path options alone confine (a pledge's "c" would bring symlinks)
    base = ["run", "--read", str(archive)]
    untar = ["--", "tar", "--no-same-owner", "-xf", str(archive), "-C", str(out)]
    refused = isolates(*base, "--allow-fs", f"{out}:read,write,create,delete", *untar)
    assert refused.returncode != 0 and not (out / "link").is_symlink()
    for left in out.iterdir():
        left.unlink()
    made = isolates(*base, "--allow-fs", f"{out}:read,write,create,delete,make_sym", *untar)
    assert made.returncode == 0, made.stderr
    assert (out / "link").is_symlink() and (out / "link").read_text() == "x"
    bad = isolates("run", "--allow-fs", f"{out}:reed", "--", "true")
    assert bad.returncode == 2 and "unknown right 'reed'" in bad.stderr and "'read'" in bad.stderr


def test_tmp_is_a_private_writable_directory_removed_at_the_end(tmp_path: Path) -> None:
    script = 'echo hi > "$TMPDIR/f" && read l < "$TMPDIR/f" && echo "$l $TMPDIR" && : > /var/tmp/no'
    done = isolates("run", "--pledge", WRITE_PROMISES, "--read", "/", "--tmp",
                    "--", "sh", "-c", script)  # fmt: skip
    lines = done.stdout.split()
    assert lines[0] == "hi" and "isolates-run-" in lines[1], done.stderr
    assert done.returncode != 0  # /var/tmp/no: outside, refused
    assert not os.path.exists(lines[1]) and not os.path.exists("/var/tmp/no")


def test_dns_lets_the_resolver_read_its_files_and_nothing_more() -> None:
    code = "print(len(open('/etc/hosts').read()) > 0); open('/etc/shadow')"
    python = ["--read", os.path.realpath(sys.base_exec_prefix), "--read", sys.prefix]
    done = isolates("run", "--pledge", "stdio rpath", *python, "--dns", "--",
                    sys.executable, "-I", "-c", code)  # fmt: skip
    assert done.stdout == "True\n" and "PermissionError" in done.stderr


def test_run_profile_runs_a_policy_file_and_names_its_mistakes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("inside\n")
    profile = tmp_path / "cat.toml"
    profile.write_text(f'version = 1\n[profile]\npledge = "stdio rpath"\n\n'
                       f'[[ruleset]]\nkind = "landlock"\nread = ["{data}"]\n')  # fmt: skip
    done = isolates("run", "--profile", str(profile), "--", "cat", str(data / "a.txt"))
    assert (done.returncode, done.stdout) == (0, "inside\n"), done.stderr
    denied = isolates("run", "--profile", str(profile), "--", "cat", "/etc/hostname")
    assert denied.returncode == 1 and "Permission denied" in denied.stderr
    profile.write_text('version = 1\ndefault = "EPERM"\nrulez = 1\n')
    bad = isolates("run", "--profile", str(profile), "--", "true")
    assert bad.returncode == 2 and f"{profile}:3: rulez: unknown key" in bad.stderr


def test_dry_run_warns_where_a_profile_grants_wider_than_the_options(tmp_path: Path) -> None:
    wide = isolates("run", "--dry-run", "--pledge", "stdio rpath tmppath", "--read", str(tmp_path),
                    "--", "true")  # fmt: skip
    assert wide.returncode == 0
    said = "warning: /tmp [pledge 'tmppath' (Landlock)] is wider than the options' paths"
    assert f"{said}: above {tmp_path}" in wide.stdout
    narrow = isolates("run", "--dry-run", "--pledge", "stdio rpath", "--read", str(tmp_path),
                      "--", "true")  # fmt: skip
    assert narrow.returncode == 0 and "warning:" not in narrow.stdout

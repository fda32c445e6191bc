"""Every filesystem right against the kernel: what it allows works, in a forked child,
and the neighbouring operation fails (EACCES; EXDEV for reparenting without REFER)."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import stat
import termios
from pathlib import Path

import pytest

from isolates.sandbox import Compat, Landlock
from isolates.sandbox._landlock import AccessFs, apply_plan
from tests.sandbox.test_landlock_child import attempt, run

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of devices needs CAP_MKNOD")


def confine(ll: Landlock) -> None:
    """Enforce ``ll`` on this (child) thread, insisting the kernel supports all of it."""
    status = apply_plan(ll.plan(Compat.HARD))
    assert status.enforcement == "full", status


@pytest.fixture
def d(tmp_path: Path) -> Path:
    """A directory with a file, an empty subdirectory and a sibling outside it."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "f").write_text("inside")
    (tmp_path / "outside").write_text("outside")
    return tmp_path / "d"


def test_read_file_reads_but_does_not_write(d: Path) -> None:
    def child() -> tuple[str, str, str]:
        confine(Landlock().allow(d / "f", AccessFs.READ_FILE))
        return (
            (d / "f").read_text(),
            attempt(os.open, d / "f", os.O_WRONLY),
            attempt(os.open, d.parent / "outside", os.O_RDONLY),
        )

    assert run(child) == ("inside", "EACCES", "EACCES")


def test_write_file_writes_but_does_not_read(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(Landlock().allow(d / "f", AccessFs.WRITE_FILE))
        fd = os.open(d / "f", os.O_WRONLY)
        os.write(fd, b"INSIDE")
        os.close(fd)
        return attempt(os.open, d / "f", os.O_RDONLY), attempt(os.open, d / "f", os.O_RDWR)

    assert run(child) == ("EACCES", "EACCES")
    assert (d / "f").read_text() == "INSIDE"


def test_read_dir_lists_but_does_not_read_files(d: Path) -> None:
    def child() -> tuple[list[str], str, str]:
        confine(Landlock().allow(d, AccessFs.READ_DIR))
        listing = sorted(os.listdir(d))
        return listing, attempt(os.open, d / "f", os.O_RDONLY), attempt(os.listdir, d.parent)

    assert run(child) == (["f", "sub"], "EACCES", "EACCES")


def test_execute_runs_but_read_alone_does_not(d: Path) -> None:
    (d / "x").mkdir()
    exe = shutil.copy("/bin/true", d / "x" / "true")
    copy = shutil.copy("/bin/true", d / "sub" / "true")

    def child() -> tuple[str, str]:
        # The kernel opens a program for reading to load it: Landlock wants READ_FILE too.
        ll = Landlock().allow(d / "x", AccessFs.EXECUTE | AccessFs.READ_FILE)
        ll = ll.allow(d / "sub", AccessFs.READ_FILE)
        confine(_with_loader(ll))
        return _exec(exe), _exec(copy)

    assert run(child) == ("ok", "EACCES")


def test_remove_file_unlinks_but_does_not_rmdir(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(Landlock().allow(d, AccessFs.REMOVE_FILE))
        return attempt(os.unlink, d / "f"), attempt(os.rmdir, d / "sub")

    assert run(child) == ("ok", "EACCES")
    assert not (d / "f").exists()


def test_remove_dir_rmdirs_but_does_not_unlink(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(Landlock().allow(d, AccessFs.REMOVE_DIR))
        return attempt(os.rmdir, d / "sub"), attempt(os.unlink, d / "f")

    assert run(child) == ("ok", "EACCES")


def test_make_dir_makes_directories_only(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(Landlock().allow(d, AccessFs.MAKE_DIR))
        return attempt(os.mkdir, d / "new"), attempt(os.mknod, d / "reg", stat.S_IFREG | 0o600)

    assert run(child) == ("ok", "EACCES")


def test_make_reg_makes_regular_files_only(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(Landlock().allow(d, AccessFs.MAKE_REG))
        return attempt(os.mknod, d / "reg", stat.S_IFREG | 0o600), attempt(os.mkdir, d / "new")

    assert run(child) == ("ok", "EACCES")


def test_make_sock_binds_a_unix_socket_and_nothing_else(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(Landlock().allow(d, AccessFs.MAKE_SOCK))
        with socket.socket(socket.AF_UNIX) as sock:
            bound = attempt(sock.bind, str(d / "sock"))
        return bound, attempt(os.mkfifo, d / "fifo")

    assert run(child) == ("ok", "EACCES")
    assert stat.S_ISSOCK((d / "sock").lstat().st_mode)


def test_make_fifo_makes_named_pipes_and_nothing_else(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(Landlock().allow(d, AccessFs.MAKE_FIFO))
        with socket.socket(socket.AF_UNIX) as sock:
            return attempt(os.mkfifo, d / "fifo"), attempt(sock.bind, str(d / "sock"))

    assert run(child) == ("ok", "EACCES")


def test_make_sym_makes_symlinks_only(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(Landlock().allow(d, AccessFs.MAKE_SYM))
        return attempt(os.symlink, "f", d / "link"), attempt(os.mkfifo, d / "fifo")

    assert run(child) == ("ok", "EACCES")


@as_root
def test_make_char_makes_character_devices_only(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(Landlock().allow(d, AccessFs.MAKE_CHAR))
        null = os.makedev(1, 3)
        return (
            attempt(os.mknod, d / "null", stat.S_IFCHR | 0o600, null),
            attempt(os.mknod, d / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 0)),
        )

    assert run(child) == ("ok", "EACCES")


@as_root
def test_make_block_makes_block_devices_only(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(Landlock().allow(d, AccessFs.MAKE_BLOCK))
        return (
            attempt(os.mknod, d / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 0)),
            attempt(os.mknod, d / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        )

    assert run(child) == ("ok", "EACCES")


def test_refer_reparents_and_without_it_the_kernel_says_exdev(d: Path) -> None:
    for name in ("a", "b", "c"):
        (d / name).mkdir()
    (d / "a" / "one").write_text("1")
    (d / "a" / "two").write_text("2")
    move = AccessFs.MAKE_REG | AccessFs.REMOVE_FILE

    def child() -> tuple[str, str, str]:
        confine(
            Landlock()
            .allow(d / "a", move | AccessFs.REFER)
            .allow(d / "b", move | AccessFs.REFER)
            .allow(d / "c", move)
        )
        return (
            attempt(os.rename, d / "a" / "one", d / "b" / "one"),
            attempt(os.rename, d / "a" / "two", d / "c" / "two"),
            attempt(os.rename, d / "a" / "two", d / "a" / "deux"),  # same dir: no REFER
        )

    assert run(child) == ("ok", "EXDEV", "ok")


def test_without_truncate_o_trunc_and_ftruncate_fail(d: Path) -> None:
    (d / "g").write_text("keep")

    def child() -> tuple[str, str, str, str]:
        confine(
            Landlock()
            .allow(d / "f", AccessFs.WRITE_FILE | AccessFs.TRUNCATE)
            .allow(d / "g", AccessFs.WRITE_FILE)
        )
        fd = os.open(d / "g", os.O_WRONLY)
        try:
            denied = attempt(os.ftruncate, fd, 0)
        finally:
            os.close(fd)
        allowed = attempt(os.truncate, d / "f", 2)
        return (
            allowed,
            attempt(os.open, d / "g", os.O_WRONLY | os.O_TRUNC),
            denied,
            attempt(os.truncate, d / "g", 0),
        )

    assert run(child) == ("ok", "EACCES", "EACCES", "EACCES")
    assert (d / "f").read_text() == "in"
    assert (d / "g").read_text() == "keep"


def test_ioctl_dev_allows_device_ioctls(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(
            Landlock()
            .allow("/dev/null", AccessFs.READ_FILE | AccessFs.IOCTL_DEV)
            .allow("/dev/zero", AccessFs.READ_FILE)
        )
        return _tcgets("/dev/null"), _tcgets("/dev/zero")

    # ENOTTY: the ioctl reached the driver, which has no terminal to describe.
    assert run(child) == ("ENOTTY", "EACCES")


def test_group_methods_grant_what_they_say(d: Path) -> None:
    def child() -> dict[str, str]:
        confine(Landlock().read(d / "sub").write(d).list(d.parent))
        return {
            "write new file": attempt((d / "new").write_text, "x"),
            "overwrite": attempt((d / "f").write_text, "y"),
            "read beneath write": attempt((d / "f").read_text),
            "read beneath read": attempt(os.listdir, d / "sub"),
            "list": attempt(os.listdir, d.parent),
            "mkdir": attempt(os.mkdir, d / "dir"),
            "delete": attempt(os.unlink, d / "f"),
        }

    assert run(child) == {
        "write new file": "ok",
        "overwrite": "ok",
        "read beneath write": "EACCES",
        "read beneath read": "ok",
        "list": "ok",
        "mkdir": "EACCES",
        "delete": "EACCES",
    }


def test_create_and_delete_groups(d: Path) -> None:
    def child() -> dict[str, str]:
        confine(Landlock().create(d).delete(d / "sub"))
        return {
            "mkdir": attempt(os.mkdir, d / "dir"),
            "mknod": attempt(os.mknod, d / "reg", stat.S_IFREG | 0o600),
            "symlink": attempt(os.symlink, "f", d / "link"),
            "delete outside sub": attempt(os.unlink, d / "f"),
        }

    assert run(child) == {"mkdir": "ok", "mknod": "ok", "symlink": "EACCES",
                          "delete outside sub": "EACCES"}  # fmt: skip


def test_tmp_grants_everything_beneath_one_directory(d: Path) -> None:
    def child() -> list[str]:
        confine(Landlock().tmp(d))
        (d / "sub" / "x").write_text("x")
        os.symlink("x", d / "sub" / "link")
        os.mkfifo(d / "fifo")
        os.rename(d / "sub" / "x", d / "y")
        shutil.rmtree(d / "sub")
        return [sorted(os.listdir(d)), attempt((d.parent / "outside").read_text)]

    assert run(child) == [["f", "fifo", "y"], "EACCES"]


def test_a_rule_on_a_missing_path_is_skipped_when_missing_ok(d: Path) -> None:
    def child() -> tuple[str, str]:
        confine(Landlock().read(d / "later", missing_ok=True).read(d / "f"))
        return attempt((d / "f").read_text), attempt((d / "sub").iterdir)

    assert run(child) == ("ok", "ok")  # iterdir is lazy: listing happens on next()


def test_directory_rights_are_dropped_if_a_missing_path_turns_out_a_file(d: Path) -> None:
    later = d / "later"
    ll = Landlock().read(later, missing_ok=True)  # a directory's rights, for now
    later.write_text("a file after all")

    def child() -> str:
        confine(ll)
        return later.read_text()

    assert run(child) == "a file after all"


# -- helpers -------------------------------------------------------------------------------


def _with_loader(ll: Landlock) -> Landlock:
    """What exec'ing a dynamic binary needs: the loader (executed by the kernel), libc and
    the loader cache (read by the loader)."""
    for lib in _mapped("ld-linux", "libc.so"):
        ll = ll.allow(lib, AccessFs.READ_FILE | AccessFs.EXECUTE)
    return ll.read("/etc/ld.so.cache", missing_ok=True)


def _mapped(*names: str) -> list[str]:
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "/" in line}
    return [os.path.realpath(p) for p in paths if any(n in p for n in names)]


def _exec(path: str) -> str:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the grandchild
        try:
            os.execv(path, [path])
        except OSError as exc:
            os._exit(100 + (exc.errno or 0))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return "ok" if code == 0 else errno.errorcode[code - 100]


def _tcgets(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return attempt(fcntl.ioctl, fd, termios.TCGETS, bytes(64))
    finally:
        os.close(fd)

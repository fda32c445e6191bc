"""The Landlock builder without a kernel: what it handles, what it refuses (PolicyError
at the call that is wrong), immutability, merging, and the syscalls its rights imply."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isolates.sandbox import Landlock, Policy, PolicyError, RuleSet, SystemIO
from isolates.sandbox._builtins_io import WRITE_FLAGS
from isolates.sandbox._landlock import AccessFs, AccessNet, Scope
from isolates.sandbox._landlock_abi import ALL_FS


@pytest.fixture
def d(tmp_path: Path) -> Path:
    (tmp_path / "f").write_text("a file")
    return tmp_path


def test_an_empty_ruleset_handles_nothing() -> None:
    plan = Landlock().plan()
    assert (plan.handled_fs, plan.handled_net, plan.scoped, plan.paths) == (0, 0, 0, ())
    assert Landlock().rules() == ()


def test_one_path_handles_the_whole_filesystem_and_nothing_else(d: Path) -> None:
    plan = Landlock().read(d).plan()
    assert plan.handled_fs == ALL_FS
    assert (plan.handled_net, plan.scoped) == (0, 0)
    st = d.stat()  # the grant remembers the object, checked again when applied
    rights = AccessFs.READ_FILE | AccessFs.READ_DIR
    assert plan.paths == ((str(d), rights, False, st.st_dev, st.st_ino),)


def test_one_port_handles_bind_and_connect_and_not_the_filesystem() -> None:
    plan = Landlock().connect_tcp(443).plan()
    assert plan.handled_net == AccessNet.BIND_TCP | AccessNet.CONNECT_TCP
    assert (plan.handled_fs, plan.ports) == (0, ((443, AccessNet.CONNECT_TCP),))


def test_deny_fs_and_deny_tcp_handle_without_granting() -> None:
    plan = Landlock().deny_fs().deny_tcp().plan()
    assert (plan.handled_fs, plan.handled_net, plan.paths, plan.ports) == (ALL_FS, 3, (), ())


def test_scopes_are_handled_only_when_asked() -> None:
    assert Landlock().scope(Scope.SIGNAL).plan().scoped == Scope.SIGNAL
    both = Landlock().scope(Scope.SIGNAL).scope(Scope.ABSTRACT_UNIX_SOCKET).plan()
    assert both.scoped == Scope.SIGNAL | Scope.ABSTRACT_UNIX_SOCKET


def test_audit_flags_map_to_the_kernel_flags() -> None:
    assert Landlock().audit().plan().restrict_flags == 0
    quiet = Landlock().audit(same_exec=False, new_exec=True, subdomains=False)
    assert quiet.plan().restrict_flags == 0b111


def test_builders_return_copies(d: Path) -> None:
    base = Landlock()
    read = base.read(d)
    assert base.plan().paths == () and read.plan().paths != ()
    assert read.connect_tcp(1) is not read and read.plan().ports == ()


def test_a_missing_path_is_refused_unless_opted_out(d: Path) -> None:
    with pytest.raises(PolicyError, match=r"Landlock.read\('.*/nope'\): no such file.*missing_ok"):
        Landlock().read(d / "nope")
    plan = Landlock().read(d / "nope", missing_ok=True).plan()
    rights = AccessFs.READ_FILE | AccessFs.READ_DIR
    assert plan.paths == ((str(d / "nope"), rights, True, 0, 0),)  # no object yet


def test_directory_rights_on_a_file_are_refused_saying_so(d: Path) -> None:
    with pytest.raises(PolicyError, match="READ_DIR, MAKE_REG only apply to directories"):
        Landlock().allow(d / "f", AccessFs.READ_FILE | AccessFs.READ_DIR | AccessFs.MAKE_REG)
    for group in ("list", "create", "delete", "tmp"):
        with pytest.raises(PolicyError, match=f"{group} applies to directories"):
            getattr(Landlock(), group)(d / "f")


def test_groups_narrow_to_file_rights_on_a_file(d: Path) -> None:
    ll = Landlock().read(d / "f").write(d / "f").execute(d / "f")
    assert [rights for _, rights in ll.grants()] == [
        AccessFs.READ_FILE,
        AccessFs.WRITE_FILE | AccessFs.TRUNCATE,
        AccessFs.EXECUTE | AccessFs.READ_FILE,
    ]


def test_relative_paths_become_absolute(d: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(d)
    assert Landlock().read("f").grants() == ((str(d / "f"), AccessFs.READ_FILE),)


@pytest.mark.parametrize("rights", [4, AccessNet.BIND_TCP, Scope.SIGNAL, AccessFs(0)])
def test_rights_must_be_access_fs_flags(d: Path, rights: object) -> None:
    with pytest.raises(PolicyError, match="rights are AccessFs flags"):
        Landlock().allow(d, rights)  # type: ignore[arg-type]


@pytest.mark.parametrize("port", [-1, 65536, True, "80", 8.0])
def test_bad_ports_are_refused(port: object) -> None:
    with pytest.raises(PolicyError, match=r"connect_tcp\(.*\): a TCP port is an int, 0 to 65535"):
        Landlock().connect_tcp(port)  # type: ignore[arg-type]


def test_bad_scopes_and_paths_are_refused() -> None:
    with pytest.raises(PolicyError, match="pass Scope flags"):
        Landlock().scope(2)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="a path is a str"):
        Landlock().read(b"/etc")  # type: ignore[arg-type]


def test_syscall_rules_belong_in_another_ruleset() -> None:
    with pytest.raises(PolicyError, match="put syscall rules in another RuleSet"):
        Landlock().allow_rule("read")
    with pytest.raises(PolicyError, match="put syscall rules in another RuleSet"):
        Landlock().deny("read")


def test_merge_is_the_union(d: Path) -> None:
    a = Landlock().read(d).scope(Scope.SIGNAL)
    b = Landlock().connect_tcp(80).audit(new_exec=True).read(d)
    plan = Landlock.merge([a, b]).plan()
    assert (plan.handled_fs, plan.handled_net, plan.scoped) == (ALL_FS, 3, Scope.SIGNAL)
    assert (len(plan.paths), plan.ports, plan.restrict_flags) == (1, ((80, 2),), 0b10)


def test_a_policy_merges_every_rulesets_landlock(d: Path) -> None:
    policy = Policy(Landlock().read(d), Landlock().connect_tcp(80))
    assert policy.landlock is not None
    assert policy.landlock.plan().ports == ((80, AccessNet.CONNECT_TCP),)
    assert policy.landlock.grants() == Landlock().read(d).grants()


# -- implied syscalls: as tight as the rights ------------------------------------------------


def opens(rules: RuleSet | Policy) -> set[tuple[object, ...]]:
    entries = rules.entries() if isinstance(rules, Policy) else rules.rules()
    return {
        tuple((c.mask, c.value) for c in e.conditions)
        for e in entries
        if getattr(e, "syscall", None) in ("open", "openat")
    }


def names(rules: RuleSet) -> set[str]:
    return {r.syscall for r in rules.rules()}


def test_read_implies_only_read_only_opens_and_no_write(d: Path) -> None:
    ll = Landlock().read(d)
    assert opens(ll) == {((WRITE_FLAGS, 0),)}
    assert names(ll) >= {"openat", "read", "getdents64"}
    assert not names(ll) & {"write", "pwrite64", "unlink", "mkdir", "ftruncate", "execve"}


def test_write_implies_write_opens_and_writes_but_no_reads(d: Path) -> None:
    ll = Landlock().write(d / "f")
    acc = os.O_ACCMODE | 0o20000000
    assert opens(ll) == {((acc, os.O_WRONLY),), ((acc, os.O_RDWR),)}
    assert names(ll) >= {"write", "ftruncate"} and "read" not in names(ll)


def test_each_right_implies_its_syscalls(d: Path) -> None:
    implied = {
        AccessFs.EXECUTE: "execve",
        AccessFs.REMOVE_DIR: "rmdir",
        AccessFs.REMOVE_FILE: "unlink",
        AccessFs.MAKE_CHAR: "mknodat",
        AccessFs.MAKE_DIR: "mkdirat",
        AccessFs.MAKE_SOCK: "mknodat",
        AccessFs.MAKE_SYM: "symlinkat",
    }
    for right, syscall in implied.items():
        assert syscall in names(Landlock().allow(d, right)), right
    # Rights that Landlock checks on calls seccomp cannot tell apart imply nothing:
    # ioctl on a device or an inherited terminal, bind of a unix path or of a UDP port,
    # connect of TCP or anything else.
    assert "ioctl" not in names(Landlock().allow(d, AccessFs.IOCTL_DEV))
    assert "bind" not in names(Landlock().allow(d, AccessFs.MAKE_SOCK))
    assert names(Landlock().connect_tcp(1)) == set()
    assert names(Landlock().bind_tcp(1)) == set()
    assert "rename" in names(Landlock().allow(d, AccessFs.MAKE_REG | AccessFs.REMOVE_FILE))
    assert "rename" not in names(Landlock().allow(d, AccessFs.MAKE_REG))


def test_readonly_opens_plus_landlock_read_merge_without_conflict(d: Path) -> None:
    policy = Policy(SystemIO.nothing().allow_open_readonly(), Landlock().read(d))
    assert opens(policy) == {((WRITE_FLAGS, 0),)}  # still read-only: nothing widened


def test_stdout_plus_landlock_write_allows_write_on_any_descriptor(d: Path) -> None:
    policy = Policy(SystemIO.nothing().allow_stdout(), Landlock().write(d))
    writes = [e for e in policy.entries() if e.syscall == "write"]
    assert [e.conditions for e in writes] == [()]  # needed to write the files it opens
    assert not [e for e in policy.entries() if e.syscall in ("read", "unlink")]


def test_a_denied_syscall_a_right_needs_is_a_conflict(d: Path) -> None:
    with pytest.raises(PolicyError, match="'getdents64': Landlock needs it"):
        Policy(RuleSet.nothing().deny("getdents64"), Landlock().list(d))

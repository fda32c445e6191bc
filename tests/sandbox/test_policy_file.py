"""Policy files: TOML in, Policy out, and back. What a file says is enforced in a real
child; what ``to_toml`` writes of any policy compiles to the same filter and plan; a
mistake names the file, the line and the key."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from isolates.sandbox import (
    Action,
    Arg,
    Landlock,
    Networking,
    Policy,
    PolicyError,
    Processes,
    Rule,
    RuleSet,
    Signals,
    SystemIO,
    Threads,
    Time,
    profiles,
)
from tests.forked import in_child

HAND_WRITTEN = """
# a parser: reads one directory, writes standard output, nothing else
version = 1
default = "EACCES"

[[ruleset]]
kind = "builtin"
class = "SystemIO"
allow = ["allow_stdout", "allow_read", "allow_open", "allow_metadata"]

[[ruleset]]
kind = "rules"
name = "clock"
rules = [
    "clock_nanosleep",
    { syscall = "ioctl", args = [{ arg = 1, op = "==", value = 0x5401 }] },
    { syscall = "uname", action = "ENOSYS" },
]

[[ruleset]]
kind = "landlock"
name = "data"
read = ["{data}"]
"""


def _same(a: Policy, b: Policy) -> None:
    ca, cb = a.compile(pid=1234, all_threads=True), b.compile(pid=1234, all_threads=True)
    assert ca.bpf == cb.bpf
    assert ca.landlock == cb.landlock


def test_a_hand_written_file_is_enforced_in_a_child(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("42")
    policy = Policy.from_toml(HAND_WRITTEN.replace("{data}", str(data)))

    def child() -> tuple[str, int, int, int]:
        policy.apply()
        with open(data / "in.txt") as f:
            read = f.read()
        denied = []
        for attempt in (lambda: Path("/etc/hostname").read_text(), socket.socket, os.uname):
            try:
                attempt()
            except OSError as exc:
                denied.append(exc.errno or 0)
        return read, *denied  # type: ignore[return-value]

    assert in_child(child).unwrap() == ("42", errno.EACCES, errno.EACCES, errno.ENOSYS)


def test_load_reads_a_file_and_names_it_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('version = 1\ndefault = "allow"\n')
    assert Policy.load(path).default == Action.ALLOW
    path.write_text('version = 1\n\n[[ruleset]]\nkind = "rules"\nrules = [{ syscall = "opne" }]\n')
    with pytest.raises(PolicyError) as err:
        Policy.load(path)
    said = str(err.value)
    assert said.startswith(f"{path}:5: ruleset[0].rules[0].syscall: unknown syscall 'opne'")
    assert "'open'" in said  # the suggestion


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('version = 1\ndefualt = "allow"\n',
         "<policy>:2: defualt: unknown key; did you mean 'default'?"),
        ('version = 2\n', "<policy>:1: version: 2: this isolates reads version 1"),
        ('default = "EPRM"\n', "<policy>:1: default: 'EPRM' is no action"),
        ('[[ruleset]]\nkind = "builtin"\nclass = "SystemIo"\n',
         "<policy>:3: ruleset[0].class: 'SystemIo' is no builtin RuleSet; "
         "did you mean 'SystemIO'?"),
        ('[[ruleset]]\nkind = "builtin"\nclass = "SystemIO"\nallow = ["allow_stdot"]\n',
         "<policy>:4: ruleset[0].allow[0]: SystemIO has no 'allow_stdot'"),
        ('[[ruleset]]\nkind = "landlock"\nallow = [{ path = "/", rights = ["reed"] }]\n',
         "<policy>:3: ruleset[0].allow[0].rights: 'reed' is no AccessFs right"),
        ('[[ruleset]]\nkind = "rules"\nrules = [{ syscall = "ioctl", args = [{ arg = 9 }] }]\n',
         "<policy>:3: ruleset[0].rules[0].args[0].arg: 9: an argument index"),
        ('default = \n', "<policy>:1: not TOML"),
    ],
)  # fmt: skip
def test_a_mistake_names_the_line_and_the_key(text: str, says: str) -> None:
    with pytest.raises(PolicyError) as err:
        Policy.from_toml(text)
    assert str(err.value).startswith(says), str(err.value)


def test_a_profile_is_the_base_the_rulesets_add_to() -> None:
    text = '[profile]\npledge = "stdio rpath"\n\n[[ruleset]]\nkind = "rules"\nrules = ["uname"]\n'
    loaded = Policy.from_toml(text)
    _same(
        loaded,
        profiles.pledge("stdio rpath").extend(RuleSet("uname")).extend(default=Action.ERRNO()),
    )
    systemd = Policy.from_toml('[profile]\nsystemd = "@system-service"\n')
    assert systemd.allows("openat") and not systemd.allows("mount")


BUILTINS = {
    SystemIO: ["allow_stdout", "allow_stderr", "allow_read", "allow_open", "allow_metadata"],
    Networking: ["allow_tcp_clients", "allow_unix_clients", "allow_udp_clients"],
    Threads: ["allow_create", "allow_sleep"],
    Time: ["allow_sleep"],
    Processes: ["allow_fork", "allow_exec"],
    Signals: ["allow_kill_self"],
}


@st.composite
def policies(draw: st.DrawFn, directory: str) -> Policy:
    parts: list[object] = []
    for cls, methods in BUILTINS.items():
        chosen = draw(st.lists(st.sampled_from(methods), unique=True, max_size=3))
        rs = cls.nothing()
        for m in chosen:
            rs = getattr(rs, m)()
        if chosen:
            parts.append(rs)
    if draw(st.booleans()):
        value = draw(st.integers(0, 2**64 - 1))
        mask = draw(st.integers(1, 2**64 - 1))
        parts.append(RuleSet(Rule("prctl", Arg(0) == draw(st.integers(0, 60))),
                             Rule("ioctl", Arg(1) & mask == value & mask),
                             Rule("getrusage", Arg(0) < value),
                             Rule("uname", action=Action.ERRNO(draw(st.integers(1, 4095)))),
                             name=draw(st.text(min_size=1, max_size=12))))  # fmt: skip
    if draw(st.booleans()):
        ll = Landlock(name="ll").read(directory)
        if draw(st.booleans()):
            ll = ll.write(directory).connect_tcp(draw(st.integers(1, 65535)))
        parts.append(ll)
    if draw(st.booleans()):
        parts.append(
            profiles.pledge(draw(st.sampled_from(["stdio", "stdio rpath", "stdio inet dns"])))
        )
    default = draw(st.sampled_from([Action.ERRNO(), Action.KILL_PROCESS, Action.ALLOW, Action.LOG,
                                    Action.ERRNO(errno.ENOSYS), Action.KILL_THREAD]))  # fmt: skip
    rulesets: list[object] = []
    for part in parts:
        rulesets += list(part.rulesets[1:]) if isinstance(part, Policy) else [part]
    try:
        return Policy(*rulesets, default=default)  # type: ignore[arg-type]
    except PolicyError:  # two parts that conflict (a pledge's write and SystemIO's)
        reject()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_what_to_toml_writes_compiles_to_the_same_filter_and_plan(
    data: st.DataObject, tmp_path: Path
) -> None:
    policy = data.draw(policies(str(tmp_path)))
    text = policy.to_toml()
    loaded = Policy.from_toml(text)
    _same(policy, loaded)
    assert loaded.to_toml() == text  # and writes itself the same way

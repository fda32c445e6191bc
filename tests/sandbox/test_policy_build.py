"""Building policies: conflicts, unknown names, immutability, compilation. No kernel here."""

from __future__ import annotations

import errno
import socket

import pytest

from isolates.sandbox import (
    ALWAYS_DENIED,
    Action,
    Arg,
    Networking,
    Pipes,
    Policy,
    PolicyError,
    Processes,
    Rule,
    RuleSet,
    Signals,
    SystemIO,
    Threads,
    Time,
)


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)


def test_unknown_syscall_suggests_the_right_name() -> None:
    with pytest.raises(PolicyError, match=r"unknown syscall 'getpidd'.*did you mean 'getpid'"):
        Policy(RuleSet.nothing().allow("getpidd"))


def test_unknown_syscall_names_the_ruleset() -> None:
    with pytest.raises(PolicyError, match=r"^mine: Rule\('opne'\)"):
        Policy(RuleSet("opne", name="mine"))


def test_unconditional_and_conditional_rules_conflict_naming_both_rulesets() -> None:
    outright = RuleSet("write", name="Logging")
    stdout = SystemIO.nothing().allow_stdout()
    with pytest.raises(PolicyError) as err:
        Policy(outright, stdout)
    message = str(err.value)
    assert "'write'" in message and "Logging" in message and "SystemIO" in message
    assert "dead" in message


def test_conflict_inside_one_ruleset_is_caught_too() -> None:
    with pytest.raises(PolicyError, match="'read'"):
        Policy(SystemIO.nothing().allow_read().allow_stdin())


def test_different_unconditional_actions_conflict() -> None:
    with pytest.raises(PolicyError, match="'uname'"):
        Policy(
            RuleSet("uname", name="a"), RuleSet.nothing().deny("uname", action=Action.KILL_PROCESS)
        )


def test_identical_rules_from_two_rulesets_merge() -> None:
    a = Networking.nothing().allow_tcp_clients()
    b = Networking.nothing().allow_tcp_clients().allow_tcp_servers()
    socket_rules = [e for e in Policy(a, b).entries() if e.syscall == "socket"]
    assert len(socket_rules) == 4  # AF_INET/AF_INET6 x protocol 0/IPPROTO_TCP, deduplicated


def test_several_rules_on_one_syscall_or_together() -> None:
    rs = RuleSet(Rule("kill", Arg(1) == 0), Rule("kill", Arg(1) == 15))
    kills = [e for e in Policy(rs).entries() if e.syscall == "kill"]
    assert [e.conditions[0].value for e in kills] == [0, 15]


def test_conditions_support_every_operator() -> None:
    built = [Arg(0) == 1, Arg(0) != 1, Arg(0) < 1, Arg(0) <= 1, Arg(0) > 1, Arg(0) >= 1]
    assert [c.op for c in built] == ["==", "!=", "<", "<=", ">", ">="]
    masked = Arg(1) & 0xF0 == 0x10
    assert (masked.op, masked.mask, masked.value) == ("&==", 0xF0, 0x10)
    Policy(RuleSet(*(Rule("getppid", c) for c in built), Rule("getppid", masked))).compile()


def test_bad_conditions_are_refused_where_written() -> None:
    with pytest.raises(PolicyError, match="arguments 0 to 5"):
        Arg(6)
    with pytest.raises(PolicyError, match="bits outside the mask"):
        _ = Arg(1) & 0x0F == 0x10
    with pytest.raises(PolicyError, match="not expressible"):
        _ = Arg(1) & 0x0F != 1
    with pytest.raises(PolicyError, match="compare with an int"):
        _ = Arg(0) == "AF_INET"
    with pytest.raises(PolicyError, match="Arg"):
        Rule("socket", "AF_INET")  # type: ignore[arg-type]


def test_negative_values_compare_as_the_kernel_sees_them() -> None:
    assert (Arg(0) == -1).value == 2**64 - 1


def test_errno_action_is_bounded() -> None:
    assert Action.ERRNO().errno == errno.EPERM
    with pytest.raises(PolicyError):
        Action.ERRNO(0)
    with pytest.raises(PolicyError):
        Action.ERRNO(5000)


def test_bare_names_and_rules_stand_as_rulesets() -> None:
    policy = Policy("getppid", Rule("kill", Arg(0) == 0))
    assert policy.allows("getppid") and policy.allows("kill")
    assert not policy.allows("uname")


def test_policy_rejects_a_list_with_a_hint() -> None:
    with pytest.raises(PolicyError, match=r"Policy\(\*rulesets\)"):
        Policy([SystemIO.nothing()])  # type: ignore[arg-type]


def test_policy_is_immutable_and_rulesets_are_persistent() -> None:
    base = SystemIO.nothing()
    stdout = base.allow_stdout()
    assert base.rules() == () and stdout.rules()
    policy = Policy(stdout)
    with pytest.raises(AttributeError):
        policy.default = Action.ALLOW  # type: ignore[misc]
    bigger = policy.extend("uname")
    assert bigger.allows("uname") and not policy.allows("uname")


def test_compile_gives_bpf_bytes_and_caches() -> None:
    policy = Policy(SystemIO.everything(), Networking.everything())
    compiled = policy.compile()
    assert isinstance(compiled.bpf, bytes) and len(compiled.bpf) % 8 == 0
    assert policy.compile() is compiled


BUILTINS = [SystemIO, Networking, Threads, Time, Pipes, Processes, Signals]


@pytest.mark.parametrize("kind", BUILTINS, ids=lambda k: k.__name__)
def test_everything_never_includes_the_always_denied(kind: type[RuleSet]) -> None:
    named = {r.syscall for r in kind.everything().rules()}
    assert not named & set(ALWAYS_DENIED)
    clone_rules = [r for r in kind.everything().rules() if r.syscall == "clone"]
    assert all(r.conditions for r in clone_rules), "clone must always be flag-checked"


def test_always_denied_are_guarded_under_a_permissive_default() -> None:
    guards = Policy(default=Action.ALLOW).guards()
    denied = {g.syscall for g in guards if g.action == Action.ERRNO(errno.EPERM)}
    assert {"unshare", "ptrace", "io_uring_setup", "bpf", "mount", "setns"} <= denied
    assert any(g.syscall == "clone" and g.checks for g in guards)


def test_naming_an_always_denied_syscall_allows_it() -> None:
    assert Policy("unshare").allows("unshare")
    assert not Policy(default=Action.ALLOW).allows("unshare")


def test_socket_rules_compare_domain_and_type_for_equality() -> None:
    rules = [r for r in Networking.nothing().allow_tcp_clients().rules() if r.syscall == "socket"]
    for rule in rules:
        domain, kind, _proto = rule.conditions
        assert domain.op == "==" and domain.value in (socket.AF_INET, socket.AF_INET6)
        assert kind.op == "&==" and kind.value == socket.SOCK_STREAM
        assert kind.mask | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC == 0xFFFFFFFF


def test_decide_answers_like_the_compiled_filter() -> None:
    policy = Policy(SystemIO.nothing().allow_stdout(), default=Action.ERRNO(errno.EACCES))
    assert policy.decide("write", 1) == Action.ALLOW
    assert policy.decide("write", 2) == Action.ERRNO(errno.EACCES)
    assert policy.decide("clone3") == Action.ERRNO(errno.ENOSYS)
    assert Policy(default=Action.KILL_PROCESS).decide("uname") == Action.KILL_PROCESS


def test_an_enosys_default_compiles_with_the_clone3_guard_folded_in() -> None:
    policy = Policy(default=Action.ERRNO(errno.ENOSYS))
    assert policy.decide("clone3") == Action.ERRNO(errno.ENOSYS)

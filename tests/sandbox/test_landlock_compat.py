"""Compatibility and status: best effort on a pretended older kernel drops (and names) what
it lacks, HARD refuses before enforcing anything, all_threads is reported honestly.

``$ISOLATES_LANDLOCK_ABI`` caps the ABI the code believes the kernel has; each child sets
it before applying.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from pathlib import Path

import msgspec
import pytest

from isolates.sandbox import Compat, Landlock, Policy, SandboxError, SystemIO
from isolates.sandbox._landlock import (
    AccessFs,
    AccessNet,
    LandlockPlan,
    LandlockStatus,
    Scope,
    apply_plan,
)
from isolates.sandbox._landlock_abi import ALL_FS, LEVELS, NEWEST, TSYNC, fit, introduced
from isolates.sandbox._landlock_sys import ABI_CAP_ENV, errata, for_threads, kernel_abi
from tests.sandbox.test_landlock_child import attempt, in_child, run


def pretend(abi: int) -> None:
    os.environ[ABI_CAP_ENV] = str(abi)


@pytest.fixture
def d(tmp_path: Path) -> Path:
    (tmp_path / "d").mkdir()
    (tmp_path / "outside").write_text("outside")
    return tmp_path / "d"


def test_best_effort_on_abi_2_enforces_the_rest_and_names_what_it_dropped(d: Path) -> None:
    outside = d.parent / "outside"

    def child() -> tuple[LandlockStatus, str, str]:
        pretend(2)
        status = apply_plan(Landlock().read(d).plan())
        return status, attempt(outside.read_text), attempt(os.truncate, outside, 1)

    status, read, truncate = run(child)
    assert status == LandlockStatus("partial", 2, ("AccessFs.TRUNCATE", "AccessFs.IOCTL_DEV"))
    assert read == "EACCES"  # what ABI 2 has is enforced
    assert truncate == "ok"  # and truncation really is not: the status does not lie
    assert str(status) == (
        "partial (Landlock ABI 2, Linux 5.19+; dropped AccessFs.TRUNCATE (Landlock ABI 3, "
        "Linux 6.2), AccessFs.IOCTL_DEV (Landlock ABI 5, Linux 6.10))"
    )


def test_abi_1_counts_refer_as_dropped_only_when_granted(d: Path) -> None:
    def child(ll: Landlock) -> tuple[str, ...]:
        pretend(1)
        return apply_plan(ll.plan()).dropped

    assert "AccessFs.REFER" not in run(child, Landlock().read(d))
    assert "AccessFs.REFER" in run(child, Landlock().allow(d, AccessFs.REFER))


def test_tcp_rights_are_dropped_before_abi_4(d: Path) -> None:
    def child() -> tuple[str, ...]:
        pretend(3)
        status = apply_plan(Landlock().read(d).connect_tcp(1).plan())
        assert status.enforcement == "partial"
        return status.dropped

    assert run(child) == ("AccessFs.IOCTL_DEV", "AccessNet.BIND_TCP", "AccessNet.CONNECT_TCP")


def test_scopes_and_audit_flags_are_dropped_on_older_abis(d: Path) -> None:
    def child(abi: int) -> tuple[str, ...]:
        pretend(abi)
        ll = Landlock().read(d).scope(Scope.SIGNAL).audit(new_exec=True)
        return apply_plan(ll.plan()).dropped

    assert run(child, 5) == ("Scope.SIGNAL", "audit(new_exec=True)")
    assert run(child, 6) == ("audit(new_exec=True)",)
    assert run(child, 7) == ()


def test_without_landlock_nothing_is_enforced_and_the_status_says_none(d: Path) -> None:
    def child() -> tuple[LandlockStatus, str]:
        pretend(0)
        status = apply_plan(Landlock().read(d).plan())
        return status, attempt((d.parent / "outside").read_text)

    status, read = run(child)
    assert (status.enforcement, status.abi, read) == ("none", 0, "ok")
    assert "AccessFs.READ_FILE" in status.dropped and not status.domain
    assert str(status).startswith("none (this kernel has no Landlock: it needs Linux 5.13+")
    assert "/proc/PID/mem" in str(status)  # says which protection is missing


def _parent_memory() -> str:
    """Open the parent's /proc/PID/mem for writing (the parent runs the test, unconfined)."""
    return attempt(lambda: os.close(os.open(f"/proc/{os.getppid()}/mem", os.O_RDWR)))


def test_nothing_left_to_handle_still_makes_a_domain() -> None:
    def child() -> tuple[LandlockStatus, str, str]:
        pretend(5)
        status = apply_plan(Landlock().scope(Scope.SIGNAL).plan())
        own = attempt(lambda: os.close(os.open("/proc/self/mem", os.O_RDWR)))
        return status, _parent_memory(), own

    assert run(child) == (LandlockStatus("partial", 5, ("Scope.SIGNAL",)), "EACCES", "ok")


def test_hard_raises_naming_the_feature_and_kernel_before_enforcing(d: Path) -> None:
    def child() -> tuple[str, str]:
        pretend(4)
        try:
            apply_plan(Landlock().read(d).plan(Compat.HARD))
        except SandboxError as exc:
            return str(exc), attempt((d.parent / "outside").read_text)
        raise AssertionError("HARD did not raise")

    message, read = run(child)
    assert "this kernel has Landlock ABI 4 (Linux 6.7)" in message
    assert "AccessFs.IOCTL_DEV (Landlock ABI 5, Linux 6.10)" in message
    assert read == "ok"  # nothing was enforced


def test_hard_without_landlock_names_the_config() -> None:
    def child() -> None:
        pretend(0)
        apply_plan(Landlock().deny_fs().plan(Compat.HARD))

    error = in_child(child).error
    assert isinstance(error, SandboxError) and error.errno == errno.EOPNOTSUPP
    assert "CONFIG_SECURITY_LANDLOCK" in str(error) and "Linux 5.13" in str(error)


def test_hard_policy_fails_before_seccomp_is_loaded(d: Path) -> None:
    policy = Policy(SystemIO.nothing(), Landlock().read(d), compat=Compat.HARD)
    policy.compile()

    def child() -> str:
        pretend(3)
        with pytest.raises(SandboxError, match="IOCTL_DEV"):
            policy.apply()
        return attempt(os.getppid)  # denied by the policy, had seccomp been loaded

    assert run(child) == "ok"


def test_policy_status_reports_partial_landlock(d: Path) -> None:
    policy = Policy(SystemIO.nothing(), Landlock().read(d))
    policy.compile()

    def child() -> tuple[str, str]:
        pretend(4)
        status = policy.apply()
        return status.enforcement, str(status)

    enforcement, text = run(child)
    assert enforcement == "partial"
    assert "landlock: partial (Landlock ABI 4" in text and "AccessFs.IOCTL_DEV" in text


def test_all_threads_before_abi_8_is_partial_when_other_threads_run(d: Path) -> None:
    outside = d.parent / "outside"

    def child() -> tuple[LandlockStatus, str]:
        pretend(7)
        go, done, seen = threading.Event(), threading.Event(), []
        thread = threading.Thread(
            target=lambda: (go.wait(), seen.append(attempt(outside.read_text)), done.set())
        )
        thread.start()
        status = apply_plan(Landlock().read(d).plan(), all_threads=True)
        go.set()
        done.wait()
        return status, seen[0]

    status, other_thread = run(child)
    assert status == LandlockStatus("partial", 7, ("all_threads",))
    assert other_thread == "ok"  # the sibling really is unconfined, as the status says


def test_all_threads_before_abi_8_under_hard_raises() -> None:
    def child() -> None:
        pretend(7)
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
        apply_plan(Landlock().deny_fs().plan(Compat.HARD), all_threads=True)

    error = in_child(child).error
    assert isinstance(error, SandboxError)
    assert "all_threads (Landlock ABI 8, Linux 7.0)" in str(error)


def test_all_threads_of_a_single_threaded_process_is_full(d: Path) -> None:
    def child() -> LandlockStatus:
        pretend(7)
        return apply_plan(Landlock().read(d).plan(Compat.HARD), all_threads=True)

    assert run(child) == LandlockStatus("full", 7, ())


def test_applying_leaks_no_descriptor(d: Path) -> None:
    before, after = run(_fd_count_around_apply, d)
    assert after == before


def _fd_count_around_apply(d: Path) -> tuple[int, int]:
    fds = Path("/proc/self/fd")
    before = len(list(fds.iterdir()))
    apply_plan(Landlock().read(d).read(fds).connect_tcp(80).plan())
    return before, len(list(fds.iterdir()))


def test_a_stale_errno_after_success_is_not_an_error() -> None:
    ctypes.set_errno(errno.EINVAL)
    assert kernel_abi() >= 1


def test_a_bad_abi_cap_is_refused(d: Path) -> None:
    def child() -> None:
        os.environ[ABI_CAP_ENV] = "seven"
        apply_plan(Landlock().read(d).plan())

    error = in_child(child).error
    assert isinstance(error, SandboxError) and ABI_CAP_ENV in str(error)


# -- the table and the fitting, without a kernel --------------------------------------------


def test_every_right_and_flag_belongs_to_exactly_one_level() -> None:
    for flag in [*AccessFs, *AccessNet, *Scope]:
        field = {AccessFs: "fs", AccessNet: "net", Scope: "scopes"}[type(flag)]
        assert len([lv for lv in LEVELS if getattr(lv, field) & flag]) == 1, flag


ALL_NAMES = fit(0xFFFF, 0xFFFF, 0b11, 0b11, 0b1111, 0).dropped  # ABI 0 drops everything


@pytest.mark.parametrize("abi", range(NEWEST + 1))
def test_fit_drops_exactly_what_later_abis_brought(abi: int) -> None:
    fitted = fit(0xFFFF, 0xFFFF, 0b11, 0b11, 0b1111, abi)
    assert fitted.dropped == tuple(n for n in ALL_NAMES if introduced(n).abi > abi)
    assert len(ALL_NAMES) == 16 + 2 + 2 + 4


def test_the_plan_is_plain_data_that_survives_msgspec(d: Path) -> None:
    plan = Landlock().read(d).connect_tcp(443).scope(Scope.SIGNAL).audit(same_exec=False)
    encoded = msgspec.msgpack.encode(plan.plan(Compat.HARD))
    assert msgspec.msgpack.decode(encoded, type=LandlockPlan) == plan.plan(Compat.HARD)


def test_all_threads_uses_tsync_from_abi_8() -> None:
    fitted = fit(ALL_FS, 0, 0, 0, 0, 8)
    resolved = (fitted.fs, fitted.net, fitted.scopes, 0, (), (), (), 8, False)
    assert for_threads(resolved, True)[3:5] == (TSYNC, ())


def test_the_errata_query_reports_fixes_present_since_the_interface() -> None:
    # The errata query arrived with ABI 7 (Linux 6.15), which already fixed errata 1 and 2.
    if kernel_abi() >= 7:
        assert errata() & 0b11 == 0b11
    else:
        assert errata() >= 0


def test_an_empty_ruleset_still_makes_a_domain_that_keeps_other_processes_out() -> None:
    def child() -> tuple[LandlockStatus, str, str, str]:
        status = apply_plan(Landlock().plan(Compat.HARD))
        own = attempt(lambda: os.close(os.open("/proc/self/mem", os.O_RDWR)))
        outside = attempt((Path(os.environ.get("HOME", "/")) / ".isolates-probe").exists)
        return status, _parent_memory(), own, outside

    status, parent, own, fs = run(child)
    assert (status.enforcement, status.dropped, parent, own, fs) == (
        "full",
        (),
        "EACCES",
        "ok",
        "ok",
    )


def test_an_empty_ruleset_without_landlock_says_the_domain_is_missing() -> None:
    def child() -> tuple[LandlockStatus, str]:
        pretend(0)
        return apply_plan(Landlock().plan()), attempt(
            lambda: apply_plan(Landlock().plan(Compat.HARD))
        )

    status, hard = run(child)
    assert status == LandlockStatus("none", 0, ("domain",)) and not status.domain
    assert hard == errno.errorcode[errno.EOPNOTSUPP]  # HARD refuses to go on without it


def test_the_kernels_limit_of_16_stacked_domains_is_explained(d: Path) -> None:
    def child() -> str:
        plan = Landlock().read(d).plan()
        for _ in range(16):
            apply_plan(plan)
        try:
            apply_plan(plan)
        except SandboxError as exc:
            assert exc.errno == errno.E2BIG
            return str(exc)
        raise AssertionError("a 17th domain was accepted")

    assert "16 stacked Landlock domains" in run(child)

"""No capability is kept unless named: isolates, workers and `isolates run`, started by
root (these tests run as root, as CI does), drop every capability before they run, and
keep exactly the ones asked for."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from isolates.orchestrator import IsolateExecutor, Supervisor, isolate
from isolates.orchestrator.testing import assert_denied
from isolates.sandbox import Landlock, Networking, Policy, PolicyError, SystemIO
from tests.forked import in_child
from tests.orchestrator import cap_targets as t

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="capabilities of root: CI runs as root")

MODES = ["fork-server", "exec"]
NOBODY = 65534
FILES = Policy(
    SystemIO.nothing().allow_open_readonly().allow_read().allow_metadata().allow_close(),
    "chown",
    "fchownat",
)
SERVER = Policy(Networking.nothing().allow_start_tcp_servers())
NET_BIND_SERVICE, CHOWN, DAC_OVERRIDE = 10, 0, 1


@pytest.fixture
def not_ours(tmp_path: Path) -> Path:
    """A file another user owns, mode 000."""
    path = tmp_path / "theirs"
    path.write_text("secret")
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0)
    return path


@pytest.mark.parametrize("start", MODES)
def test_an_isolate_started_by_root_holds_no_capability(start: str) -> None:
    sets = isolate(FILES, start=start)(t.capability_sets)()
    assert sets == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}


@pytest.mark.parametrize("start", MODES)
def test_a_kept_capability_is_the_only_one(start: str) -> None:
    f = isolate(FILES, start=start, capabilities={"NET_BIND_SERVICE"})(t.capability_sets)
    sets = f()
    bit = 1 << NET_BIND_SERVICE
    assert (sets["CapEff"], sets["CapPrm"], sets["CapBnd"]) == (bit, bit, bit)
    assert (sets["CapInh"], sets["CapAmb"]) == (0, 0)  # nothing to hand to an exec


@pytest.mark.parametrize("start", MODES)
def test_without_chown_a_file_of_another_user_stays_theirs(start: str, not_ours: Path) -> None:
    err = assert_denied(t.chown_to_root, str(not_ours), policy=FILES, start=start,
                        errno=errno.EPERM)  # fmt: skip
    assert not hasattr(err, "denials")  # the kernel refused it, not the policy
    assert not_ours.stat().st_uid == NOBODY
    kept = isolate(FILES, start=start, capabilities={"CHOWN"})(t.chown_to_root)
    assert kept(str(not_ours)) == "done"  # the neighbour: with CAP_CHOWN kept, it may
    assert not_ours.stat().st_uid == 0


@pytest.mark.parametrize("start", MODES)
def test_without_dac_override_a_mode_000_file_cannot_be_read(start: str, not_ours: Path) -> None:
    grant = Landlock().read(not_ours.parent)  # Landlock allows the path: DAC is what refuses
    assert_denied(t.read, str(not_ours), policy=FILES, landlock=grant, start=start,
                  errno=errno.EACCES)  # fmt: skip
    kept = isolate(FILES, landlock=grant, start=start, capabilities={"CAP_DAC_OVERRIDE"})
    assert kept(t.read)(str(not_ours)) == "secret"


@pytest.mark.parametrize("start", MODES)
def test_a_port_below_1024_needs_net_bind_service(start: str) -> None:
    port = _free_low_port()
    assert_denied(t.bind_low_port, port, policy=SERVER, start=start, errno=errno.EACCES)
    kept = isolate(SERVER, start=start, capabilities=["NET_BIND_SERVICE"])(t.bind_low_port)
    assert kept(port) == "bound"


def _free_low_port() -> int:
    for port in range(990, 1010):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024 here")


def test_names_are_checked_before_anything_starts() -> None:
    with pytest.raises(PolicyError, match="did you mean 'NET_BIND_SERVICE'"):
        isolate(capabilities={"NET_BIND_SERVIC"})
    with pytest.raises(PolicyError, match="cannot be kept"):
        isolate(capabilities={"SYS_ADMIN"})  # it would let a domain read others' /proc
    with pytest.raises(PolicyError, match="unknown capability"):
        IsolateExecutor(capabilities=["CAP_FLY"])


def test_an_executor_keeps_what_it_was_told() -> None:
    with IsolateExecutor(FILES, max_workers=1, capabilities={"CHOWN"}) as ex:
        assert ex.submit(t.capability_sets).result()["CapEff"] == 1 << CHOWN


def test_a_worker_keeps_only_its_own_and_its_status_says_so() -> None:
    def run() -> tuple[Any, Any, Any]:
        sup = Supervisor()
        plain = sup.add_worker("plain", _worker_sets, policy=FILES)
        server = sup.add_worker(
            "server", _worker_sets, policy=FILES, capabilities={"NET_BIND_SERVICE"}
        )
        results = sup.run(timeout=60)
        return results, plain.status.capabilities, server.status.capabilities  # type: ignore[union-attr]

    results, plain, server = in_child(run).unwrap()
    assert results["plain"]["CapEff"] == 0 and results["plain"]["CapBnd"] == 0
    assert results["server"]["CapEff"] == 1 << NET_BIND_SERVICE
    assert (plain, server) == ((), ("CAP_NET_BIND_SERVICE",))
    with pytest.raises(PolicyError, match="unknown capability"):
        Supervisor().add_worker("w", _worker_sets, capabilities={"NOPE"})


def _worker_sets(ctx: object) -> dict[str, int]:
    return t.capability_sets()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "isolates.orchestrator._cli", "run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_isolates_run_drops_every_capability_across_the_exec() -> None:
    done = _run("--", "grep", "^Cap", "/proc/self/status")
    assert done.returncode == 0, done.stderr
    values = {line.split(":")[0]: int(line.split()[1], 16) for line in done.stdout.splitlines()}
    assert values == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}


def test_isolates_run_keeps_a_named_capability_for_the_program() -> None:
    done = _run("--cap-keep", "NET_BIND_SERVICE", "--", "grep", "^Cap", "/proc/self/status")
    assert done.returncode == 0, done.stderr
    values = {line.split(":")[0]: int(line.split()[1], 16) for line in done.stdout.splitlines()}
    assert set(values.values()) == {1 << NET_BIND_SERVICE}  # ambient too: it survives exec
    port = _free_low_port()
    code = f"import socket; socket.socket().bind(('127.0.0.1', {port})); print('bound')"
    assert _run("--", sys.executable, "-c", code).returncode != 0  # root, yet refused
    kept = _run("--cap-keep", "CAP_NET_BIND_SERVICE", "--", sys.executable, "-c", code)
    assert kept.returncode == 0 and kept.stdout.strip() == "bound", kept.stderr


def test_isolates_run_refuses_an_unknown_capability_by_name() -> None:
    done = _run("--cap-keep", "NET_RAWW", "--", "true")
    assert done.returncode == 2
    assert "did you mean 'NET_RAW'" in done.stderr


@pytest.mark.parametrize("start", MODES)
def test_no_call_gets_a_dropped_capability_back(start: str) -> None:
    # Its policy allows capset and prctl outright: the kernel is what refuses.
    policy = Policy("capset", "capget", "prctl")
    said = isolate(policy, start=start)(t.regain)()
    assert said == {
        "capset all": "EPERM",
        "ambient raise NET_RAW": "EPERM",
        "securebits cleared": "EPERM",
        "keep caps": "EPERM",
        "capset none": "ok",  # dropping what it lacks: allowed, and changes nothing
    }

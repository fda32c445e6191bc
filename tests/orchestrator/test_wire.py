"""The control protocol: typed end to end, the same values on both sides, strict."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import msgspec
import pytest

from isolates.channels import Codec, RemoteChannelError, open_pair
from isolates.orchestrator import Bind, Mount, Namespaces, NamespaceStatus, isolate
from isolates.orchestrator._core import wire
from isolates.orchestrator._core.boot_message import build_boot, compile_for
from isolates.sandbox import (
    CompiledPolicy,
    Enforcement,
    Landlock,
    LandlockStatus,
    Policy,
    Signals,
    Status,
)
from isolates.sandbox.lowlevel import LandlockPlan

TWINS: list[tuple[type, type[msgspec.Struct]]] = [
    (CompiledPolicy, wire.CompiledPolicyData),
    (LandlockPlan, wire.LandlockPlanData),
    (Status, wire.StatusData),
    (LandlockStatus, wire.LandlockStatusData),
    (Namespaces, wire.NamespacesData),
    (Mount, wire.MountData),
    (Bind, wire.BindData),
    (NamespaceStatus, wire.NamespaceStatusData),
]


@pytest.mark.parametrize(("cls", "twin"), TWINS, ids=[c.__name__ for c, _ in TWINS])
def test_each_wire_twin_has_its_dataclass_fields_and_defaults(
    cls: type, twin: type[msgspec.Struct]
) -> None:
    ours = [(f.name, f.default) for f in msgspec.structs.fields(twin)]
    theirs = [(f.name, f.default) for f in dataclasses.fields(cls)]
    ours = [(name, _plain(default)) for name, default in ours]
    theirs = [(name, _plain(default)) for name, default in theirs]
    assert ours == theirs


def _plain(default: object) -> object:
    if default is msgspec.NODEFAULT or default is dataclasses.MISSING:
        return "required"
    return msgspec.to_builtins(default)


def _through_a_control_channel(msg: wire.Control) -> Any:
    ours, theirs = open_pair(wire.Control, max_fds=wire.MAX_BOOT_FDS, name="control")
    with ours, theirs:
        ours.send(msg)
        return theirs.recv(timeout=5)


def test_a_boot_carries_the_compiled_policy_and_namespaces_as_they_are(tmp_path: Any) -> None:
    policy = Policy(Signals.nothing().allow_kill_self(), Landlock().read(str(tmp_path)))
    compiled = compile_for(policy, os.getpid(), None)
    assert compiled.landlock is not None and compiled.self_pid == os.getpid()
    ns = Namespaces(
        mount=Mount(ro=("/etc",), binds=(Bind("/srv", "/x", writable=True),)),
        net=False,
        uid=1000,
        hostname="web",
    )
    boot = build_boot("w", len, ((1,), {}), compiled, ns, {"LANG": "C"})
    got = _through_a_control_channel(boot)
    assert isinstance(got, wire.Boot)
    assert wire.converted(got.policy, CompiledPolicy) == compiled
    assert wire.converted(got.namespaces, Namespaces) == ns
    assert (got.supervised, got.barrier, got.channels) == (False, False, [])


def test_a_ready_carries_the_statuses_as_they_are() -> None:
    status = Status(True, True, LandlockStatus(Enforcement.PARTIAL, 3, ("scope",)))
    entered = NamespaceStatus(("user", "pid"), 0, 0, 1, "box", capabilities=True)
    ready = wire.Ready(
        wire.converted(status, wire.StatusData), wire.converted(entered, wire.NamespaceStatusData)
    )
    got = _through_a_control_channel(ready)
    assert wire.converted(got.status, Status) == status
    assert wire.converted(got.status, Status).enforcement is Enforcement.PARTIAL
    assert wire.converted(got.namespaces, NamespaceStatus) == entered


@pytest.mark.parametrize(
    "forge",
    [
        lambda m: m["status"].update(forged=1),  # an unknown field, nested
        lambda m: m["status"]["landlock"].update(enforcement="total"),  # no Enforcement
        lambda m: m.update(status_data={}),  # the old loose field
    ],
    ids=["unknown-field", "bad-enum", "old-field"],
)
def test_a_ready_that_is_not_exactly_the_protocol_is_refused(forge: Any) -> None:
    status = Status(True, True, LandlockStatus(Enforcement.FULL, 7))
    raw = msgspec.to_builtins(wire.Ready(wire.converted(status, wire.StatusData), None))
    forge(raw)
    codec = Codec(wire.Control, name="control")
    with pytest.raises(RemoteChannelError):
        codec.feed(msgspec.msgpack.encode(raw))
    # the neighbour: the same message, untouched, decodes
    honest = msgspec.to_builtins(wire.Ready(wire.converted(status, wire.StatusData), None))
    assert isinstance(
        Codec(wire.Control, name="control").feed(msgspec.msgpack.encode(honest))[0], wire.Ready
    )


class Refused(Exception):
    """Not a builtin: the parent reports it as WorkerFailed, saying at which stage."""


def _refuse() -> None:
    raise Refused("not today")


class RefusesToUnpickle:
    def __reduce__(self) -> tuple[object, ...]:
        return (_refuse, ())


@isolate
def refuse(_: object = None) -> None:
    _refuse()


def test_the_failure_stage_crosses_as_an_enum_and_says_when() -> None:
    from isolates.orchestrator import WorkerFailed

    assert wire.Stage.BOOT == "boot" and wire.Stage.RUN == "run"  # StrEnum: old strings hold
    with pytest.raises(WorkerFailed, match=r"failed while booting .*Refused: not today"):
        refuse(RefusesToUnpickle())  # unpickling the argument is part of the boot
    with pytest.raises(WorkerFailed, match=r"refuse' failed with .*Refused: not today"):
        refuse()

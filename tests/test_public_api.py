"""The public contract of DESIGN.md: every name importable, each from exactly one place."""

from __future__ import annotations

import importlib
import importlib.resources

import pytest

CONTRACT = {
    "isolates.sandbox": [
        "Policy", "RuleSet", "Rule", "Arg", "Action", "PythonRuntime", "SystemIO",
        "Networking", "Threads", "Time", "Pipes", "Processes", "Signals", "Landlock",
        "AccessFs", "AccessNet", "Scope", "Compat", "profiles", "PolicyError", "SandboxError",
    ],
    "isolates.channels": ["Channel", "open_pair", "LocalChannelError", "RemoteChannelError"],
    "isolates.orchestrator": [
        "Supervisor", "Worker", "WorkerContext", "Namespaces", "isolate", "WorkerFailed",
        "IsolateViolation",
    ],
}  # fmt: skip
PACKAGES = list(CONTRACT)


@pytest.mark.parametrize("package", PACKAGES)
def test_the_contract_names_import(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in CONTRACT[package] if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_what_the_package_exports(package: str) -> None:
    module = importlib.import_module(package)
    assert set(CONTRACT[package]) <= set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_each_public_object_is_exported_from_one_package_only() -> None:
    seen: dict[int, str] = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) or callable(obj):
                where = seen.setdefault(id(obj), f"{package}.{name}")
                assert where == f"{package}.{name}", f"{name} is exported twice: {where}"


def test_errors_subclass_what_callers_already_catch() -> None:
    from isolates.channels import LocalChannelError, RemoteChannelError
    from isolates.orchestrator import IsolateViolation, WorkerFailed
    from isolates.sandbox import PolicyError, SandboxError

    assert issubclass(PolicyError, ValueError)
    assert issubclass(SandboxError, OSError)
    assert issubclass(IsolateViolation, WorkerFailed)
    assert not issubclass(LocalChannelError, RemoteChannelError)


def test_py_typed_ships_in_every_package() -> None:
    for package in PACKAGES:
        files = importlib.resources.files(package)
        assert (files / "py.typed").is_file(), package

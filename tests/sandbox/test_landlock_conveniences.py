"""The conveniences: the paths they grant on this machine, and that what they promise works
in a confined child while a bare ruleset refuses it."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import socket
import ssl
import sys
import types
from pathlib import Path

import pytest

from isolates.sandbox import Compat, Landlock
from isolates.sandbox import _landlock as landlock_module
from isolates.sandbox import _landlock_paths as landlock_paths
from isolates.sandbox._landlock import AccessFs, apply_plan
from tests.sandbox.test_landlock_child import attempt, run


def confine(ll: Landlock) -> None:
    status = apply_plan(ll.plan(Compat.HARD))
    assert status.enforcement == "full", status


def paths(ll: Landlock) -> list[str]:
    return [path for path, _ in ll.grants()]


def test_every_convenience_grants_only_paths_that_exist() -> None:
    for method in ("ssl_certs", "dns", "python_runtime", "devices"):
        granted = paths(getattr(Landlock(), method)())
        assert granted, method
        assert all(os.path.exists(p) for p in granted), method


def test_missing_paths_are_skipped_not_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landlock_module, "DEVICES", ("/dev/null", "/nonexistent", "/dev/zero"))
    assert paths(Landlock().devices()) == ["/dev/null", "/dev/zero"]
    monkeypatch.setattr(landlock_paths, "RESOLVER_FILES", ("/etc/hosts", "/nonexistent/hosts"))
    assert "/nonexistent/hosts" not in paths(Landlock().dns())


def test_ssl_certs_covers_what_openssl_would_load() -> None:
    granted = Landlock().ssl_certs()
    found = ssl.get_default_verify_paths()
    for path in (found.cafile, found.capath, os.environ.get("SSL_CERT_FILE")):
        if path and os.path.exists(path):
            assert _covered(os.path.realpath(path), paths(granted)), path
    assert all(rights == AccessFs.READ_FILE | AccessFs.READ_DIR or rights == AccessFs.READ_FILE
               for _, rights in granted.grants())  # fmt: skip


def test_ssl_certs_lets_a_tls_context_load_the_system_cas() -> None:
    def child(ll: Landlock) -> int:
        confine(ll)
        return ssl.create_default_context().cert_store_stats()["x509_ca"]

    assert run(child, Landlock().ssl_certs()) > 0
    assert run(child, Landlock().deny_fs()) == 0


def test_dns_lets_the_resolver_read_hosts_and_services() -> None:
    "localhost".encode("idna")  # getaddrinfo imports this codec on first use

    def child(ll: Landlock) -> str:
        confine(ll)
        return attempt(socket.getaddrinfo, "localhost", "https", 0, socket.SOCK_STREAM)

    assert run(child, Landlock().dns()) == "ok"
    assert run(child, Landlock().deny_fs()) != "ok"
    for conf in ("/etc/hosts", "/etc/nsswitch.conf", "/etc/resolv.conf", "/etc/services"):
        if os.path.exists(conf):
            assert os.path.realpath(conf) in paths(Landlock().dns())


def test_python_runtime_keeps_lazy_imports_working() -> None:
    lazy = next(m for m in ("sqlite3", "lzma", "bz2", "colorsys") if m not in sys.modules)

    def child(ll: Landlock) -> str:
        confine(ll)
        return attempt(importlib.import_module, lazy)

    assert run(child, Landlock().python_runtime()) == "ok"  # a C extension and its library
    assert run(child, Landlock().deny_fs()) == "EACCES"


def test_python_runtime_grants_read_and_execute_on_the_interpreter() -> None:
    granted = dict(Landlock().python_runtime().grants())
    code = AccessFs.READ_FILE | AccessFs.READ_DIR | AccessFs.EXECUTE
    for prefix in (sys.prefix, sys.base_prefix):
        owner = next(p for p in granted if _covered(os.path.realpath(prefix), [p]))
        assert granted[owner] == code
    assert "/" not in granted


def test_devices_read_and_write_the_harmless_ones(tmp_path: Path) -> None:
    def child() -> dict[str, str]:
        confine(Landlock().devices())
        return {
            "write null": attempt(Path("/dev/null").write_text, "x"),
            "read zero": attempt(lambda: os.read(os.open("/dev/zero", os.O_RDONLY), 4)),
            "read urandom": attempt(lambda: os.read(os.open("/dev/urandom", os.O_RDONLY), 4)),
            "write urandom": attempt(os.open, "/dev/urandom", os.O_WRONLY),
            "read elsewhere": attempt(os.open, "/etc/hostname", os.O_RDONLY),
        }

    assert run(child) == {
        "write null": "ok",
        "read zero": "ok",
        "read urandom": "ok",
        "write urandom": "EACCES",
        "read elsewhere": "EACCES",
    }


def _covered(path: str, granted: list[str]) -> bool:
    return any(path == g or path.startswith(g.rstrip("/") + "/") for g in granted)


def test_ssl_certs_adds_the_environment_and_certifi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, cadir, certifi_pem = tmp_path / "env.pem", tmp_path / "cadir", tmp_path / "ci.pem"
    bundle.write_text("-")
    cadir.mkdir()
    certifi_pem.write_text("-")
    fake = types.ModuleType("certifi")
    fake.__spec__ = importlib.machinery.ModuleSpec("certifi", None)
    fake.where = lambda: str(certifi_pem)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "certifi", fake)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", f"{cadir}:/nonexistent")
    granted = paths(Landlock().ssl_certs())
    assert {str(bundle), str(cadir), str(certifi_pem)} <= set(granted)
    assert "/nonexistent" not in granted

"""The paths Landlock's conveniences grant, found on this machine.

``ssl_cert_paths``, ``dns_paths`` and ``python_paths`` list what TLS clients, glibc's
resolver and a running CPython read; each returns only paths that exist here, real
(links resolved) and without one beneath another. They only read the filesystem and
``/proc/self/maps``: no Landlock, no seccomp, so other modules may use them too.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import site
import sys
import sysconfig
from typing import Final

DEVICES: Final = ("/dev/null", "/dev/zero", "/dev/urandom")
#: Asked once, now: sysconfig imports its data module on first use, which a policy
#: applied later may forbid (isolates' own code never imports lazily under a policy).
MULTIARCH: Final = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"

#: CA directories: Debian/Ubuntu/Alpine/Arch hashed links and bundle; Fedora/RHEL; the
#: p11-kit extracted bundles (Fedora, Arch); the files Debian's links point to; openSUSE.
CA_DIRS: Final = (
    "/etc/ssl/certs",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust/extracted",
    "/etc/ca-certificates/extracted",
    "/usr/share/ca-certificates",
    "/usr/local/share/ca-certificates",
    "/var/lib/ca-certificates",
)
#: CA bundle files outside those directories: Alpine/LibreSSL, openSUSE, Fedora, Mandriva.
CA_FILES: Final = (
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cert.pem",
    "/etc/pki/tls/cacert.pem",
)
#: OpenSSL's compiled-in defaults on common builds (Debian's, and source builds'), for
#: when the ssl module is not imported (see ssl_cert_paths).
OPENSSL_DEFAULTS: Final = (
    "/usr/lib/ssl/certs",
    "/usr/lib/ssl/cert.pem",
    "/usr/local/ssl/certs",
    "/usr/local/ssl/cert.pem",
)
#: What glibc's resolver reads: name servers, static hosts, resolver options, the NSS
#: configuration, getaddrinfo's sorting rules, service and protocol names, and the
#: loader cache dlopen consults to find NSS modules.
RESOLVER_FILES: Final = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ld.so.cache",
)


def ssl_cert_paths() -> list[str]:
    """CA_DIRS, CA_FILES, OpenSSL's default file and directory, $SSL_CERT_FILE and
    $SSL_CERT_DIR, certifi's bundle, and the targets of links in those directories that
    point elsewhere (e.g. a locally added CA).

    OpenSSL's defaults are asked of the ssl module only when it is already imported:
    importing it maps a C extension, which a policy already applied here may forbid
    (pledge without prot_exec kills for it). Otherwise OPENSSL_DEFAULTS stand in.
    """
    extra = list(OPENSSL_DEFAULTS)
    ssl = sys.modules.get("ssl")
    if ssl is not None:
        found = ssl.get_default_verify_paths()
        extra += [found.cafile, found.capath, found.openssl_cafile, found.openssl_capath]
    extra += [os.environ.get("SSL_CERT_FILE", ""), *os.environ.get("SSL_CERT_DIR", "").split(":")]
    roots = _prune(_existing([*CA_DIRS, *CA_FILES, *extra, _certifi()]))
    return roots + _link_targets_outside(roots)


def _certifi() -> str:
    try:  # pure Python: a policy that denies reading it makes the import fail, not kill
        if importlib.util.find_spec("certifi") is None:
            return ""
        return str(importlib.import_module("certifi").where())
    except (ImportError, OSError):
        return ""


def _link_targets_outside(roots: list[str]) -> list[str]:
    targets: list[str] = []
    for root in (r for r in roots if os.path.isdir(r)):
        with os.scandir(root) as entries:
            links = [os.path.realpath(e.path) for e in entries if e.is_symlink()]
        targets += [t for t in links if os.path.exists(t) and not _beneath(t, roots)]
    return list(dict.fromkeys(targets))


def dns_paths() -> list[str]:
    """RESOLVER_FILES; the directory of resolv.conf's target when it is a link (so an
    atomic replacement, as systemd-resolved does, stays readable); the NSS modules that
    nsswitch.conf names for hosts and services (``libnss_<name>.so.2``)."""
    paths = list(RESOLVER_FILES)
    resolv = os.path.realpath("/etc/resolv.conf")
    if resolv != "/etc/resolv.conf":
        paths.append(os.path.dirname(resolv))
    return _prune(_existing(paths + _nss_modules(("hosts", "services"))))


def _nss_modules(databases: tuple[str, ...]) -> list[str]:
    modules = []
    for name in _nss_services(databases):
        found = [os.path.join(d, f"libnss_{name}.so.2") for d in _library_dirs()]
        modules += [p for p in found if os.path.exists(p)][:1]
    return modules


def _nss_services(databases: tuple[str, ...]) -> list[str]:
    try:
        with open("/etc/nsswitch.conf") as f:
            text = f.read()
    except OSError:
        return ["files", "dns"]  # glibc's choice when nsswitch.conf is missing
    names: list[str] = []
    for line in text.splitlines():
        key, _, services = line.partition("#")[0].partition(":")
        if key.strip() in databases:
            names += re.sub(r"\[[^]]*\]", " ", services).split()  # drop [STATUS=action]
    return list(dict.fromkeys(names))


def _library_dirs() -> list[str]:
    """Where glibc's NSS modules live: beside the libc this process mapped, then the
    multiarch and lib64 directories."""
    dirs = [os.path.dirname(p) for p in _mapped_libraries() if "/libc.so" in p]
    arch = MULTIARCH
    dirs += [f"/lib/{arch}", f"/usr/lib/{arch}", "/lib64", "/usr/lib64", "/lib", "/usr/lib"]
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def _mapped_libraries() -> list[str]:
    try:
        files = mapped_files()
    except OSError:
        return []
    return [p for p in files if ".so" in os.path.basename(p)]


def python_paths() -> tuple[list[str], list[str]]:
    """(code, libraries). Code: sys.prefix, sys.exec_prefix, their base_ versions, the
    stdlib and site-packages directories, the absolute sys.path entries (never "/"), and
    the directories of imported packages (editable installs). Libraries: the directories
    of the shared objects mapped into this process, and /etc/ld.so.cache."""
    cfg = sysconfig.get_paths()
    code = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]
    code += [cfg["stdlib"], cfg["platstdlib"], cfg["purelib"], cfg["platlib"]]
    code += [*site.getsitepackages(), site.getusersitepackages(), *sys.path, *package_dirs()]
    code = _prune([p for p in _existing(code) if p != "/"])
    libraries = [os.path.dirname(p) for p in _mapped_libraries()] + ["/etc/ld.so.cache"]
    return code, [p for p in _prune(_existing(libraries)) if not _beneath(p, code)]


def _existing(paths: list[str | None] | list[str]) -> list[str]:
    real = (os.path.realpath(p) for p in paths if p and os.path.isabs(p) and os.path.exists(p))
    return list(dict.fromkeys(real))


def _prune(paths: list[str]) -> list[str]:
    """Drop paths beneath a directory already in the list (they add nothing)."""
    kept: list[str] = []
    for path in sorted(paths, key=len):
        if not _beneath(path, kept):
            kept.append(path)
    return sorted(kept)


def _beneath(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


# -- what a running CPython has loaded (also the mount namespace's runtime_paths) -----------


def mapped_files() -> list[str]:
    """The files mapped into this process (its executable, shared libraries, the locale
    archive...), each once, as /proc/self/maps names them; OSError when /proc is absent."""
    with open("/proc/self/maps") as f:
        fields = [line.split(maxsplit=5) for line in f]
    paths = (f[5].rstrip("\n") for f in fields if len(f) == 6 and f[5].startswith("/"))
    return list(dict.fromkeys(paths))


def package_dirs() -> list[str]:
    """The directories imported packages load submodules from (editable installs live
    outside site-packages): each package's ``__path__``, which the package may have
    extended, and its spec's search locations."""
    dirs: list[str] = []
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)
        dirs += list(getattr(module, "__dict__", {}).get("__path__") or ())  # no __getattr__
        dirs += list(getattr(spec, "submodule_search_locations", None) or ())
    return list(dict.fromkeys(d for d in dirs if isinstance(d, str)))

"""What a program needs to start under ``isolates run``, beyond the user's policy.

``STARTUP`` lists the calls the dynamic loader and the C runtime make before ``main``;
``with_startup`` adds each one only when the policy would deny it. Landlock must let the
start read and execute its files: the command, the interpreters of its ``#!`` lines and
the dynamic loader (``exec_chain``), and the loader's library directories
(``library_dirs``). docs/cli.md tells the user what is added and why.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import itertools
import os
from dataclasses import dataclass
from typing import Final

from isolates.sandbox import (
    AccessFs,
    Action,
    Arg,
    Compat,
    Landlock,
    LandlockPlan,
    Policy,
    Rule,
    RuleSet,
)
from isolates.sandbox.lowlevel import decide_policy
from isolates.sandbox.lowlevel import syscall_number as number
from isolates.sandbox.profiles._pledge import too_broad

from .._namespaces.elf import interpreter

_EXEC_RIGHTS: Final = AccessFs.EXECUTE | AccessFs.READ_FILE
_WRITE_FLAGS: Final = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | 0o20000000
_ARCH_SET_FS, _AT_FDCWD, _AT_EMPTY_PATH, _RLIMIT_STACK = 0x1002, -100, 0x1000, 3
_PROT_READ, _PROT_EXEC, _MAP_PRIVATE, _MAP_ANONYMOUS, _MAP_DENYWRITE = 1, 4, 2, 0x20, 0x800


@dataclass(frozen=True)
class Need:
    """A call the dynamic loader or the C runtime makes before ``main``, and the rule run
    adds when the policy would deny it."""

    syscall: str
    args: tuple[int, ...]
    rule: Rule
    why: str


#: What a dynamically linked program calls to start, beyond PythonRuntime (brk, mmap,
#: munmap, mprotect, futex, rseq, set_robust_list, getrandom, close, exit_group), which
#: every policy has. Measured with ``isolates trace -- true`` (glibc, x86_64).
STARTUP: Final = (
    Need("execve", (), Rule("execve"),
         "the exec of the command itself; Landlock lets only the command and its "
         "interpreters be executed"),
    Need("arch_prctl", (_ARCH_SET_FS,), Rule("arch_prctl", Arg(0) == _ARCH_SET_FS),
         "thread-local storage (ARCH_SET_FS only)"),
    Need("access", (0, os.R_OK), Rule("access", action=Action.ERRNO(errno.ENOENT)),
         "the loader checks /etc/ld.so.preload: answered 'no such file' without running"),
    Need("openat", (_AT_FDCWD, 0, os.O_RDONLY | os.O_CLOEXEC),
         Rule("openat", Arg(2) & _WRITE_FLAGS == 0),
         "the loader opens libraries read-only; Landlock limits reading to the command, "
         "the library directories and /etc/ld.so.cache"),
    Need("newfstatat", (3, 0, 0, _AT_EMPTY_PATH),
         Rule("newfstatat", Arg(3) & _AT_EMPTY_PATH == _AT_EMPTY_PATH),
         "fstat of an opened library (AT_EMPTY_PATH only)"),
    Need("read", (3,), Rule("read"), "reading a library's ELF header"),
    Need("pread64", (3,), Rule("pread64"), "reading a library's program headers"),
    Need("mmap", (0, 4096, _PROT_READ | _PROT_EXEC, _MAP_PRIVATE | _MAP_DENYWRITE, 3, 0),
         Rule("mmap", Arg(2) & _PROT_EXEC == _PROT_EXEC, Arg(3) & _MAP_ANONYMOUS == 0),
         "mapping library code: executable mappings of files, never anonymous ones"),
    Need("set_tid_address", (0,), Rule("set_tid_address"), "the C runtime's thread setup"),
    Need("prlimit64", (0, _RLIMIT_STACK, 0, 1), Rule("prlimit64", Arg(2) == 0),
         "reading the stack limit (never setting one)"),
)  # fmt: skip

#: Where the loader looks for libraries by default; /etc/ld.so.conf adds more.
LIBRARY_DIRS: Final = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
LOADER_CACHE: Final = "/etc/ld.so.cache"


@dataclass(frozen=True)
class Grant:
    """A Landlock grant: rights beneath a path, and who asked for it (what --dry-run shows)."""

    path: str
    rights: AccessFs
    source: str


#: What Landlock lets the start read or execute.
Grants = tuple[Grant, ...]


@dataclass(frozen=True)
class Startup:
    """A policy with what starting the program needs added."""

    policy: Policy
    added: tuple[Need, ...]  # the STARTUP calls the policy would have denied
    grants: Grants
    domain: LandlockPlan | None  # run's own Landlock domain when the policy has none


def with_startup(policy: Policy, path: str, env: dict[str, str]) -> Startup:
    """``policy`` plus what starting ``path`` needs: the Landlock grants (in the policy's
    own domain if it handles files, else in a domain of run's own) and the STARTUP calls
    it would deny."""
    grants = _start_grants(exec_chain(path), env)
    user_fs = handles_fs(policy)
    if user_fs:
        policy = policy.extend(StartPaths(_landlock(grants)))
    added = tuple(need for need in STARTUP if _denied(policy, need))
    if added:
        policy = policy.extend(RuleSet(*(n.rule for n in added), name="isolates run: start"))
    domain = None if user_fs else _start_domain(added, grants, policy.compat)
    return Startup(policy, added, grants, domain)


def _denied(policy: Policy, need: Need) -> bool:
    """True when ``policy`` answers the loader's call with its default and no rule names
    the syscall outright (an explicit answer is the user's choice: run keeps it)."""
    outright = {r.syscall for rs in policy.rulesets[1:] for r in rs.rules() if not r.conditions}
    answer = decide_policy(policy, number(need.syscall), need.args)
    return answer != Action.ALLOW and answer == policy.default and need.syscall not in outright


def handles_fs(policy: Policy) -> bool:
    """Whether ``policy`` has a Landlock domain of its own that handles file rights."""
    return policy.landlock is not None and bool(policy.landlock.plan().handled_fs)


_START: Final = "isolates run: start"


def _start_grants(chain: list[str], env: dict[str, str]) -> Grants:
    grants = [Grant(chain[0], _EXEC_RIGHTS, f"{_START}: the command")]
    grants += [
        Grant(p, _EXEC_RIGHTS, f"{_START}: {_interpreter_of(c)} {c}")
        for c, p in itertools.pairwise(chain)
    ]
    grants += [
        Grant(d, AccessFs.READ_FILE, f"{_START}: library directory") for d in library_dirs(env)
    ]
    if os.path.exists(LOADER_CACHE):
        grants.append(Grant(LOADER_CACHE, AccessFs.READ_FILE, f"{_START}: the loader's cache"))
    return tuple(grants)


def _interpreter_of(path: str) -> str:
    try:
        with open(path, "rb") as f:
            shebang = f.read(2) == b"#!"
    except OSError:
        shebang = False
    return "the #! interpreter of" if shebang else "the dynamic loader of"


def _landlock(grants: Grants) -> Landlock:
    ll = Landlock(name=_START)
    for grant in grants:
        ll = ll.allow(grant.path, grant.rights, missing_ok=True)
    return ll


def _start_domain(added: tuple[Need, ...], grants: Grants, compat: Compat) -> LandlockPlan | None:
    """run's own Landlock domain when the options made none: it handles only the rights
    whose syscalls run added (execute, reading files), so they reach the start's paths."""
    names = {need.syscall for need in added}
    handled = (AccessFs.EXECUTE if "execve" in names else AccessFs(0)) | (
        AccessFs.READ_FILE if "openat" in names else AccessFs(0)
    )
    if not handled:
        return None
    return dataclasses.replace(_landlock(grants).plan(compat), handled_fs=int(handled))


class StartPaths(RuleSet):
    """run's Landlock grants merged into the options' own domain, without the syscalls a
    Landlock RuleSet implies (STARTUP adds exactly those the start needs)."""

    def __init__(self, landlock: Landlock) -> None:
        super().__init__(name="isolates run: start (Landlock)")
        self._landlock = landlock

    def landlock(self) -> Landlock:
        return self._landlock


def exec_chain(path: str) -> list[str]:
    """The files the kernel opens to exec ``path``: the file, the interpreters of its
    ``#!`` lines, and the ELF interpreter (dynamic loader) of the binary at the end."""
    chain: list[str] = []
    current: str | None = path
    while current is not None and len(chain) < 6:  # the kernel follows 4 levels of #!
        real = os.path.realpath(current)
        if real in chain:
            break
        chain.append(real)
        current = interpreter(real)
    return chain


def library_dirs(env: dict[str, str]) -> list[str]:
    """The loader's directories: LIBRARY_DIRS, those /etc/ld.so.conf lists, and
    $LD_LIBRARY_PATH; real paths, those beneath another one dropped. Never "/" nor a
    directory holding $HOME (``LD_LIBRARY_PATH=/`` would open every file to reading):
    the user grants those with --read if they mean it."""
    dirs = [*LIBRARY_DIRS, *_ld_so_conf("/etc/ld.so.conf", 0)]
    dirs += env.get("LD_LIBRARY_PATH", "").split(":")
    real = sorted({os.path.realpath(d) for d in dirs if d.startswith("/") and os.path.isdir(d)})
    real = [d for d in real if not too_broad(d) and not too_broad(d, env.get("HOME"))]
    kept: list[str] = []
    for d in real:  # sorted: a parent comes before what is beneath it
        if not any(d.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(d)
    return kept


def _ld_so_conf(path: str, depth: int) -> list[str]:
    try:
        with open(path) as f:
            lines = [line.split("#")[0].strip() for line in f]
    except OSError:
        return []
    out: list[str] = []
    for line in lines:
        if line.startswith("include") and depth < 4:
            pattern = os.path.join(os.path.dirname(path), line.split(None, 1)[-1])
            for included in sorted(glob.glob(pattern)):
                out += _ld_so_conf(included, depth + 1)
        elif line.startswith("/"):
            out.append(line.split()[0].split("=")[0])
    return out

"""``isolates run``: run any program under a policy built from command-line options.

    isolates run --pledge "stdio rpath" --read /srv/data -- cat /srv/data/report

The options build a Policy. ``run`` then adds what the program needs to start and nothing
else (``STARTUP``: each call is added only when the policy would deny it; Landlock rights
for the command, its interpreters and the library directories), applies everything to
this process (all threads; Landlock first, seccomp last) and execs the program: seccomp
filters and Landlock domains survive execve, so nothing of Python stays in between.
docs/cli.md is the user's documentation.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import glob
import os
import shutil
import signal
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Final, NoReturn, TypeVar

from isolates.sandbox import (
    Action,
    Arg,
    Compat,
    Landlock,
    Networking,
    Policy,
    PolicyError,
    Rule,
    RuleSet,
    SandboxError,
    profiles,
)
from isolates.sandbox._bpf import decide
from isolates.sandbox._kernel import load_seccomp
from isolates.sandbox._landlock import AccessFs, LandlockPlan, apply_plan
from isolates.sandbox._syscalls import number

T = TypeVar("T")

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


class UsageError(Exception):
    """Bad options: reported as one line, exit status 2."""


class CommandNotFound(Exception):
    """The command is not a file we can execute: exit status 127 (or 126)."""

    def __init__(self, message: str, status: int = 127) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Plan:
    """Everything ``run`` decided before anything irreversible (what --dry-run shows)."""

    path: str
    argv: list[str]
    env: dict[str, str]
    policy: Policy
    added: tuple[Need, ...]
    grants: tuple[tuple[str, AccessFs], ...]
    start: LandlockPlan | None  # run's own Landlock domain when the options have none


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a program under a policy built from options",
        description="Run CMD confined by seccomp and Landlock. Without --pledge or "
        "--systemd every syscall is allowed but those isolates always denies, and only "
        "the path and port options restrict. Violations fail with EPERM unless --kill.",
    )
    add = parser.add_argument
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--pledge", metavar="PROMISES", help='OpenBSD promises: "stdio rpath"')
    profile.add_argument("--systemd", metavar="SPEC", action="append",
                         help='a SystemCallFilter= value, e.g. "@system-service"')  # fmt: skip
    add("--allow", metavar="SYSCALL", action="append", default=[], help="allow a syscall")
    add("--read", metavar="PATH", action="append", default=[], help="read beneath PATH")
    add("--write", metavar="PATH", action="append", default=[], help="write beneath PATH")
    add("--exec", metavar="PATH", action="append", default=[], dest="execute",
        help="execute (and read) beneath PATH")  # fmt: skip
    add("--net-connect", metavar="PORT", type=int, action="append", default=[],
        help="TCP clients, connecting to PORT only")  # fmt: skip
    add("--net-bind", metavar="PORT", type=int, action="append", default=[],
        help="TCP servers, binding PORT only")  # fmt: skip
    add("--env", metavar="NAME[=VALUE]", action="append", default=[],
        help="set NAME, or keep it with --clear-env")  # fmt: skip
    add("--clear-env", action="store_true", help="start CMD with an empty environment")
    add("--kill", action="store_true", help="kill the program on a violation (SIGSYS)")
    add("--hard", action="store_true", help="fail if the kernel cannot enforce every right")
    add("--dry-run", action="store_true", help="print the policy and what run adds; exit")
    add("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARG ...]")
    parser.set_defaults(command=main)


def main(args: argparse.Namespace) -> int:
    try:
        plan = build(args)
    except UsageError as exc:
        return _fail(str(exc), 2)
    except CommandNotFound as exc:
        return _fail(str(exc), exc.status)
    if args.dry_run:
        print(describe(plan))
        return 0
    try:
        execute(plan)
    except SandboxError as exc:
        return _fail(f"cannot confine {plan.argv[0]}: {exc}", 126)
    except OSError as exc:  # execve failed: its message obeys the policy now in force
        return _fail(f"cannot execute {plan.path}: {exc.strerror}", 126)


def _fail(message: str, status: int) -> int:
    print(f"isolates run: {' '.join(message.split())}", file=sys.stderr)
    return status


# -- building the plan ---------------------------------------------------------------------


def build(args: argparse.Namespace) -> Plan:
    """The plan for ``args``; UsageError names the offending option."""
    argv = args.argv[1:] if args.argv[:1] == ["--"] else list(args.argv)
    if not argv:
        raise UsageError("no command given: isolates run [OPTIONS] -- CMD [ARG ...]")
    env = _environment(args)
    path = _resolve(argv[0], env)
    policy = _options_policy(args)
    chain = exec_chain(path)
    grants = _start_grants(chain, env)
    user_fs = _handles_fs(policy)
    if user_fs:
        policy = policy.extend(_StartPaths(_landlock(grants)))
    added = tuple(need for need in STARTUP if _denied(policy, need))
    if added:
        policy = policy.extend(RuleSet(*(n.rule for n in added), name="isolates run: start"))
    start = None if user_fs else _start_domain(added, grants, policy.compat)
    return Plan(path, argv, env, policy, added, grants, start)


def _options_policy(args: argparse.Namespace) -> Policy:
    rulesets = [*_paths(args), *_network(args), *_allowed(args)]
    compat = Compat.HARD if args.hard else Compat.BEST_EFFORT
    try:
        if args.pledge is not None:
            base = _option("--pledge", repr(args.pledge), profiles.pledge, args.pledge)
            policy = base.extend(*rulesets, default=_violation(args))
        elif args.systemd:
            spec = " ".join(map(repr, args.systemd))
            base = _option("--systemd", spec, _systemd, args.systemd, args.kill)
            policy = base.extend(*rulesets)
        else:
            policy = Policy(*rulesets, default=Action.ALLOW)
        return Policy(*policy.rulesets[1:], default=policy.default, compat=compat)
    except PolicyError as exc:
        raise UsageError(f"the options conflict: {exc}") from None


def _violation(args: argparse.Namespace) -> Action:
    if args.kill:
        return Action.KILL_PROCESS
    return Action.ERRNO(errno.ENOSYS if "error" in args.pledge.split() else errno.EPERM)


def _systemd(specs: list[str], kill: bool) -> Policy:
    return profiles.systemd(*specs, default_errno=None if kill else "EPERM")


def _option(flag: str, value: object, build: Callable[..., T], *args: object) -> T:
    """``build(*args)``, with a PolicyError turned into a UsageError naming the option."""
    try:
        return build(*args)
    except PolicyError as exc:
        raise UsageError(f"{flag} {value}: {exc}") from None


def _paths(args: argparse.Namespace) -> list[RuleSet]:
    out: list[RuleSet] = []
    for flag, paths, method in (("--read", args.read, Landlock.read),
                                ("--write", args.write, Landlock.write),
                                ("--exec", args.execute, Landlock.execute)):  # fmt: skip
        for path in paths:
            if not os.path.exists(path):
                raise UsageError(f"{flag} {path}: no such file or directory")
            out.append(_option(flag, path, method, Landlock(name=f"{flag} {path}"), path))
    return out


def _network(args: argparse.Namespace) -> list[RuleSet]:
    out: list[RuleSet] = []
    for port in args.net_connect:
        name = f"--net-connect {port}"
        out.append(_option("--net-connect", port, Landlock(name=name).connect_tcp, port))
        out.append(Networking.nothing().allow_tcp_clients().named(name))
    for port in args.net_bind:
        name = f"--net-bind {port}"
        out.append(_option("--net-bind", port, Landlock(name=name).bind_tcp, port))
        out.append(Networking.nothing().allow_tcp_servers().named(name))
    return out


def _allowed(args: argparse.Namespace) -> list[RuleSet]:
    for name in args.allow:
        _option("--allow", name, number, name)
    return [RuleSet.nothing().allow(name).named(f"--allow {name}") for name in args.allow]


def _environment(args: argparse.Namespace) -> dict[str, str]:
    env = {} if args.clear_env else dict(os.environ)
    for item in args.env:
        name, sep, value = item.partition("=")
        if not name:
            raise UsageError(f"--env {item}: expected NAME=VALUE, or NAME to keep its value")
        if sep:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env


def _resolve(command: str, env: dict[str, str]) -> str:
    found = shutil.which(command, path=env.get("PATH", os.defpath))
    if found is not None:
        return os.path.abspath(found)
    if os.sep in command and os.path.exists(command):
        raise CommandNotFound(f"{command}: not an executable file", status=126)
    raise CommandNotFound(f"{command}: command not found")


# -- what starting a program needs ---------------------------------------------------------


def _denied(policy: Policy, need: Need) -> bool:
    """True when ``policy`` answers the loader's call with its default and no rule names
    the syscall outright (an explicit answer is the user's choice: run keeps it)."""
    outright = {r.syscall for rs in policy.rulesets[1:] for r in rs.rules() if not r.conditions}
    answer = decide(policy.compile().bpf, number(need.syscall), need.args)
    return answer != Action.ALLOW and answer == policy.default and need.syscall not in outright


def _handles_fs(policy: Policy) -> bool:
    return policy.landlock is not None and bool(policy.landlock.plan().handled_fs)


def _start_grants(chain: list[str], env: dict[str, str]) -> tuple[tuple[str, AccessFs], ...]:
    grants = [(path, _EXEC_RIGHTS) for path in chain]
    grants += [(d, AccessFs.READ_FILE) for d in library_dirs(env)]
    if os.path.exists(LOADER_CACHE):
        grants.append((LOADER_CACHE, AccessFs.READ_FILE))
    return tuple(grants)


def _landlock(grants: tuple[tuple[str, AccessFs], ...]) -> Landlock:
    ll = Landlock(name="isolates run: start")
    for path, rights in grants:
        ll = ll.allow(path, rights, missing_ok=True)
    return ll


def _start_domain(added: tuple[Need, ...], grants: tuple[tuple[str, AccessFs], ...],
                  compat: Compat) -> LandlockPlan | None:  # fmt: skip
    """run's own Landlock domain when the options made none: it handles only the rights
    whose syscalls run added (execute, reading files), so they reach the start's paths."""
    names = {need.syscall for need in added}
    handled = (AccessFs.EXECUTE if "execve" in names else AccessFs(0)) | (
        AccessFs.READ_FILE if "openat" in names else AccessFs(0)
    )
    if not handled:
        return None
    return dataclasses.replace(_landlock(grants).plan(compat), handled_fs=int(handled))


class _StartPaths(RuleSet):
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
        current = _interpreter(real)
    return chain


def _interpreter(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(128)
            if head.startswith(b"#!"):
                words = head[2:].split(b"\n", 1)[0].split()
                return os.fsdecode(words[0]) if words else None
            if head.startswith(b"\x7fELF") and len(head) >= 64:
                return _elf_interpreter(f, head)
    except (OSError, struct.error):
        pass
    return None


def _elf_interpreter(f: BinaryIO, head: bytes) -> str | None:
    """PT_INTERP of an ELF file (``f`` is open at any position), or None if static."""
    wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
    word = order + ("Q" if wide else "I")
    (phoff,) = struct.unpack_from(word, head, 32 if wide else 28)
    size, count = struct.unpack_from(order + "HH", head, 54 if wide else 42)
    for i in range(count):
        f.seek(phoff + i * size)
        header = f.read(size)
        if struct.unpack_from(order + "I", header)[0] == 3:  # PT_INTERP
            (offset,) = struct.unpack_from(word, header, 8 if wide else 4)
            (length,) = struct.unpack_from(word, header, 32 if wide else 16)
            f.seek(offset)
            return os.fsdecode(f.read(length).rstrip(b"\0"))
    return None


def library_dirs(env: dict[str, str]) -> list[str]:
    """The loader's directories: LIBRARY_DIRS, those /etc/ld.so.conf lists, and
    $LD_LIBRARY_PATH; real paths, those beneath another one dropped."""
    dirs = [*LIBRARY_DIRS, *_ld_so_conf("/etc/ld.so.conf", 0)]
    dirs += env.get("LD_LIBRARY_PATH", "").split(":")
    real = sorted({os.path.realpath(d) for d in dirs if d.startswith("/") and os.path.isdir(d)})
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


# -- applying it ---------------------------------------------------------------------------


def execute(plan: Plan) -> NoReturn:
    """Confine this process (all threads) and exec the program. Returns only by raising:
    SandboxError before anything was applied or while applying, OSError if exec failed."""
    compiled = plan.policy.compile()  # libseccomp needs syscalls the policy may deny
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess: not ignored after exec
        signal.signal(sig, signal.SIG_DFL)
    for part in (plan.start, compiled.landlock):
        if part is not None:
            status = apply_plan(part, all_threads=True)
            if status.enforcement != "full":
                print(f"isolates run: warning: Landlock {status}", file=sys.stderr)
    load_seccomp(compiled.bpf, all_threads=True)  # last: nothing Python does comes after
    os.execve(plan.path, plan.argv, plan.env)
    raise AssertionError("unreachable")  # pragma: no cover


def describe(plan: Plan) -> str:
    """What --dry-run prints: the command, the policy, and what run added to start it."""
    lines = [f"command: {plan.path} (argv {plan.argv})",
             f"policy: {plan.policy!r}", "added so the program can start:"]  # fmt: skip
    lines += [f"  seccomp {need.rule!r}: {need.why}" for need in plan.added] or ["  seccomp: -"]
    if plan.start is not None:
        handled = AccessFs(plan.start.handled_fs)
        lines.append(f"  landlock, a domain of its own handling {_flags(handled)}:")
        lines += [f"    {p}: {_flags(r & handled)}" for p, r in plan.grants if r & handled]
    elif _handles_fs(plan.policy):
        lines.append("  landlock, added to the options' domain:")
        lines += [f"    {path}: {_flags(rights)}" for path, rights in plan.grants]
    lines.append("seccomp rules:")
    for e in plan.policy.entries():
        lines.append(f"  {e.syscall} {e.action!r} {' '.join(map(repr, e.conditions))}".rstrip())
    lines.append(f"  (any other syscall: {plan.policy.default!r})")
    return "\n".join(lines)


def _flags(rights: AccessFs) -> str:
    return "|".join(str(flag.name) for flag in AccessFs if flag & rights)

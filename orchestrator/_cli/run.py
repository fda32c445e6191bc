"""``isolates run``: run any program under a policy built from command-line options.

    isolates run --pledge "stdio rpath" --read /srv/data -- cat /srv/data/report

The options build a Policy; under --pledge the path options are its unveil (the
promises reach those paths only, not "/"). ``run`` then adds what the program needs to
start and nothing else (run_startup.py: each call is added only when the policy would deny
it; Landlock rights for the command, its interpreters and the library directories),
applies everything to this process (all threads; Landlock first, seccomp last) and
execs the program: seccomp filters and Landlock domains survive execve, so nothing of
Python stays in between.
docs/cli.md is the user's documentation.

Safety argument (``execute``: apply, then exec):

- Everything that can fail for a reason of the user's (options, the command's path,
  compiling the policy) is decided first, in ``build`` and by compiling; only then is
  anything applied, so a mistake leaves the process unconfined and says why (exit 2,
  126 or 127), never half-confined running the program.
- The policy is loaded on every thread (TSYNC), Landlock before seccomp so that
  Landlock's own syscalls stay allowed; NO_NEW_PRIVS, set with the filter, holds
  across the exec: the program cannot gain privileges from a setuid file.
- Capabilities go first: every one but those named with ``--cap-keep`` is dropped
  (effective, permitted, inheritable, ambient, bounding) and the securebits are locked
  (SECBIT_NOROOT, NO_SETUID_FIXUP, KEEP_CAPS off), so the program, even run by root,
  starts with the kept ones only (raised in the ambient set, the only way they survive
  the exec) and cannot regain any.
- ``os.execve`` replaces this process image: the filters and the Landlock domains
  survive it, and no Python code of ours runs after the policy is in force but the
  exec itself, which the policy allows (run adds ``execve``, and Landlock lets only the
  command and its interpreters be executed). If the exec fails, its error is reported
  under the policy now in force and the process exits: it never goes on unconfined.
- SIGPIPE and SIGXFSZ get their default action back before the exec (as
  ``subprocess`` does): Python ignores them, and an ignored signal stays ignored
  across execve.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NoReturn, TypeVar

from isolates.sandbox import (
    AccessFs,
    AccessNet,
    Action,
    Compat,
    CompiledPolicy,
    Enforcement,
    Landlock,
    LandlockPlan,
    LandlockStatus,
    Networking,
    Policy,
    PolicyError,
    RuleSet,
    SandboxError,
    profiles,
)
from isolates.sandbox.lowlevel import (
    capability_names,
    capability_numbers,
    did_you_mean,
    landlock_enforcement,
    resolve_landlock,
)
from isolates.sandbox.lowlevel import syscall_number as number

from .._core.denials import guards_program
from .command import CommandNotFound, Subparsers, UsageError, program_argv, resolve
from .run_cache import content_of, remember
from .run_exec import environment, exec_confined, fail
from .run_limits import add_limit_options, limits_of, run_limited
from .run_report import run_ready
from .run_startup import Grant, Grants, Need, StartPaths, with_startup

if TYPE_CHECKING:
    from .run_exec import Ready, Report

T = TypeVar("T")
USAGE = "isolates run [OPTIONS] -- CMD [ARG ...]"


@dataclass(frozen=True)
class Plan:
    """Everything ``run`` decided before anything irreversible (what --dry-run shows)."""

    path: str
    argv: list[str]
    env: dict[str, str]
    policy: Policy
    added: tuple[Need, ...]
    grants: Grants
    start: LandlockPlan | None  # run's own Landlock domain when the options have none
    capabilities: tuple[int, ...] = ()  # kept across the exec; every other is dropped


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a program under a policy built from options",
        description="Run CMD confined by seccomp and Landlock. Without --pledge or "
        "--systemd every syscall is allowed but those isolates always denies, and only "
        "the path and port options restrict. Violations fail with EPERM unless --kill.",
    )
    add_policy_options(parser)
    add_limit_options(parser)
    add = parser.add_argument
    add(
        "--env",
        metavar="NAME[=VALUE]",
        action="append",
        default=[],
        help="set NAME, or keep it with --clear-env",
    )
    add("--clear-env", action="store_true", help="start CMD with an empty environment")
    add("--kill", action="store_true", help="kill the program on a violation (SIGSYS)")
    add("--hard", action="store_true", help="fail if the kernel cannot enforce every right")
    add(
        "--cap-keep",
        metavar="NAME",
        action="append",
        default=[],
        help="keep this capability (capabilities(7) name, e.g. NET_BIND_SERVICE); every "
        "other is dropped, even for root",
    )
    add(
        "--learn",
        action="store_true",
        help="with --profile: let what the profile would deny run, and say what it was",
    )
    add("--update", action="store_true", help="with --learn: add what was learned to the profile")
    report = parser.add_mutually_exclusive_group()
    report.add_argument(
        "--report",
        action="store_true",
        help="say at exit which calls the policy denied, even when the program succeeds "
        "(by default they are said when it fails)",
    )
    report.add_argument(
        "--no-report",
        action="store_true",
        help="say no denials: run execs the program in place instead of staying as its "
        "answering parent",
    )
    add("--dry-run", action="store_true", help="print the policy and what run adds; exit")
    add("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARG ...]")
    parser.set_defaults(command=main)


def add_policy_options(parser: argparse.ArgumentParser) -> None:
    """The options that build the policy: a profile, syscalls, paths and ports."""
    add = parser.add_argument
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--pledge", metavar="PROMISES", help='OpenBSD promises: "stdio rpath"')
    profile.add_argument(
        "--profile",
        metavar="FILE",
        help="a policy file (docs/sandbox.md, 'Policy files'); the other options add to it",
    )
    profile.add_argument(
        "--systemd",
        metavar="SPEC",
        action="append",
        help='a SystemCallFilter= value, e.g. "@system-service"',
    )
    add(
        "--pledge-ignore",
        metavar="PROMISE",
        action="append",
        default=[],
        help="drop a promise with no Linux meaning (pf, tape, ...) instead of failing",
    )
    add("--allow", metavar="SYSCALL", action="append", default=[], help="allow a syscall")
    add("--read", metavar="PATH", action="append", default=[], help="read beneath PATH")
    add("--write", metavar="PATH", action="append", default=[], help="write beneath PATH")
    add(
        "--exec",
        metavar="PATH",
        action="append",
        default=[],
        dest="execute",
        help="execute (and read) beneath PATH",
    )
    for flag, what in (
        ("--create", "create files and directories in the directory PATH"),
        ("--delete", "delete files and empty directories in the directory PATH"),
        ("--rw", "read, write, create and delete beneath PATH (a working directory)"),
    ):
        add(flag, metavar="PATH", action="append", default=[], help=what)
    add(
        "--allow-fs",
        metavar="PATH:RIGHTS",
        action="append",
        default=[],
        help="rights by name beneath PATH, e.g. /srv/db:read,write,create,remove,make_sym "
        "(groups: read write create delete list execute tmp; or any AccessFs name)",
    )
    add("--ssl-certs", action="store_true", help="read the CA certificates TLS verifies with")
    add("--dns", action="store_true", help="read what the resolver reads (resolv.conf, ...)")
    add(
        "--tmp",
        action="store_true",
        help="a private writable directory, as TMPDIR, removed when the program ends",
    )
    add(
        "--net-connect",
        metavar="PORT",
        type=int,
        action="append",
        default=[],
        help="TCP clients, connecting to PORT only",
    )
    add(
        "--net-bind",
        metavar="PORT",
        type=int,
        action="append",
        default=[],
        help="TCP servers, binding PORT only",
    )


def main(args: argparse.Namespace) -> int:
    args.tmp_dir = tempfile.mkdtemp(prefix="isolates-run-") if args.tmp else None
    try:
        return _main(args)
    finally:
        if args.tmp_dir is not None:  # only this process returns here: run's parent
            shutil.rmtree(args.tmp_dir, ignore_errors=True)


def _main(args: argparse.Namespace) -> int:
    if args.learn:
        return _learn(args)
    profile = None if args.profile is None else content_of(args.profile)
    try:
        plan = build(args)
        limits = limits_of(args)
    except UsageError as exc:
        return fail(str(exc), 2)
    except CommandNotFound as exc:
        return fail(str(exc), exc.status)
    if args.dry_run:
        print(dry_run_report(plan))
        return 0
    # A parent stays to enforce limits or remove --tmp at the end (run_limits.py);
    # else one stays only to answer and report denials (run_report.py), unless told not.
    report = None if args.no_report else ("always" if args.report else "failure")
    if limits is not None or args.tmp_dir is not None:
        return run_limited(
            limits,
            plan.policy,
            lambda notify, errnos: execute(plan, notify, errnos),
            report=report,
        )
    try:
        ready, compiled = prepare(plan, report=report)
    except SandboxError as exc:
        return fail(f"cannot confine {plan.argv[0]}: {exc}", 126)
    if getattr(args, "cache_tokens", None) is not None:
        _remember(args, plan, ready, compiled, profile)
    return run_ready(ready, plan.argv, plan.env)


def _learn(args: argparse.Namespace) -> int:
    """``--learn``: the program under the tracer, held against its profile (learn.py)."""
    from .learn import learn

    try:
        if args.profile is None:
            raise UsageError("--learn needs --profile FILE: the profile to learn against")
        return learn(args.profile, program_argv(args.argv, USAGE), update=args.update)
    except UsageError as exc:
        return fail(str(exc), 2)
    except CommandNotFound as exc:
        return fail(str(exc), exc.status)


def _patchable(plan: Plan, compiled: CompiledPolicy, **how: object) -> bool:
    """Whether the program (compiled ``how``), patched for another process, is what
    compiling for that process gives: only then may a later run (another pid) take it
    from the cache. A compile more, on a run that builds its policy anyway."""
    if compiled.self_pid is None:
        return not compiled.pid_slots
    other = compiled.self_pid ^ 0x5A5A5
    again = plan.policy.compile(other, all_threads=True, **how)  # type: ignore[arg-type]
    return again.pid_slots == compiled.pid_slots and again.bpf == compiled.for_pid(other)


def _remember(
    args: argparse.Namespace,
    plan: Plan,
    ready: Ready,
    compiled: CompiledPolicy,
    profile: bytes | None,
) -> None:
    """Keep what this run applies for the next run of the same command line
    (run_cache.py), with the --profile bytes it was built from, when they held still."""
    reported = ready[8] is not None
    if not _patchable(plan, compiled, **(_REPORTING if reported else {})):
        return
    if reported and not _patchable(plan, plan.policy.compile(all_threads=True)):
        return
    profiles: list[tuple[str, bytes]] = []
    if args.profile is not None:
        if profile is None or content_of(args.profile) != profile:
            return
        profiles.append((args.profile, profile))
    fd = _profile_fd(args.profile)
    remember(
        args.cache_tokens,
        plan.argv,
        ready,
        env=tuple(args.env),
        clear_env=args.clear_env,
        profiles=profiles,
        uninherit=() if fd is None else (fd,),
    )


# -- building the plan ---------------------------------------------------------------------


def build(args: argparse.Namespace) -> Plan:
    """The plan for ``args``; UsageError names the offending option."""
    argv = program_argv(args.argv, USAGE)
    env = _environment(args)
    path = resolve(argv[0], env)
    start = with_startup(options_policy(args), path, env)
    try:
        keep = capability_numbers(args.cap_keep)
    except PolicyError as exc:
        raise UsageError(f"--cap-keep: {exc}") from None
    return Plan(path, argv, env, start.policy, start.added, start.grants, start.domain, keep)


def options_policy(args: argparse.Namespace) -> Policy:
    rulesets = [*_paths(args), *_network(args), *_allowed(args)]
    compat = Compat.HARD if args.hard else Compat.BEST_EFFORT
    try:
        if args.pledge is not None:
            unveil = _unveil(args) or None
            base = _pledge(args.pledge, args.pledge_ignore, unveil)
            policy = base.extend(*rulesets, default=_violation(args))
        elif args.systemd:
            spec = " ".join(map(repr, args.systemd))
            base = _option("--systemd", spec, _systemd, args.systemd, args.kill)
            policy = base.extend(*rulesets)
        elif args.profile is not None:
            base = _option("--profile", args.profile, Policy.load, args.profile)
            _not_inherited(args.profile)
            kill = Action.KILL_PROCESS if args.kill else None
            policy = base.extend(*rulesets, default=kill)
            compat = Compat.HARD if args.hard else base.compat
        else:
            policy = Policy(*rulesets, default=Action.ALLOW)
        return Policy(*policy.rulesets[1:], default=policy.default, compat=compat)
    except PolicyError as exc:
        raise UsageError(f"the options conflict: {exc}") from None


def _not_inherited(path: str) -> None:
    """A profile read from a descriptor (``/proc/self/fd/N``: what ``orchestrator.run``
    passes) is not the program's: it does not survive the exec."""
    fd = _profile_fd(path)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)


def _profile_fd(path: str | None) -> int | None:
    match = re.fullmatch(r"/(?:proc/self|dev)/fd/(\d+)", path or "")
    return None if match is None else int(match[1])


def _pledge(promises: str, ignore: list[str], unveil: dict[str, str] | None) -> Policy:
    try:
        return profiles.pledge(promises, None, unveil=unveil, ignore=ignore)
    except PolicyError as exc:  # the library's advice, in the command line's words
        said = re.sub(r"pass ignore=\{'([\w]+)'\}", r"pass --pledge-ignore \1", str(exc))
        said = said.replace(" in ignore", " in --pledge-ignore")
        raise UsageError(f"--pledge {promises!r}: {said}") from None


def _violation(args: argparse.Namespace) -> Action:
    if args.kill:
        return Action.KILL_PROCESS
    return Action.ERRNO(errno.ENOSYS if "error" in args.pledge.split() else errno.EPERM)


def _systemd(specs: list[str], kill: bool) -> Policy:
    return profiles.systemd(*specs, default_errno=None if kill else "EPERM")


def _option(
    flag: str, value: object, build: Callable[..., T], *args: object, **kwargs: object
) -> T:
    """``build(*args)``, with a PolicyError turned into a UsageError naming the option."""
    try:
        return build(*args, **kwargs)
    except PolicyError as exc:
        raise UsageError(f"{flag} {value}: {exc}") from None


def _unveil(args: argparse.Namespace) -> dict[str, str]:
    """The path options as pledge's unveil: under --pledge they are the only paths the
    promises reach (rpath reads beneath --read paths only, not "/"), as OpenBSD's unveil.
    --write is "wc" (write, and create in it), --exec "x"; the promises still decide
    which rights each letter brings, and the options keep their own rights besides."""
    letters: dict[str, str] = {}
    fs_specs = [spec.rpartition(":") for spec in args.allow_fs]
    for paths, permissions in (
        (args.read, "r"),
        (args.write, "wc"),
        (args.execute, "x"),
        (args.create, "c"),
        (args.delete, "c"),
        (args.rw, "rwc"),
        *(([path], _letters(names)) for path, _, names in fs_specs),
        ([args.tmp_dir] if args.tmp_dir else [], "rwc"),
    ):
        for path in paths:
            full = os.path.abspath(path)
            letters[full] = letters.get(full, "") + permissions
    return letters


_UNVEIL_LETTERS: Final = (
    ("r", frozenset({"read", "list", "read_file", "read_dir", "tmp"})),
    ("w", frozenset({"write", "write_file", "truncate", "tmp"})),
    ("x", frozenset({"execute"})),
    ("c", frozenset({"create", "delete", "tmp", "remove_file", "remove_dir", "make_dir",
                     "make_reg", "make_sym", "make_sock", "make_fifo", "refer"})),
)  # fmt: skip


def _letters(names: str) -> str:
    """unveil's letters for --allow-fs rights: r(ead), w(rite), x (execute), c(reate or
    remove); the promises still decide which calls each letter brings."""
    words = {n.strip().lower() for n in names.split(",")}
    return "".join(letter for letter, of in _UNVEIL_LETTERS if words & of)


def _paths(args: argparse.Namespace) -> list[Landlock]:
    out: list[Landlock] = []
    for flag, paths, methods in (
        ("--read", args.read, (Landlock.read,)),
        ("--write", args.write, (Landlock.write,)),
        ("--exec", args.execute, (Landlock.execute,)),
        ("--create", args.create, (Landlock.create,)),
        ("--delete", args.delete, (Landlock.delete,)),
        ("--rw", args.rw, (Landlock.read, Landlock.write, Landlock.create, Landlock.delete)),
    ):
        for path in paths:
            if not os.path.exists(path):
                raise UsageError(f"{flag} {path}: no such file or directory")
            ll = Landlock(name=f"{flag} {path}")
            for method in methods:
                ll = _option(flag, path, method, ll, path)
            out.append(ll)
    out += [_allow_fs(spec) for spec in args.allow_fs]
    if args.ssl_certs:
        out.append(Landlock(name="--ssl-certs").ssl_certs())
    if args.dns:
        out.append(Landlock(name="--dns").dns())
    if args.tmp_dir is not None:
        out.append(Landlock(name="--tmp").tmp(args.tmp_dir))
    return out


#: What --allow-fs calls its groups of rights (Landlock's builders of the same names).
_FS_GROUPS: Final = ("read", "write", "create", "delete", "list", "execute", "tmp")


def _allow_fs(spec: str) -> Landlock:
    """``--allow-fs PATH:RIGHTS``: groups and AccessFs names, comma-separated."""
    path, sep, names = spec.rpartition(":")
    if not sep or not path or not names:
        raise UsageError(f"--allow-fs {spec}: expected PATH:RIGHTS, e.g. /srv/db:read,write")
    if not os.path.exists(path):
        raise UsageError(f"--allow-fs {spec}: {path}: no such file or directory")
    ll, bits = Landlock(name=f"--allow-fs {spec}"), AccessFs(0)
    for name in (n.strip().lower() for n in names.split(",")):
        if name in _FS_GROUPS:
            ll = _option("--allow-fs", spec, getattr(ll, name), path)
        elif name.upper() in AccessFs.__members__:
            bits |= AccessFs[name.upper()]
        else:
            known = [*_FS_GROUPS, *(m.lower() for m in AccessFs.__members__)]
            raise UsageError(
                f"--allow-fs {spec}: unknown right {name!r}{did_you_mean(name, known)}"
            )
    return _option("--allow-fs", spec, ll.allow, path, bits) if bits else ll


def _network(args: argparse.Namespace) -> list[RuleSet | Landlock]:
    out: list[RuleSet | Landlock] = []
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
    for item in args.env:
        if not item.partition("=")[0]:
            raise UsageError(f"--env {item}: expected NAME=VALUE, or NAME to keep its value")
    return environment(args.env, args.clear_env, args.tmp_dir, os.environ)


# -- applying it ---------------------------------------------------------------------------


def execute(plan: Plan, notify: frozenset[str] = frozenset(), errnos: bool = False) -> NoReturn:
    """Confine this process (all threads) and exec the program, for a run that keeps a
    parent: returns only by raising (run_exec.exec_confined). ``notify``: syscalls its
    seccomp listener decides (``--processes``: run_limits.py takes the listener while the
    exec is parked on it); ``errnos``: its errno denials too (reporting them). Under a
    listener installed above us (``isolates trace``) only a count of processes needs its
    own: a run that reports loads the policy's plain program instead."""
    ready, compiled = prepare(plan, notify, errnos)
    fallback = compiled.fallback_bpf
    if notify == _REPORTING["notify_calls"]:  # a parent that reports, no count
        fallback = plan.policy.compile(all_threads=True).bpf
    exec_confined(ready, plan.argv, plan.env, listener=bool(notify), fallback=fallback)


#: How the program of a run that reports is compiled: its execs are the rendezvous at
#: which run takes the listener (run_report.py), its errno denials and its kills go to
#: that listener (run answers the one, kills for the other, and names both).
_REPORTING: Final = {
    "notify_calls": frozenset({"execve"}), "notify_errnos": True, "notify_kills": True,
}  # fmt: skip


def prepare(
    plan: Plan,
    notify: frozenset[str] = frozenset(),
    errnos: bool = False,
    *,
    report: str | None = None,
) -> tuple[Ready, CompiledPolicy]:
    """What exec_ready applies for ``plan`` (its program compiled, its Landlock plans
    fitted to this kernel, the warnings known before applying them), and the compiled
    policy it came from. ``report`` ("failure", "always"): run stays as the program's
    parent to answer and report its denials (run_report.py)."""
    kills = report is not None
    if kills:
        notify, errnos = _REPORTING["notify_calls"], True  # type: ignore[assignment]
    # Compiled before anything is applied: libseccomp needs syscalls the policy may deny.
    # For the whole process: the program may stack filters of its own on all its threads.
    compiled = plan.policy.compile(
        all_threads=True, notify_calls=notify, notify_errnos=errnos, notify_kills=kills
    )
    start = None if plan.start is None else resolve_landlock(plan.start)
    landlock = resolve_landlock(compiled.landlock)
    warnings = []
    for resolved in (start, landlock):
        if resolved is not None:
            enforcement, abi, dropped = landlock_enforcement(resolved, all_threads=True)
            if enforcement != "full":
                status = LandlockStatus(Enforcement(enforcement), abi, dropped)
                warnings.append(f"Landlock {status}")
    ready = (
        plan.path, compiled.bpf, start, landlock, compiled.preload, plan.capabilities,
        tuple(warnings), compiled.pid_slots, _report(plan, report),
    )  # fmt: skip
    return ready, compiled


def _report(plan: Plan, report: str | None) -> Report | None:
    """What run_report.py answers with: the policy's own program, the guards alone."""
    if report is None:
        return None
    verdict = plan.policy.compile(all_threads=True)
    guards = guards_program(plan.policy)()
    return (verdict.bpf, verdict.pid_slots, guards, report == "always")


def dry_run_report(plan: Plan) -> str:
    """What --dry-run prints: the command, the policy, every Landlock grant with who asked
    for it, what run added to start the program, and the seccomp rules."""
    lines = [f"command: {plan.path} (argv {plan.argv})", f"policy: {plan.policy!r}"]
    kept = ", ".join(capability_names(plan.capabilities)) or "none"
    lines.append(f"capabilities kept: {kept} (every other dropped, locked)")
    lines += _landlock_lines(plan)
    lines.append("added so the program can start:")
    lines += [f"  seccomp {need.rule!r}: {need.why}" for need in plan.added] or ["  seccomp: -"]
    lines.append("seccomp rules:")
    for e in plan.policy.entries():
        lines.append(f"  {e.syscall} {e.action!r} {' '.join(map(repr, e.conditions))}".rstrip())
    lines.append(f"  (any other syscall: {plan.policy.default!r})")
    lines.append("refused before any rule (the guards):")
    lines += [f"  {g}" for g in plan.policy.guards(all_threads=True)]
    return "\n".join(lines)


def _landlock_lines(plan: Plan) -> list[str]:
    """Each Landlock domain run loads, and every grant in it, once, with its source."""
    lines: list[str] = []
    merged = plan.policy.landlock
    if merged is not None:
        handled = merged.plan()
        what = _handled(AccessFs(handled.handled_fs), AccessNet(handled.handled_net))
        lines.append(f"landlock, the options' domain, handling {what} (the rest is denied):")
        grants = _policy_grants(plan)
        lines += [_grant_line(g) for g in grants]
        lines += _port_lines(plan.policy)
        lines += _wider_lines(grants)
    if plan.start is not None:
        handled_fs = AccessFs(plan.start.handled_fs)
        lines.append(f"landlock, a domain of run's own, handling only {_flags(handled_fs)}:")
        lines += [
            _grant_line(Grant(g.path, g.rights & handled_fs, g.source))
            for g in plan.grants
            if g.rights & handled_fs
        ]
    return lines or ["landlock: none (no option or promise restricts paths or ports)"]


def _policy_grants(plan: Plan) -> list[Grant]:
    """The grants of every RuleSet in the options' domain, each named after its RuleSet
    (run's start grants with what each one is for); any grant no RuleSet names (one the
    Policy adds itself) comes last, as the policy's."""
    out: list[Grant] = []
    for rs in plan.policy.rulesets:
        ll = rs.landlock()
        if isinstance(rs, StartPaths):
            out += plan.grants
        elif ll is not None:
            out += [Grant(path, rights, rs.name) for path, rights in ll.grants()]
    assert plan.policy.landlock is not None
    named = {(g.path, g.rights) for g in out}
    out += [
        Grant(p, r, "the policy") for p, r in plan.policy.landlock.grants() if (p, r) not in named
    ]
    return list(dict.fromkeys(out))


def _wider_lines(grants: list[Grant]) -> list[str]:
    """A warning for each grant from a profile (not an option) that reaches beyond the
    paths the options name: "/" itself, or a directory above one of them."""
    named = [g.path for g in grants if g.source.startswith("--")]
    out = []
    for g in grants:
        if g.source.startswith("--") or g.source == "the policy":
            continue
        above = [n for n in named if n != g.path and n.startswith(g.path.rstrip("/") + "/")]
        if g.path == "/" or above:
            why = "the whole filesystem" if g.path == "/" else f"above {', '.join(above)}"
            out.append(f"  warning: {g.path} [{g.source}] is wider than the options' paths: {why}")
    return out


def _port_lines(policy: Policy) -> list[str]:
    lines: list[str] = []
    for rs in policy.rulesets:
        ll = rs.landlock()
        for port, bits in ll.plan().ports if ll is not None else ():
            lines.append(f"    TCP port {port}: {_net_flags(AccessNet(bits))}  [{rs.name}]")
    return lines


def _grant_line(grant: Grant) -> str:
    return f"    {grant.path}: {_flags(grant.rights)}  [{grant.source}]"


def _handled(fs: AccessFs, net: AccessNet) -> str:
    every = AccessFs(0)
    for flag in AccessFs:
        every |= flag
    files = "every file right" if fs == every else _flags(fs)
    parts = ([files] if fs else []) + ([_net_flags(net)] if net else [])
    return " and ".join(parts) or "nothing on files or ports"


def _flags(rights: AccessFs) -> str:
    return "|".join(str(flag.name) for flag in AccessFs if flag & rights)


def _net_flags(rights: AccessNet) -> str:
    return "|".join(str(flag.name) for flag in AccessNet if flag & rights)

"""The last step of ``isolates run``: confine this process from plain data and exec.

Both ways in end here: a run that built its policy (run.py) and one that found it compiled
in the cache (run_cache.py). Lean on purpose, as an isolate's own start: the cached path
imports this module, the raw sandbox modules and nothing else (no argparse, dataclasses,
enum or typing), which is what makes ``isolates run -- CMD`` start in a few ms over the
interpreter's own start.

A ``Ready`` is what the exec needs, as plain data (a tuple, so that ``marshal`` stores it):
``(path, bpf, start, landlock, preload, capabilities, warnings, pid_slots, report)``: the
program's absolute path; the seccomp program; run's own Landlock domain fitted to this
kernel, or None; the policy's; the libraries to load before confining; the capabilities
kept across the exec; the warnings to print first (a Landlock domain the kernel enforces
only in part); the instructions of the program that compare with this process's pid
(SELF_PID rules, such as pledge's "stdio" signalling itself), patched with the pid of the
process that execs (``CompiledPolicy.pid_slots``); and, when run stays as the program's
answering parent (run_report.py, the default), ``(verdict, verdict_slots, guards,
always)``: ``bpf`` then notifies errno denials and execs, ``verdict`` is the same policy
without the notifying (with its own pid slots), ``guards`` the guards alone, and
``always`` says the denials even when the program succeeds (``--report``); else None.

Whether run execs in place or first forks to stay as the program's answering parent
(the default: the Ready says so) is run_report.py's ``run_ready``.

Safety argument (``exec_ready``: apply, then exec), as run.py's ``execute``:

- Nothing is applied before every check a user's mistake can fail has passed (run.py
  builds and compiles first; the cache validates its entry first). Once confining has
  begun, any failure ends the process (exit 126), never a program running half-confined.
- run's own domain, then the policy's, then seccomp (last, so Landlock's own syscalls
  stay allowed), all on every thread; NO_NEW_PRIVS, set with the filter, holds across
  the exec. Capabilities are dropped and locked by ``confine`` before any of it.
- ``os.execve`` replaces this image; the filter and the domains survive it. If the exec
  fails its error is reported under the policy in force and the process exits.
- SIGPIPE and SIGXFSZ get their default action back first: Python ignores them, and an
  ignored signal stays ignored across execve.
"""

from __future__ import annotations

# signal's C core, as the interpreter itself uses it: the module ``signal`` imports enum
# for its names, a quarter of this start (typeshed has no stub for it).
import _signal  # type: ignore[import-not-found]
import os
import sys

TYPE_CHECKING = False  # not typing's: this module is on the cached start's path
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import NoReturn, TypeAlias

    Report: TypeAlias = tuple[bytes, tuple[int, ...], bytes, bool]
    Ready: TypeAlias = tuple[
        str, bytes, "tuple[object, ...] | None", "tuple[object, ...]", tuple[str, ...],
        tuple[int, ...], tuple[str, ...], tuple[int, ...], "Report | None",
    ]  # fmt: skip


def which(command: str, path: str) -> str | None:
    """The absolute path of the file ``command`` names, searched in ``path`` as execvp
    would (``shutil.which``'s rules: a name with a slash is taken as it is); else None."""
    if os.path.dirname(command):
        return os.path.abspath(command) if _executable(command) else None
    seen: set[str] = set()
    for directory in path.split(os.pathsep):
        if directory in seen:
            continue
        seen.add(directory)
        candidate = os.path.join(directory, command)
        if _executable(candidate):
            return os.path.abspath(candidate)
    return None


def _executable(path: str) -> bool:
    return os.path.exists(path) and os.access(path, os.X_OK) and not os.path.isdir(path)


def environment(
    items: Sequence[str], clear: bool, tmp_dir: str | None, base: Mapping[str, str]
) -> dict[str, str]:
    """The program's environment: ``base`` (none with --clear-env), TMPDIR for --tmp, then
    each --env item (NAME=VALUE sets; NAME keeps ``base``'s value). The items are checked
    by run.py before anything is cached."""
    env = {} if clear else dict(base)
    if tmp_dir is not None:
        env["TMPDIR"] = tmp_dir
    for item in items:
        name, sep, value = item.partition("=")
        if sep:
            env[name] = value
        elif name in base:
            env[name] = base[name]
    return env


def exec_ready(
    ready: Ready,
    argv: list[str],
    env: dict[str, str],
    *,
    listener: bool = False,
    fallback: bytes | None = None,
) -> int:
    """Confine this process by ``ready`` and exec the program. Returns only on failure:
    the exit status, after saying why (126: it could not be confined or executed)."""
    from isolates.sandbox import SandboxError

    try:
        exec_confined(ready, argv, env, listener=listener, fallback=fallback)
    except SandboxError as exc:
        return fail(f"cannot confine {argv[0]}: {exc}", 126)
    except OSError as exc:  # execve failed: its message obeys the policy now in force
        return fail(f"cannot execute {ready[0]}: {exc.strerror}", 126)


def exec_confined(
    ready: Ready,
    argv: list[str],
    env: dict[str, str],
    *,
    listener: bool = False,
    fallback: bytes | None = None,
) -> NoReturn:
    """Confine and exec; returns only by raising (SandboxError: it could not be confined;
    OSError: the exec failed). ``listener``: the filter gets a USER_NOTIF listener (a
    run that keeps a parent takes it while the exec is parked on it); ``fallback``: the
    program loaded instead when a listener exists already above us (under trace)."""
    from isolates.sandbox.lowlevel import confine, enforce_landlock, program_for_pid

    path, bpf, start, landlock, preload, capabilities, warnings, pid_slots, _ = ready
    bpf = program_for_pid(bpf, pid_slots, os.getpid())
    for warning in warnings:  # before the policy, which may deny writing them
        print(f"isolates run: warning: {warning}", file=sys.stderr)
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):  # as subprocess: not ignored after exec
        _signal.signal(sig, _signal.SIG_DFL)
    if start is not None:
        enforce_landlock(start, all_threads=True)  # type: ignore[arg-type]
    confine(
        bpf,
        landlock,  # type: ignore[arg-type]
        preload=preload,
        all_threads=True,
        capabilities=capabilities,
        for_exec=True,
        listener=listener,
        fallback=fallback,
    )
    os.execve(path, argv, env)


def fail(message: str, status: int) -> int:
    print(f"isolates run: {' '.join(message.split())}", file=sys.stderr)
    return status

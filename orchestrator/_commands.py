"""Commands confined like ``subprocess``'s: ``run(args, policy=...)`` and ``Popen``.

    from isolates.orchestrator import run
    done = run(["sqlite3", db, sql], policy=Policy.load("sqlite.toml"), capture_output=True)

The signatures and results are ``subprocess.run``'s and ``subprocess.Popen``'s, with
``policy=`` (a Policy; default: only what every policy denies, as ``isolates run``
without options), ``limits=`` (a ``Limits``), ``capabilities=`` (the few kept) and
``report_denials=``: as ``isolates run``, the calls the policy denied are written to the
child's stderr when the program fails (None, the default), always (True, ``--report``)
or never (False, ``--no-report``: the program is exec'd in place). The child is
``isolates run`` itself: a fresh ``python -I`` that reads the policy (as a policy file,
through a memfd: nothing on disk), adds what the program needs to start, confines itself
and execs the program, so the program's process is confined exactly as ``isolates run
--profile`` confines it (docs/cli.md). It costs that interpreter's start-up, about 40 ms,
over subprocess.

``returncode`` is the program's: a signal that killed it reads -N, as subprocess says
it, but with limits, where ``isolates run`` reads it 128 + N, as a shell says it.

Safety argument:

- What starts is always ``python -I -m isolates.orchestrator._cli run --profile ... --
  ARGV``: never a shell (``shell=True`` and ``executable=`` are refused), so the program
  is exec'd by ``isolates run`` and only after it confined itself (run.py's argument:
  everything decided first, nothing run half-confined).
- The policy is the caller's Policy as a policy file, which loads back to the same
  filter and plan (``to_toml``'s property test); it travels through a memfd, closed
  here once the child started, and made non-inheritable by run once read, so the
  program never holds it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from isolates.sandbox import Policy, PolicyError

from ._limits import Limits

#: The limit flags of ``isolates run``, by Limits field.
_LIMIT_FLAGS = {
    "memory": "--memory",
    "cpu_time": "--cpu-time",
    "processes": "--processes",
    "open_files": "--open-files",
    "file_size": "--file-size",
    "wall_time": "--wall-time",
}


class Popen(subprocess.Popen[Any]):
    """``subprocess.Popen(args, ...)`` whose program runs confined by ``policy``."""

    def __init__(
        self,
        args: Sequence[str | os.PathLike[str]] | str,
        *,
        policy: Policy | None = None,
        limits: Limits | None = None,
        capabilities: Iterable[str] = (),
        report_denials: bool | None = None,
        **kwargs: Any,
    ) -> None:
        argv = _argv(args, kwargs)
        profile = _profile_fd(policy)
        try:
            command = _command(profile, argv, limits, capabilities, report_denials)
            fds = (*kwargs.pop("pass_fds", ()), profile)
            super().__init__(command, pass_fds=fds, **kwargs)
        finally:
            os.close(profile)
        self.args = args  # what the caller asked to run, as subprocess keeps it


def run(
    args: Sequence[str | os.PathLike[str]] | str,
    *,
    policy: Policy | None = None,
    limits: Limits | None = None,
    capabilities: Iterable[str] = (),
    report_denials: bool | None = None,
    input: Any = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(args, ...)`` whose program runs confined by ``policy``."""
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with Popen(
        args,
        policy=policy,
        limits=limits,
        capabilities=capabilities,
        report_denials=report_denials,
        **kwargs,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except BaseException:
            proc.kill()
            raise
        code = proc.poll()
        assert code is not None
    if check and code:
        raise subprocess.CalledProcessError(code, proc.args, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(proc.args, code, stdout, stderr)


def _argv(args: Sequence[str | os.PathLike[str]] | str, kwargs: dict[str, Any]) -> list[str]:
    if kwargs.get("shell"):
        raise PolicyError("shell=True: run ['sh', '-c', command], so the shell is confined too")
    if kwargs.get("executable") is not None:
        raise PolicyError("executable=: name the program as args[0]")
    if isinstance(args, (str, bytes, os.PathLike)):
        return [os.fsdecode(args)]
    return [os.fsdecode(a) for a in args]


def _profile_fd(policy: Policy | None) -> int:
    """The policy as a policy file in a memfd, for ``isolates run --profile``."""
    if policy is not None and not isinstance(policy, Policy):
        raise PolicyError(f"policy= takes a Policy, not {policy!r}")
    text = (policy if policy is not None else Policy(default=_allow())).to_toml()
    fd = os.memfd_create("isolates-policy", os.MFD_CLOEXEC)
    os.write(fd, text.encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _allow() -> Any:
    from isolates.sandbox import Action

    return Action.ALLOW


def _command(
    profile: int,
    argv: list[str],
    limits: Limits | None,
    capabilities: Iterable[str],
    report: bool | None,
) -> list[str]:
    command = [sys.executable, "-I", "-m", "isolates.orchestrator._cli", "run"]
    command += ["--profile", f"/proc/self/fd/{profile}"]
    for name in capabilities:
        command += ["--cap-keep", name]
    if report is not None:
        command.append("--report" if report else "--no-report")
    if limits is not None:
        if not isinstance(limits, Limits):
            raise PolicyError(f"limits= takes a Limits, not {limits!r}")
        for field, flag in _LIMIT_FLAGS.items():
            value = getattr(limits, field)
            if value is not None:
                command += [flag, str(value)]
    return [*command, "--", *argv]

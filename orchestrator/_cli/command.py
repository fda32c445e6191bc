"""The program ``isolates run`` and ``isolates trace`` start: one resolver for both.

``program_argv`` takes the command line after the options (``-- CMD ARG...``) and
``resolve`` finds CMD as execvp would (``run_exec.which``, which the cached run uses
too), failing the way a shell does: 127 when nothing is
found, 126 when the file exists but is no executable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import TypeAlias

from .run_exec import which

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """Bad options: reported as one line, exit status 2."""


class CommandNotFound(Exception):
    """The command is not a file we can execute: exit status 127 (or 126)."""

    def __init__(self, message: str, status: int = 127) -> None:
        super().__init__(message)
        self.status = status


def program_argv(remainder: list[str], usage: str) -> list[str]:
    """The program's argv from what follows the options (a leading ``--`` dropped);
    UsageError showing ``usage`` when there is none."""
    argv = remainder[1:] if remainder[:1] == ["--"] else list(remainder)
    if not argv:
        raise UsageError(f"no command given: {usage}")
    return argv


def resolve(command: str, env: Mapping[str, str] | None = None) -> str:
    """The absolute path of the file ``command`` names, searched in ``env``'s $PATH (ours
    when None) as execvp would; CommandNotFound otherwise."""
    found = which(command, (os.environ if env is None else env).get("PATH", os.defpath))
    if found is not None:
        return found
    if os.sep in command and os.path.exists(command):
        raise CommandNotFound(f"{command}: not an executable file", status=126)
    raise CommandNotFound(f"{command}: command not found")

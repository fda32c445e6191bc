"""The two ways a sandbox can go wrong: a bad policy, or a kernel that cannot load it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str], *, otherwise: str = "") -> str:
    """``"; did you mean 'getpid'?"`` for the choices close to ``word``, else ``otherwise``.
    The one way isolates suggests a name, for syscalls, promises, groups, errnos..."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else otherwise


class PolicyError(ValueError):
    """A policy is invalid: an unknown syscall, a dead rule, a bad path, a bad argument.

    Raised while the policy is built, never while it is loaded, and always names the
    offending rule (and the RuleSet it came from).
    """


class SandboxError(OSError):
    """Loading a context failed: the kernel lacks a feature or refused the request.

    The message says which feature or configuration is missing and, where known, which
    kernel version or config option provides it.
    """

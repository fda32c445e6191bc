"""The two ways a sandbox can go wrong: a bad policy, or a kernel that cannot load it."""

from __future__ import annotations


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

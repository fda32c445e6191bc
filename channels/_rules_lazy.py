"""``Channel.RULES`` built on first use: the RuleSets need the policy builder, which a
process that merely uses a channel (an isolate, after confinement) never imports."""

from __future__ import annotations

from typing import Any


class rules_of:
    """A class attribute that is ``_rules.<name>``, imported when first read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        from . import _rules

        return getattr(_rules, self._name)

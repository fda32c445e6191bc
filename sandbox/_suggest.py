"""Suggesting a name: the one way isolates says "did you mean ...?", for syscalls,
promises, groups, errnos... (apart from _errors.py, which an isolate imports before it is
confined and so must not pull difflib in)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str], *, otherwise: str = "") -> str:
    """``"; did you mean 'getpid'?"`` for the choices close to ``word``, else ``otherwise``."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else otherwise

"""Lazy re-exports for a package ``__init__`` (PEP 562).

An isolate imports only the modules that load a compiled policy; importing the package
must not drag in the policy builder, libseccomp glue or the Landlock conveniences. Type
checkers see the names through the ``TYPE_CHECKING`` imports in each ``__init__``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: name -> the module defining it
    (a name mapped to ``.<name>`` is that submodule itself)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module, package)
        value = imported if module == f".{name}" else getattr(imported, name)
        namespace[name] = value  # next time, a plain global
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__

"""Lazy re-exports for a package ``__init__`` (PEP 562).

An isolate imports only the modules that load a compiled policy; importing the package
must not drag in the policy builder, libseccomp glue or the Landlock conveniences. Type
checkers see the names through the ``TYPE_CHECKING`` imports in each ``__init__``.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # imported by an isolate before it is confined: no typing there
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for module ``package``: name -> where it lives.

    ``".mod"``: the attribute of that name in ``.mod`` (a name mapped to ``.<name>`` is
    that submodule itself); ``".mod:other"``: attribute ``other`` of ``.mod``;
    ``".mod:"``: the module ``.mod`` itself. Relative to the package the module is in
    (for a package ``__init__``, the package itself)."""
    anchor = namespace.get("__package__") or package
    public = set(namespace.get("__all__", ())) or set(exports)

    def __getattr__(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = where.partition(":")
        imported = _import(module, anchor)
        if ":" in where:
            value = getattr(imported, attr) if attr else imported
        else:
            value = imported if module == f".{name}" else getattr(imported, name)
        if name in public:
            publish(value, package)
        namespace[name] = value  # next time, a plain global
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


def _import(module: str, anchor: str) -> Any:
    """``importlib.import_module(module, anchor)`` for ``.mod`` and ``.sub.mod`` names,
    without importing importlib (and warnings): an isolate's start-up pays for each."""
    name = anchor + module if module.startswith(".") else module
    __import__(name)
    return sys.modules[name]


def publish(value: object, package: str) -> None:
    """Give a public class or function its public home as ``__module__`` (as trio's
    ``fixup_module_metadata``): tracebacks, reprs and docs then say
    ``isolates.sandbox.Policy``, not ``isolates.sandbox._policy``. Pickle still finds it
    there, through the package's lazy ``__getattr__``.

    Annotations a class leaves as strings are resolved first, in the module that defines
    them: msgspec and ``typing.get_type_hints`` would otherwise look the names up in the
    public package, which does not hold the private ones.
    """
    module = getattr(value, "__module__", None)
    if not isinstance(module, str) or not module.startswith(f"{package}._"):
        return
    if isinstance(value, type):
        _resolve_own_annotations(value, module)
    if isinstance(value, type) or callable(value):
        try:
            value.__module__ = package
        except (AttributeError, TypeError):  # a builtin or slotted object: leave it
            pass


def _resolve_own_annotations(cls: type, module: str) -> None:
    own = vars(cls).get("__annotations__")  # not inspect: costly to import, in an isolate
    if not own or not any(isinstance(a, str) for a in own.values()):
        return
    globalns = vars(sys.modules[module])
    localns = dict(vars(cls))
    resolved: dict[str, Any] = {}
    for name, annotation in own.items():
        resolved[name] = annotation
        if isinstance(annotation, str):
            try:  # one at a time: a name only a type checker can read stays a string
                resolved[name] = eval(annotation, globalns, localns)
            except Exception:
                pass
    cls.__annotations__ = resolved

"""Crossing the process boundary: callables and arguments go in as pickle (parent to
isolate only); values and exceptions come back as msgspec data, never as pickle.

The parent's side: ``dump`` (the boot message's payload), ``decode_value`` and
``rebuild`` (what the isolate sent back), ``needs_msgspec``. The isolate's side is lean
and lives apart: ``lean_wire.encode_value`` and ``failures.failure_of``."""

from __future__ import annotations

import builtins
import functools
import pickle
import types
import typing
from collections.abc import Callable
from typing import Any, Final

import msgspec

from .errors import RemoteTraceback, WorkerFailed
from .wire import Failure, Stage


def dump(obj: object) -> bytes:
    """Pickle by reference where the object is importable, else by value (cloudpickle).

    Functions in ``__main__``, closures and lambdas cannot be found by name in a fresh
    interpreter, so they travel by value.
    """
    import io

    if getattr(obj, "__module__", None) != "__main__":
        buf = io.BytesIO()
        try:
            _ByReference(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        except (pickle.PicklingError, AttributeError, TypeError):
            pass
        else:
            data = buf.getvalue()
            if b"__main__" not in data:  # a reference into __main__ would not resolve there
                return data
    buf = io.BytesIO()
    _by_value_pickler(buf).dump(obj)
    return buf.getvalue()


def _into_isolate(obj: Any) -> Any:
    """An @isolate'd function goes into an isolate as the function it wraps (it runs
    there under that isolate's policy): ``__reduce_for_isolate__`` (_decorator.py)."""
    into = getattr(type(obj), "__reduce_for_isolate__", None)
    return NotImplemented if into is None else into(obj)


class _ByReference(pickle.Pickler):
    # Called only for objects pickle does not handle natively (not for ints, str,
    # bytes, lists, dicts...): plain data costs nothing more.
    def reducer_override(self, obj: Any) -> Any:
        return _into_isolate(obj)


def _by_value_pickler(buf: Any) -> Any:
    import cloudpickle

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            reduced = _into_isolate(obj)
            if reduced is not NotImplemented:
                return reduced
            # cloudpickle rebuilds a class without its class keywords, so a Struct from
            # __main__ would lose forbid_unknown_fields, tag, frozen...: rebuild it with
            # msgspec.defstruct instead.
            if (
                isinstance(obj, type)
                and issubclass(obj, msgspec.Struct)
                and (obj.__module__ == "__main__")
            ):
                return _rebuild_struct, _struct_recipe(obj)
            return super().reducer_override(obj)

    return Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)


_STRUCT_OPTIONS = (
    "tag",
    "tag_field",
    "forbid_unknown_fields",
    "frozen",
    "eq",
    "order",
    "omit_defaults",
    "array_like",
    "repr_omit_defaults",
    "gc",
    "weakref",
    "dict",
    "cache_hash",
)


def _struct_recipe(cls: type[msgspec.Struct]) -> tuple[Any, ...]:
    config = cls.__struct_config__
    options = {name: getattr(config, name) for name in _STRUCT_OPTIONS}
    fields: list[tuple[Any, ...]] = []
    for f in msgspec.structs.fields(cls):
        if f.default is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, f.type))
    rename = {f.name: f.encode_name for f in msgspec.structs.fields(cls) if f.name != f.encode_name}
    methods = {k: v for k, v in vars(cls).items() if isinstance(v, _METHOD_TYPES)}
    bases = tuple(b for b in cls.__bases__ if b is not msgspec.Struct)
    return (cls.__name__, fields, bases, methods, rename or None, options)


_METHOD_TYPES = (types.FunctionType, property, staticmethod, classmethod)


def _rebuild_struct(
    name: str,
    fields: list[Any],
    bases: tuple[type, ...],
    methods: dict[str, Any],
    rename: dict[str, str] | None,
    options: dict[str, Any],
) -> type[msgspec.Struct]:
    return msgspec.defstruct(
        name,
        fields,
        bases=bases or None,
        module="__main__",
        namespace=methods,
        rename=rename,
        **options,
    )


def decode_value(data: bytes, fn: Callable[..., Any], name: str, shape: str | None = None) -> Any:
    """Decode a return value, typed by ``fn``'s return annotation when it has one; else
    a set, frozenset or tuple the function returned (``shape``) comes back as one."""
    rtype = return_type(fn)
    try:
        value = msgspec.msgpack.decode(data, type=rtype)
        return _reshaped(value, shape) if rtype is Any else value
    except msgspec.ValidationError as exc:
        why = f"returned a value that is not a {rtype!r}: {_short(exc)}"
    except msgspec.DecodeError as exc:
        why = f"returned undecodable data: {_short(exc)}"
    except RecursionError:
        why = "returned data nested too deeply to decode"
    except Exception as exc:  # the isolate's bytes, whatever they make decoding raise
        why = f"returned data that failed to decode: {type(exc).__name__}: {_short(exc)}"
    raise WorkerFailed(name, why)


def _reshaped(value: Any, shape: str | None) -> Any:
    """The list msgpack made of a top-level set, frozenset or tuple, as that again (the
    elements of a set frozen: a tuple inside came back a list)."""
    if shape is None or not isinstance(value, list):
        return value
    if shape == "tuple":
        return tuple(value)
    kind = {"set": set, "frozenset": frozenset}.get(shape)
    if kind is None:
        return value
    try:
        return kind(_frozen(item) for item in value)
    except TypeError:  # an element that is no longer hashable (a dict): keep the list
        return value


def _frozen(item: Any) -> Any:
    return tuple(_frozen(i) for i in item) if isinstance(item, list) else item


def _short(exc: BaseException, limit: int = 500) -> str:
    """An error's text, cut (a path into deeply nested data can run long)."""
    text = str(exc)
    return text if len(text) <= limit else f"{text[:limit]}..."


def return_type(fn: Callable[..., Any]) -> Any:
    try:
        hint = typing.get_type_hints(fn).get("return", Any)
    except Exception:  # unresolvable annotations: fall back to plain data
        return Any
    if hint is type(None):
        return None
    try:
        msgspec.msgpack.Decoder(hint)
    except TypeError:  # a type msgspec cannot decode into
        return Any
    return hint


def rebuild(failure: Failure, name: str) -> BaseException:
    """The exception to raise in the parent: the same builtin class, else WorkerFailed.

    Only classes from the builtins module are instantiated, with plain-data arguments,
    so a compromised isolate cannot make the parent run code.
    """
    cause = RemoteTraceback(failure.traceback)
    exc = _same_builtin(failure) or WorkerFailed(
        name,
        f"failed {'while booting' if failure.stage is Stage.BOOT else 'with'} "
        f"{failure.kind}: {failure.message}",
        remote_type=failure.kind,
        remote_traceback=failure.traceback,
    )
    exc.__cause__ = cause
    return exc


def _same_builtin(failure: Failure) -> Exception | None:
    # Exception subclasses only: a peer must not make us raise SystemExit or
    # KeyboardInterrupt, and never anything outside the builtins module.
    cls = getattr(builtins, failure.kind, None) if failure.builtin else None
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return None
    # Arguments nested deeper than any builtin exception's would make str(exc) overflow
    # the stack wherever the caller prints it: keep the message only.
    plain = failure.args if _shallow(failure.args, _MAX_ARG_DEPTH) else [failure.message]
    for args in (plain, [failure.message]):
        try:
            return cls(*args)
        except Exception:
            continue
    return None


_MAX_ARG_DEPTH = 16


def _shallow(value: object, limit: int) -> bool:
    """Whether lists and dicts in ``value`` nest at most ``limit`` deep (no recursion)."""
    level: list[object] = [value]
    for _ in range(limit + 1):
        inner: list[object] = []
        for item in level:
            if isinstance(item, list | tuple):
                inner.extend(item)
            elif isinstance(item, dict):
                inner.extend(item.keys())
                inner.extend(item.values())
        if not inner:
            return True
        level = inner
    return False


_PLAIN: Final = (int, float, str, bytes, bytearray, bool, list, tuple, dict, set, frozenset)


@functools.lru_cache(maxsize=256)
def needs_msgspec(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s return annotation names a type only msgspec encodes (a Struct, a
    dataclass, an enum...): its isolate then loads msgspec before it is confined.
    Remembered per function: every call's boot message asks, and the type hints cost
    0.05 ms to work out."""
    return not _plain_hint(return_type(fn))


def _plain_hint(hint: Any) -> bool:
    if hint is Any or hint is None or hint is type(None) or hint in _PLAIN:
        return True
    origin = typing.get_origin(hint)
    if origin is None or not (
        origin in _PLAIN or origin is typing.Union or origin is types.UnionType
    ):
        return False
    return all(_plain_hint(arg) for arg in typing.get_args(hint) if arg is not Ellipsis)

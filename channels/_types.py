"""What a channel's message type may be, and how a sender checks a message against it."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

import msgspec
import msgspec.inspect as mi

from ._errors import LocalChannelError

#: Types whose decoders silently drop fields they do not know.
_LENIENT = (mi.DataclassType, mi.TypedDictType)


def describe(type_: Any) -> str:
    """A short name for a message type, for error messages: ``Ping | Pong``, ``bytes``."""
    if get_origin(type_) in (Union, types.UnionType):
        return " | ".join(describe(arg) for arg in get_args(type_))
    if type_ is None or type_ is type(None):
        return "None"
    if isinstance(type_, type) and not get_args(type_):
        return _name(type_)
    return repr(type_).replace("typing.", "")


def _name(cls: type) -> str:
    """``Outer.Inner`` without the ``f.<locals>.`` of a class defined in a function."""
    return cls.__qualname__.rpartition("<locals>.")[2]


def check_message_type(type_: Any, *, name: str) -> None:
    """Refuse a type msgspec cannot decode, or a dataclass or TypedDict (their decoders
    drop unknown fields). Structs that accept unknown fields are fine: the codec checks
    them against ``strict_twin`` first."""
    try:
        info = mi.type_info(type_)
    except Exception as exc:  # TypeError, or NameError for an unresolvable annotation
        raise LocalChannelError(
            f"channel {name!r}: msgspec cannot carry {type_!r} ({exc}); use a msgspec.Struct, "
            "a tagged union of Structs, or plain types such as bytes or dict[str, int]"
        ) from None
    for node in _walk(info):
        if isinstance(node, _LENIENT):
            raise LocalChannelError(
                f"channel {name!r}: {_name(node.cls)} would accept unknown fields; use a "
                "msgspec.Struct with forbid_unknown_fields=True instead"
            )


def _walk(root: mi.Type) -> list[mi.Type]:
    """Every type node reachable from ``root`` (recursive Structs are visited once)."""
    seen: set[int] = set()
    out: list[mi.Type] = []
    stack: list[object] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):
            stack.extend(node)
        elif isinstance(node, mi.Field):
            stack.append(node.type)
        elif isinstance(node, mi.Type) and id(node) not in seen:
            seen.add(id(node))
            out.append(node)
            stack.extend(getattr(node, f) for f in node.__struct_fields__)
    return out


def strict_twin(type_: Any) -> Any | None:
    """A type that decodes exactly what ``type_`` does but refuses unknown fields (its
    Structs rebuilt with ``forbid_unknown_fields=True``), or None when ``type_`` refuses
    them already. A channel decodes a peer's bytes with it first, so an unknown field is
    the peer's error whatever the user's Structs say."""
    twin = _twin(type_, {})
    return None if twin is type_ else twin


def _twin(type_: Any, memo: dict[type, Any]) -> Any:
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        return _struct_twin(type_, memo)
    args = get_args(type_)
    if not args:
        return type_
    twins = tuple(_twin(a, memo) for a in args)
    if all(t is a for t, a in zip(twins, args, strict=True)):
        return type_
    origin = get_origin(type_)
    return Union[twins] if origin in (Union, types.UnionType) else origin[twins]  # noqa: UP007


def _struct_twin(cls: type[msgspec.Struct], memo: dict[type, Any]) -> Any:
    if cls in memo:
        return memo[cls]
    memo[cls] = cls  # a recursive reference keeps the original: checked one level down
    fields = msgspec.structs.fields(cls)
    twins = [_twin(f.type, memo) for f in fields]
    config = cls.__struct_config__
    if config.forbid_unknown_fields and all(
        t is f.type for t, f in zip(twins, fields, strict=True)
    ):
        return cls
    memo[cls] = msgspec.defstruct(
        cls.__name__,
        # Every field optional in the twin: whether one is missing, the real decoder says.
        [(f.name, t, None) for f, t in zip(fields, twins, strict=True)],
        forbid_unknown_fields=True,
        tag=config.tag,
        tag_field=config.tag_field,
        array_like=config.array_like,
        rename={f.name: f.encode_name for f in fields},
    )
    return memo[cls]


def struct_classes(type_: Any) -> tuple[type, ...] | None:
    """The classes to ``isinstance``-check a message against, for a Struct type or a union
    of Structs; None when only decoding the encoded bytes can tell (``dict[str, int]``)."""
    info = mi.type_info(type_)
    members = info.types if isinstance(info, mi.UnionType) else (info,)
    classes = tuple(m.cls for m in members if isinstance(m, mi.StructType))
    return classes if len(classes) == len(members) else None

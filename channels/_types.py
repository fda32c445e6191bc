"""What a channel's message type may be, and how a sender checks a message against it."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

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
    """Refuse a type msgspec cannot decode, or one whose decoder accepts unknown fields."""
    try:
        info = mi.type_info(type_)
    except Exception as exc:  # TypeError, or NameError for an unresolvable annotation
        raise LocalChannelError(
            f"channel {name!r}: msgspec cannot carry {type_!r} ({exc}); use a msgspec.Struct, "
            "a tagged union of Structs, or plain types such as bytes or dict[str, int]"
        ) from None
    for node in _walk(info):
        if isinstance(node, mi.StructType) and not node.forbid_unknown_fields:
            raise LocalChannelError(
                f"channel {name!r}: {_name(node.cls)} accepts unknown fields; a channel "
                f"only carries what it expects. Declare it as\n    class "
                f"{node.cls.__name__}(msgspec.Struct, forbid_unknown_fields=True): ..."
            )
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


def struct_classes(type_: Any) -> tuple[type, ...] | None:
    """The classes to ``isinstance``-check a message against, for a Struct type or a union
    of Structs; None when only decoding the encoded bytes can tell (``dict[str, int]``)."""
    info = mi.type_info(type_)
    members = info.types if isinstance(info, mi.UnionType) else (info,)
    classes = tuple(m.cls for m in members if isinstance(m, mi.StructType))
    return classes if len(classes) == len(members) else None

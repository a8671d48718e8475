"""msgpack encoding of events: plain maps with a schema version and a type tag.

Unknown keys are ignored on decode (a newer node may send more); a missing required key or a
wrong type raises `DecodeError` naming the field, so a receiver can count and drop the frame.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final

import msgpack
from msgspec.structs import fields

from shared.events import MAX_TOKENS, Event, LimitEvent, ProfileEvent, Tokens, UsageEvent

SCHEMA_VERSION: Final = 1
_TAGS: Final[dict[type[Any], str]] = {UsageEvent: "u", LimitEvent: "l", ProfileEvent: "p"}
_TYPES: Final = {tag: cls for cls, tag in _TAGS.items()}
_TOKEN_FIELDS: Final = Tokens.__struct_fields__
_INT: Final = {int}


class DecodeError(ValueError):
    """A frame or record that is not a valid event; the message names what was wrong."""


# Field names and whether each is required, per event type, computed once: looking the fields
# up per event was half the cost of packing one (the hub decodes every event it receives).
_FIELDS: Final = {cls: tuple((f.name, f.required) for f in fields(cls)) for cls in _TAGS}

Convert = Callable[[str, Any], Any]


def _tokens(name: str, value: Any) -> Tokens:
    if not isinstance(value, list) or len(value) != len(_TOKEN_FIELDS):
        raise DecodeError(f"tokens must be a list of {len(_TOKEN_FIELDS)} integers")
    if set(map(type, value)) != _INT or min(value) < 0:  # checked in C: no loop per count
        raise DecodeError("tokens must be non-negative integers")
    if max(value) > MAX_TOKENS:
        raise DecodeError(f"a token count above {MAX_TOKENS} (no call has that many)")
    return Tokens(*value)


def _enum(kind: type[StrEnum]) -> Convert:
    members: dict[Any, StrEnum] = {m.value: m for m in kind}

    def convert(name: str, value: Any) -> StrEnum:
        try:
            return members[value]  # a dict lookup: calling the enum class costs 1 µs
        except (KeyError, TypeError):  # TypeError: an unhashable value
            raise DecodeError(
                f"bad value for {name!r}: {value!r} is not a valid {kind.__name__}"
            ) from None

    return convert


def _plain(kind: type[Any], what: str, optional: bool) -> Convert:
    """A str / int / bool field: exactly that type (bool is not an int here), or None if
    `optional`, so a wrong type is refused here rather than break the ledger later."""

    def convert(name: str, value: Any) -> Any:
        if type(value) is kind or (optional and value is None):
            return value
        raise DecodeError(f"{name} must be {what}")

    return convert


def _number(optional: bool) -> Convert:
    def convert(name: str, value: Any) -> float | None:
        if type(value) is float or type(value) is int:
            return float(value)
        if optional and value is None:
            return None
        raise DecodeError(f"{name} must be a number")

    return convert


def _base(hint: Any) -> tuple[Any, bool]:
    """(T, optional) for a field annotated T or T | None."""
    if type(hint) is types.UnionType and type(None) in hint.__args__:
        return next(a for a in hint.__args__ if a is not type(None)), True
    return hint, False


def _converter(hint: Any) -> Convert:
    """How a field of this annotated type is checked and converted on decode."""
    base, optional = _base(hint)
    if base is Tokens:
        return _tokens
    if isinstance(base, type) and issubclass(base, StrEnum):
        return _enum(base)
    if base is float:
        return _number(optional)
    words = {str: "a string", int: "an integer", bool: "true or false"}
    if base in words:
        return _plain(base, words[base], optional)
    raise TypeError(f"no decoder for a field of type {hint!r}")  # a new field type: add one


def _exact(hint: Any) -> type[Any] | None:
    """The decoded type a field's value is taken as is when it has (None: always convert)."""
    base = _base(hint)[0]
    return base if base in (str, int, bool, float) else None


# Per event type: its required fields (in declaration order), the fields whose value is kept as
# decoded when it has their exact type (most values of most events: no converter call), and a
# converter per field for everything else (it checks the type, so a node cannot slip a string
# revision or a list for a project past the codec into the store or the ledger).
_DECODE: Final = {
    cls: (
        tuple(name for name, required in _FIELDS[cls] if required),
        {name: t for name, hint in hints.items() if (t := _exact(hint)) is not None},
        {name: _converter(hint) for name, hint in hints.items()},
    )
    for cls, hints in ((cls, typing.get_type_hints(cls)) for cls in _TAGS)
}


def to_map(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"v": SCHEMA_VERSION, "t": _TAGS[type(event)]}
    for name, _required in _FIELDS[type(event)]:
        value = getattr(event, name)
        if isinstance(value, Tokens):
            value = [getattr(value, name) for name in _TOKEN_FIELDS]
        elif isinstance(value, StrEnum):
            value = value.value
        if value is None or value is False:
            continue  # absent means default: keeps frames small
        out[name] = value
    return out


def from_map(data: object) -> Event:
    if not isinstance(data, dict):
        raise DecodeError(f"event must be a map, got {type(data).__name__}")
    version = data.get("v")
    if version != SCHEMA_VERSION:
        raise DecodeError(f"unsupported event schema version {version!r}")
    cls = _TYPES.get(data.get("t"))  # type: ignore[arg-type]
    if cls is None:
        raise DecodeError(f"unknown event type tag {data.get('t')!r}")
    required, exact, converters = _DECODE[cls]
    for name in required:
        if name not in data:
            raise DecodeError(f"{cls.__name__} is missing required field {name!r}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if type(value) is exact.get(name):
            kwargs[name] = value
        elif (convert := converters.get(name)) is not None:
            kwargs[name] = convert(name, value)
        # else "v", "t", or a field a newer node added: ignored
    event: Event = cls(**kwargs)
    return event


def pack(event: Event) -> bytes:
    data: bytes = msgpack.packb(to_map(event), use_bin_type=True)
    return data


def unpack(blob: bytes) -> Event:
    try:
        data = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"not a msgpack event: {exc}") from exc
    return from_map(data)


def pack_batch(events: list[Event]) -> bytes:
    data: bytes = msgpack.packb([to_map(e) for e in events], use_bin_type=True)
    return data


def unpack_batch(blob: bytes) -> list[Event]:
    try:
        items = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"not a msgpack batch: {exc}") from exc
    if not isinstance(items, list):
        raise DecodeError("a batch must be a list of events")
    return [from_map(item) for item in items]

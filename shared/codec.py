"""msgpack encoding of events: plain maps with a schema version and a type tag.

Unknown keys are ignored on decode (a newer node may send more); a missing required key or a
wrong type raises `DecodeError` naming the field, so a receiver can count and drop the frame.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Any, Final

import msgpack

from shared.events import (
    Agent,
    Event,
    LimitEvent,
    LimitKind,
    LimitWindow,
    ProfileEvent,
    ProfileState,
    Role,
    Tokens,
    UsageEvent,
)

SCHEMA_VERSION: Final = 1
_TAGS: Final[dict[type[Any], str]] = {UsageEvent: "u", LimitEvent: "l", ProfileEvent: "p"}
_TYPES: Final = {tag: cls for cls, tag in _TAGS.items()}
_ENUMS: Final[dict[str, type[StrEnum]]] = {
    "agent": Agent,
    "role": Role,
    "kind": LimitKind,
    "window": LimitWindow,
    "state": ProfileState,
}
_TOKEN_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Tokens))
_NUMBERS: Final = frozenset({"ts", "until", "resets_at", "used_percent"})


class DecodeError(ValueError):
    """A frame or record that is not a valid event; the message names what was wrong."""


# Field names and defaults per event type, computed once: `dataclasses.fields()` per event was
# half the cost of packing one (the hub decodes every event it receives).
_FIELDS: Final = {
    cls: tuple((f.name, f.default is dataclasses.MISSING) for f in dataclasses.fields(cls))
    for cls in _TAGS
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
    kwargs: dict[str, Any] = {}
    for name, required in _FIELDS[cls]:
        if name not in data:
            if required:
                raise DecodeError(f"{cls.__name__} is missing required field {name!r}")
            continue
        value = data[name]
        try:
            if name == "tokens":
                if not isinstance(value, list) or len(value) != len(_TOKEN_FIELDS):
                    raise DecodeError(f"tokens must be a list of {len(_TOKEN_FIELDS)} integers")
                if not all(isinstance(n, int) and n >= 0 for n in value):
                    raise DecodeError("tokens must be non-negative integers")
                value = Tokens(*value)
            elif name in _ENUMS:
                value = _ENUMS[name](value)
            elif name in _NUMBERS:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise DecodeError(f"{name} must be a number")
                value = float(value)
        except ValueError as exc:
            if isinstance(exc, DecodeError):
                raise
            raise DecodeError(f"bad value for {name!r}: {exc}") from exc
        kwargs[name] = value
    for name in ("event_id", "session_id", "model", "profile", "machine"):
        if name in kwargs and kwargs[name] is not None and not isinstance(kwargs[name], str):
            raise DecodeError(f"{name} must be a string")
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

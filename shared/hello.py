"""What a node says about itself with every batch: its profiles, its agent processes, its reader.

Part of the wire contract (the node builds it, the hub reads it), carried as a plain map inside
the batch body. Decoding is strict about types and lenient about unknown keys, like events.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from shared.codec import DecodeError
from shared.config import Billing
from shared.events import Agent


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """One auth profile as its node announces it."""

    name: str
    agent: Agent
    billing: Billing = Billing.API
    account: str | None = None
    plan: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A running agent process, as the node's inventory saw it."""

    pid: int
    create_time: float  # with pid, what a command names: a recycled pid never matches
    agent: Agent
    state: str  # running | paused | zombie
    profile: str | None = None
    session_id: str | None = None
    cwd: str | None = None
    cpu_percent: float = 0.0
    rss: int = 0
    children: int = 0


@dataclass(frozen=True, slots=True)
class ReaderStatus:
    files: int = 0  # log files followed
    events: int = 0  # committed since the node started
    problems: int = 0  # unreadable lines and files
    pending: int = 0  # events waiting in the outbox for the hub
    blocked: bool = False  # the outbox is full: reading waits
    last_problem: str | None = None
    stalled: str | None = None  # why the node waits and retries (a full disk), None: it does not
    status_file: str | None = None  # why the profile heartbeat file is not (wholly) used


@dataclass(frozen=True, slots=True)
class NodeHello:
    """A node's account of itself. `node` is informative: the hub files everything under the
    authenticated node name."""

    node: str
    version: str
    boot_time: float  # epoch seconds the daemon started
    os: str
    cpu_count: int
    profiles: tuple[ProfileInfo, ...] = ()
    processes: tuple[ProcessInfo, ...] = ()
    reader: ReaderStatus = ReaderStatus()


def hello_to_map(hello: NodeHello) -> dict[str, Any]:
    out = dataclasses.asdict(hello)
    out["profiles"] = [_plain(dataclasses.asdict(p)) for p in hello.profiles]
    out["processes"] = [process_to_map(p) for p in hello.processes]
    return out


def process_to_map(process: ProcessInfo) -> dict[str, Any]:
    return _plain(dataclasses.asdict(process))


def hello_from_map(data: object) -> NodeHello:
    """Raises DecodeError naming the field that is wrong."""
    if not isinstance(data, dict):
        raise DecodeError("hello is not a map")
    profiles = tuple(
        _build(ProfileInfo, p, f"hello.profiles[{i}]")
        for i, p in enumerate(_list(data, "profiles"))
    )
    processes = tuple(
        _build(ProcessInfo, p, f"hello.processes[{i}]")
        for i, p in enumerate(_list(data, "processes"))
    )
    reader_map = data.get("reader") or {}
    reader = _build(ReaderStatus, reader_map, "hello.reader")
    base = {k: v for k, v in data.items() if k not in ("profiles", "processes", "reader")}
    hello = _build(NodeHello, base, "hello")
    return dataclasses.replace(hello, profiles=profiles, processes=processes, reader=reader)


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, (Agent, Billing)) else v) for k, v in data.items()}


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise DecodeError(f"hello.{key} is not a list")
    return value


T = TypeVar("T")

_ENUMS: dict[str, type[Agent] | type[Billing]] = {"agent": Agent, "billing": Billing}
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}


# Counts, pids, bytes and times of a real node fit well within 2^53; a larger one (2^63 made
# the hub's store raise OverflowError) or a NaN is a broken or hostile hello.
_MAX_INT: Final = 1 << 53


def _build(cls: type[T], data: object, where: str) -> T:
    if not isinstance(data, dict):
        raise DecodeError(f"{where} is not a map")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data or data[f.name] is None:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise DecodeError(f"{where} is missing {f.name!r}")
            continue
        value = data[f.name]
        if f.name in _ENUMS:
            try:
                value = _ENUMS[f.name](value)
            except ValueError:
                raise DecodeError(f"{where}.{f.name}: unknown value {value!r}") from None
        elif f.name not in ("profiles", "processes", "reader"):
            kind = str(f.type).replace(" | None", "")
            allowed = _TYPES.get(kind)
            if allowed is not None and (
                not isinstance(value, allowed) or (kind != "bool" and isinstance(value, bool))
            ):
                raise DecodeError(f"{where}.{f.name} must be {kind}, got {type(value).__name__}")
            if kind == "int" and not 0 <= value <= _MAX_INT:
                raise DecodeError(f"{where}.{f.name} must be 0..{_MAX_INT}, not {value}")
            if kind == "float" and not math.isfinite(value):
                raise DecodeError(f"{where}.{f.name} must be a finite number, not {value}")
        kwargs[f.name] = value
    return cls(**kwargs)

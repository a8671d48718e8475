"""The JSON shapes a dashboard's mirror of a hub is fed with (`/api/v1/mirror/...`), both ways.

The hub writes its objects (`*_to_map`) and `hub.remote` reads them back (`*_from_map`) into
the very types the embedded service hands the dashboard, so that one view model serves both.
Money is an exact decimal string. A reader raises `MirrorDataError` naming the field that is
wrong: the hub's answers are input like any other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, tzinfo
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub._runrate import RunRate, Scope
from hub._totals import MONEY, Totals
from hub.ledger import Dimension, Period, SessionFigures
from hub.model import NodeRecord, NodeState, ProfileRecord
from hub.profile_board import ProfileStanding, WindowReading
from shared.codec import DecodeError
from shared.config import Billing
from shared.events import Agent, LimitWindow, ProfileState
from shared.hello import NodeHello, ProcessInfo, hello_from_map, hello_to_map

Json = dict[str, Any]
_E = TypeVar("_E")
_MONEY_FIELDS: Final = frozenset(
    f.name for f in dataclasses.fields(Totals) if f.type in ("Decimal", Decimal)
)
_COUNT_FIELDS: Final = tuple(
    f.name for f in dataclasses.fields(Totals) if f.name not in _MONEY_FIELDS
)


class MirrorDataError(ValueError):
    """An answer of the hub that does not have the mirror's shape."""


# -- the hub's side ----------------------------------------------------------------------------


def totals_to_map(t: Totals) -> Json:
    return {
        f: format(getattr(t, f), "f") if f in _MONEY_FIELDS else getattr(t, f)
        for f in (*_COUNT_FIELDS, *_MONEY_FIELDS)
    }


def session_to_map(row: SessionFigures) -> Json:
    out: Json = {}
    for f in dataclasses.fields(row):
        value = getattr(row, f.name)
        if isinstance(value, Totals):
            value = totals_to_map(value)
        elif isinstance(value, Agent):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):  # `recent`: JSON keys would be strings
            value = [[second, tokens] for second, tokens in value.items()]
        out[f.name] = value
    return out


def standing_to_map(s: ProfileStanding) -> Json:
    return {
        "state": s.state.value,
        "since": s.since,
        "until": s.until,
        "switched_to": s.switched_to,
        "reason": s.reason,
        "last_call": s.last_call,
        "windows": {w.value: [r.used_percent, r.resets_at, r.ts] for w, r in s.windows.items()},
    }


def profile_to_map(record: ProfileRecord, standing: ProfileStanding) -> Json:
    return {
        "node": record.node,
        "name": record.name,
        "agent": record.agent.value,
        "billing": record.billing.value,
        "account": record.account,
        "plan": record.plan,
        "first_seen": record.first_seen,
        "last_announced": record.last_announced,
        "standing": standing_to_map(standing),
    }


def node_to_map(
    record: NodeRecord,
    state: NodeState,
    hello: NodeHello | None,
    paused: list[tuple[ProcessInfo, tuple[float, str]]],
) -> Json:
    """A node as the dashboard needs it; `paused`: its paused processes with (when, who)."""
    return {
        **dataclasses.asdict(record),
        "state": state.value,
        "hello": None if hello is None else hello_to_map(hello),
        "paused_by": [[p.pid, p.create_time, when, who] for p, (when, who) in paused],
    }


# -- the dashboard's side ----------------------------------------------------------------------


def totals_from_map(data: object, where: str = "totals") -> Totals:
    m = _map(data, where)
    out = Totals()
    for name in _COUNT_FIELDS:
        setattr(out, name, _int(m.get(name, 0), f"{where}.{name}"))
    for name in _MONEY_FIELDS:
        setattr(out, name, _money(m.get(name, "0"), f"{where}.{name}"))
    return out


def session_from_map(data: object) -> SessionFigures:
    m = _map(data, "session")
    key = _str(m.get("key"), "session.key")
    where = f"session {key!r}"
    rank = m.get("model_rank") or [False, 0.0]
    if not isinstance(rank, list) or len(rank) != 2:
        raise MirrorDataError(f"{where}: model_rank is not a pair")
    recent = m.get("recent") or []
    if not isinstance(recent, list):
        raise MirrorDataError(f"{where}: recent is not a list")
    return SessionFigures(
        key=key,
        machine=_str(m.get("machine"), f"{where}.machine"),
        agent=_enum(Agent, m.get("agent"), f"{where}.agent"),
        profile=_opt_str(m.get("profile"), f"{where}.profile"),
        account=_opt_str(m.get("account"), f"{where}.account"),
        project=_opt_str(m.get("project"), f"{where}.project"),
        git_branch=_opt_str(m.get("git_branch"), f"{where}.git_branch"),
        model=_str(m.get("model", ""), f"{where}.model"),
        model_rank=(bool(rank[0]), _float(rank[1], f"{where}.model_rank")),
        first_ts=_float(m.get("first_ts"), f"{where}.first_ts"),
        last_ts=_float(m.get("last_ts"), f"{where}.last_ts"),
        main=totals_from_map(m.get("main"), f"{where}.main"),
        subagents=totals_from_map(m.get("subagents"), f"{where}.subagents"),
        label=_str(m.get("label", ""), f"{where}.label"),
        recent={
            _int(pair[0], f"{where}.recent"): _int(pair[1], f"{where}.recent")
            for pair in recent
            if isinstance(pair, list) and len(pair) == 2
        },
    )


def standing_from_map(data: object, where: str) -> ProfileStanding:
    m = _map(data, where)
    windows = {}
    for name, reading in _map(m.get("windows") or {}, f"{where}.windows").items():
        if not isinstance(reading, list) or len(reading) != 3:
            raise MirrorDataError(f"{where}.windows.{name}: not [used, resets, ts]")
        used, resets, ts = reading
        windows[_enum(LimitWindow, name, f"{where}.windows")] = WindowReading(
            _opt_float(used, f"{where}.windows.{name}"),
            _opt_float(resets, f"{where}.windows.{name}"),
            _float(ts, f"{where}.windows.{name}"),
        )
    return ProfileStanding(
        state=_enum(ProfileState, m.get("state"), f"{where}.state"),
        since=_opt_float(m.get("since"), f"{where}.since"),
        until=_opt_float(m.get("until"), f"{where}.until"),
        switched_to=_opt_str(m.get("switched_to"), f"{where}.switched_to"),
        reason=_opt_str(m.get("reason"), f"{where}.reason"),
        windows=windows,
        last_call=_opt_float(m.get("last_call"), f"{where}.last_call"),
    )


def profile_from_map(data: object) -> tuple[ProfileRecord, ProfileStanding]:
    m = _map(data, "profile")
    where = f"profile {m.get('node')!r}/{m.get('name')!r}"
    record = ProfileRecord(
        node=_str(m.get("node"), f"{where}.node"),
        name=_str(m.get("name"), f"{where}.name"),
        agent=_enum(Agent, m.get("agent"), f"{where}.agent"),
        billing=_enum(Billing, m.get("billing"), f"{where}.billing"),
        account=_opt_str(m.get("account"), f"{where}.account"),
        plan=_opt_str(m.get("plan"), f"{where}.plan"),
        first_seen=_float(m.get("first_seen"), f"{where}.first_seen"),
        last_announced=_float(m.get("last_announced"), f"{where}.last_announced"),
    )
    return record, standing_from_map(m.get("standing"), f"{where}.standing")


@dataclass(frozen=True, slots=True)
class Figures:
    """A `/api/v1/mirror/figures` answer, read."""

    now: float  # the hub's clock when it answered
    tz: tzinfo
    first_call: float | None
    fleet: dict[Period, Totals]
    totals: dict[tuple[Dimension, Period], dict[str | None, Totals]]
    rates: dict[Scope, RunRate]  # one each, holding that scope's minutes


def figures_from_map(data: object, now_minute: int, hours: float) -> Figures:
    m = _map(data, "figures")
    try:
        tz: tzinfo = ZoneInfo(_str(m.get("tz"), "figures.tz"))
    except (ZoneInfoNotFoundError, ValueError):
        tz = UTC
    totals: dict[tuple[Dimension, Period], dict[str | None, Totals]] = {}
    for pair, rows in _map(m.get("totals") or {}, "figures.totals").items():
        dimension, _, period = pair.partition(":")
        where = f"figures.totals.{pair}"
        if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == 2 for r in rows):
            raise MirrorDataError(f"{where}: expected [key, sums] pairs")
        totals[(_enum(Dimension, dimension, where), _enum(Period, period, where))] = {
            _opt_str(k, where): totals_from_map(t, where) for k, t in rows
        }
    rates = {}
    for name, points in _map(m.get("runrate") or {}, "figures.runrate").items():
        kind, _, key = name.partition(":")
        rates[(kind, key)] = _run_rate((kind, key), points, now_minute, hours)
    first = m.get("first_call")
    return Figures(
        now=_float(m.get("now"), "figures.now"),
        tz=tz,
        first_call=None if first is None else _float(first, "figures.first_call"),
        fleet={
            _enum(Period, p, "figures.fleet"): totals_from_map(t, f"figures.fleet.{p}")
            for p, t in _map(m.get("fleet"), "figures.fleet").items()
        },
        totals=totals,
        rates=rates,
    )


def _run_rate(scope: Scope, points: object, now_minute: int, hours: float) -> RunRate:
    where = f"figures.runrate.{scope[0]}:{scope[1]}"
    if not isinstance(points, list):
        raise MirrorDataError(f"{where}: expected a list of minutes")
    rate = RunRate(hours)
    with localcontext(MONEY):
        for point in points:
            if not isinstance(point, list) or len(point) != 5:
                raise MirrorDataError(f"{where}: not [start, api, metered, estimated, tokens]")
            start, api, metered, estimated, tokens = point
            sums = Totals(
                input=_int(tokens, where),
                api_equivalent=_money(api, where),
                metered=_money(metered, where),
                estimated=_money(estimated, where),
            )
            rate.add((scope,), int(_float(start, where) // 60), now_minute, sums)
    return rate


# (record, state, hello, {(pid, create_time): (when, who)})
NodeParts = tuple[
    NodeRecord, NodeState, NodeHello | None, dict[tuple[int, float], tuple[float, str]]
]


def node_from_map(data: object) -> NodeParts:
    m = _map(data, "node")
    where = f"node {m.get('node')!r}"
    record = NodeRecord(
        node=_str(m.get("node"), f"{where}.node"),
        first_seen=_float(m.get("first_seen"), f"{where}.first_seen"),
        last_seen=_opt_float(m.get("last_seen"), f"{where}.last_seen"),
        version=_opt_str(m.get("version"), f"{where}.version"),
        boot_time=_opt_float(m.get("boot_time"), f"{where}.boot_time"),
        os=_opt_str(m.get("os"), f"{where}.os"),
        cpu_count=None if m.get("cpu_count") is None else _int(m["cpu_count"], where),
    )
    hello = None
    if m.get("hello") is not None:
        try:
            hello = hello_from_map(m["hello"])
        except DecodeError as exc:
            raise MirrorDataError(f"{where}: {exc}") from exc
    paused: dict[tuple[int, float], tuple[float, str]] = {}
    for entry in m.get("paused_by") or []:
        if not isinstance(entry, list) or len(entry) != 4:
            raise MirrorDataError(f"{where}.paused_by: not [pid, create_time, when, who]")
        pid, ctime, when, who = entry
        paused[(_int(pid, where), _float(ctime, where))] = (
            _float(when, where),
            _str(who, where),
        )
    return record, _enum(NodeState, m.get("state"), f"{where}.state"), hello, paused


# -- checks ------------------------------------------------------------------------------------


def _map(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MirrorDataError(f"{where}: expected an object")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise MirrorDataError(f"{where}: expected a string")
    return value


def _opt_str(value: object, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MirrorDataError(f"{where}: expected a whole number")
    return value


def _float(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MirrorDataError(f"{where}: expected a number")
    return float(value)


def _opt_float(value: object, where: str) -> float | None:
    return None if value is None else _float(value, where)


def _money(value: object, where: str) -> Decimal:
    try:
        amount = Decimal(_str(value, where))
    except InvalidOperation as exc:
        raise MirrorDataError(f"{where}: not a decimal amount") from exc
    if not amount.is_finite():
        raise MirrorDataError(f"{where}: not a finite amount")
    return amount


def _enum(kind: type[_E], value: object, where: str) -> _E:
    try:
        return kind(value)  # type: ignore[call-arg]
    except ValueError as exc:
        raise MirrorDataError(f"{where}: unknown value {value!r}") from exc

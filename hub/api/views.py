"""What the API answers, as plain JSON-able data, read through `FleetService` only.

Money is an exact decimal string (`None`: unknown, never zero); times are epoch seconds.
An agent token's `Scope` narrows every list to what concerns its machine, profile, session.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hub._totals import Totals
from hub.header import fleet_header
from hub.ledger import Dimension, Period, profile_key
from hub.model import AuditRecord, NodeState
from hub.service import FeedItem, FleetService, NodeView, Update
from shared.hello import process_to_map
from shared.session_rates import cache_read_ratio


@dataclass(frozen=True, slots=True)
class Scope:
    """What a token may see: None everywhere is the whole fleet."""

    machine: str | None = None
    profile: str | None = None  # a profile name (on any machine unless `machine` says)
    session: str | None = None

    @property
    def whole_fleet(self) -> bool:
        return self.machine is None and self.profile is None and self.session is None

    def sees(
        self, machine: str | None, profile: str | None = None, session: str | None = None
    ) -> bool:
        return (
            (self.machine is None or machine == self.machine)
            and (self.profile is None or profile == self.profile)
            and (self.session is None or session == self.session)
        )


WHOLE_FLEET = Scope()


def money(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def figures(t: Totals) -> dict[str, Any]:
    """A scope's sums in the row shape of `fleet-hub report --json`."""
    return t.to_row().to_json()


def summary(service: FleetService) -> dict[str, Any]:
    views = service.nodes()
    online = sum(v.state is NodeState.ONLINE for v in views)
    h = fleet_header(service, service.clock(), online, len(views))
    return {
        "metered": money(h.metered),
        "subscription_included": money(h.subscription_included),
        "estimated": money(h.estimated),
        "api_equivalent": money(h.api_equivalent),
        "unknown_calls": h.unknown_calls,
        "unknown_tokens": h.unknown_tokens,
        "burn_paid_5m": money(h.burn_paid_short),
        "burn_paid_1h": money(h.burn_paid_long),
        "burn_api_5m": money(h.burn_api_short),
        "burn_api_1h": money(h.burn_api_long),
        "projected_day": money(h.projected_day),
        "projected_month": money(h.projected_month),
        "nodes_online": h.online,
        "nodes": h.nodes,
    }


def node(view: NodeView) -> dict[str, Any]:
    r, hello = view.record, view.hello
    reader = hello.reader if hello is not None else None
    return {
        "machine": r.node,
        "state": view.state.value,
        "last_seen": r.last_seen,
        "version": hello.version if hello is not None else r.version,
        "backlog": reader.pending if reader is not None else None,
        "reader": None
        if reader is None
        else {
            "files": reader.files,
            "events": reader.events,
            "problems": reader.problems,
            "pending": reader.pending,
            "blocked": reader.blocked,
            "last_problem": reader.last_problem,
            "stalled": reader.stalled,
            "status_file": reader.status_file,
        },
    }


def nodes(service: FleetService, scope: Scope) -> list[dict[str, Any]]:
    return [node(v) for v in service.nodes() if scope.sees(v.record.node)]


def machines(service: FleetService, scope: Scope, period: Period) -> list[dict[str, Any]]:
    totals = service.totals(Dimension.MACHINE, period)
    processes = service.processes()
    out = []
    for view in service.nodes():
        name = view.record.node
        if not scope.sees(name):
            continue
        states = [p.state for machine, p in processes if machine == name]
        out.append(
            {
                **node(view),
                "agents_running": states.count("running"),
                "agents_paused": states.count("paused"),
                "spend": figures(totals.get(name) or Totals()),
            }
        )
    return out


def profiles(service: FleetService, scope: Scope, period: Period) -> list[dict[str, Any]]:
    totals = service.totals(Dimension.PROFILE, period)
    credits = service.credits()
    out = []
    for record in service.profiles():
        if not scope.sees(record.node, record.name):
            continue
        key = profile_key(record.node, record.name)
        standing = service.profile_standing(key)
        out.append(
            {
                "key": key,
                "machine": record.node,
                "profile": record.name,
                "agent": record.agent.value,
                "billing": record.billing.value,
                "account": record.account,
                "plan": record.plan,
                "state": standing.state.value,
                "since": standing.since,
                "until": standing.until,
                "switched_to": standing.switched_to,
                "reason": standing.reason,
                "last_call": standing.last_call,
                "windows": {
                    window.value: {"used_percent": w.used_percent, "resets_at": w.resets_at}
                    for window, w in standing.windows.items()
                },
                "spend": figures(totals.get(key) or Totals()),
                "credit": credits.get(key),
            }
        )
    return out


def sessions(
    service: FleetService, scope: Scope, since: float, keys: list[str] | None = None
) -> list[dict[str, Any]]:
    """Sessions active since `since`, or (`keys`) those sessions whatever their age."""
    now = service.clock()
    processes = {
        (machine, p.session_id): process_to_map(p)
        for machine, p in service.processes()
        if p.session_id is not None
    }
    out = []
    rows = service.active_sessions(since) if keys is None else service.sessions(keys)
    for row in rows:
        if not scope.sees(row.machine, row.profile, row.key):
            continue
        out.append(
            {
                "key": row.key,
                "label": row.label,
                "machine": row.machine,
                "agent": row.agent.value,
                "profile": row.profile,
                "account": row.account,
                "project": row.project,
                "git_branch": row.git_branch,
                "model": row.model,
                "first_call": row.first_ts,
                "last_call": row.last_ts,
                "tokens_per_minute": row.tokens_per_minute(now),
                "main": figures(row.main),
                "subagents": figures(row.subagents),
                "process": processes.get((row.machine, row.key)),
            }
        )
    return out


def session_rates(service: FleetService, key: str) -> dict[str, Any]:
    """A session's cache-read ratio (all its calls, subagents' too) and API-equivalent
    run-rate over the last hour, as the node's MCP tells them (`shared.session_rates`)."""
    rows = service.sessions([key])
    rate = service.session_run_rate(key)
    return {
        "cache_read_ratio": cache_read_ratio(rows[0].total) if rows else None,
        "run_rate_per_hour": money(rate),
    }


def spend_by(service: FleetService, dimension: Dimension, period: Period) -> list[dict[str, Any]]:
    rows = service.totals(dimension, period)
    return [
        {"key": key, **figures(t)}
        for key, t in sorted(rows.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    ]


def audit(records: Iterable[AuditRecord]) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "when": r.ts,
            "who": r.who,
            "action": r.action,
            "target": r.target,
            "result": r.result,
        }
        for r in records
    ]


def feed_item(item: FeedItem) -> dict[str, Any]:
    return {"when": item.ts, "kind": item.kind, "machine": item.machine, "text": item.text}


def update(change: Update, scope: Scope) -> dict[str, Any] | None:
    """One change as the stream tells it; None when the scope sees none of it."""
    machines = sorted(m for m in change.machines if scope.sees(m))
    profiles = sorted(k for k in change.profiles if scope.sees(*_profile_parts(k)))
    feed = [feed_item(i) for i in change.feed if scope.sees(i.machine)]
    sessions = sorted(change.sessions) if scope.whole_fleet else []
    if not scope.whole_fleet and not (machines or profiles or feed):
        return None
    return {
        "usage": change.usage if scope.whole_fleet else 0,
        "machines": machines,
        "profiles": profiles,
        "sessions": sessions,
        "feed": feed,
        "nodes_changed": change.nodes_changed,
        "alerts": change.alerts and scope.whole_fleet,
    }


def _profile_parts(key: str) -> tuple[str, str]:
    machine, _, profile = key.partition("/")
    return machine, profile

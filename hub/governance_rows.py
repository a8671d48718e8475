"""The Budgets and Alerts tabs as plain rows (no Textual: the TUI renders them, a test reads
them), from the rows `hub.governance` reads, and the header's word on breached budgets.

Money stays exact until shown here; a spend that cannot be verified (a call of unknown price,
a node gone quiet) reads "$12.30 + ?" (or "unknown"), never as if it were all of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any, Final

from hub import _format as fmt
from hub.dashboard import Cell, Column, Row

BAR_WIDTH: Final = 10
BREACHED: Final = frozenset({"breached", "stopped"})
_STATE_TONES: Final = {
    "ok": "good",
    "warning": "warn",
    "breached": "bad",
    "stopped": "bad",
    "unverified": "warn",
    "lifted": "dim",
}
_STATE_ORDER: Final = {"stopped": 0, "breached": 1, "unverified": 2, "warning": 3, "ok": 4}
_ALERT_TONES: Final = {"dead": "bad", "pending": "warn", "acked": "dim", "silenced": "dim"}
_SEVERITY: Final = {"critical": (0, "bad"), "warning": (1, "warn"), "info": (2, "")}

BUDGET_COLUMNS: Final = (
    Column("name", "budget"),
    Column("state", "state"),
    Column("spent", "spent / limit", numeric=True),
    Column("bar", "used", priority=1),
    Column("scope", "scope", priority=1),
    Column("period", "period", priority=2),
    Column("basis", "basis", priority=3),
    Column("action", "at limit", priority=2),
    Column("forecast", "forecast", priority=3),
    Column("last", "last action", priority=2),
    Column("override", "override", priority=4),
    Column("why", "unverified because", priority=4),
)
ALERT_COLUMNS: Final = (
    Column("raised", "raised", numeric=True),
    Column("state", "state"),
    Column("severity", "sev.", priority=2),
    Column("kind", "kind", priority=1),
    Column("scope", "scope", priority=1),
    Column("text", "what"),
    Column("deliveries", "deliveries", priority=2),
    Column("acked", "acknowledged", priority=3),
)


def _amount(text: str | None, basis: str) -> str:
    if text is None:
        return "–"
    amount = Decimal(text)
    if basis == "quota":
        return f"{amount.normalize():f} %"
    return fmt.money(amount)


def _machine(scope: str) -> str:
    """The machine a scope names ("" for none): what a row's `machine` is."""
    return next((p.partition("=")[2] for p in scope.split(",") if p.startswith("machine=")), "")


def _clock(at: float, tz: tzinfo, now: float) -> str:
    when = datetime.fromtimestamp(at, tz)
    today = datetime.fromtimestamp(now, tz).date()
    return when.strftime("%H:%M" if when.date() == today else "%m-%d %H:%M")


def bar(percent: Decimal | None, width: int = BAR_WIDTH) -> str:
    """ "██████░░░░ 62.5%": the share of the limit used (full past it)."""
    if percent is None:
        return ""
    filled = min(width, max(0, int(percent * width / 100)))
    return "█" * filled + "░" * (width - filled) + f" {percent}%"


def spent_text(row: dict[str, Any]) -> str:
    """ "$41.20 / $50.00"; "$41.20 + ? / $50.00" when it cannot be verified; "/ lifted"."""
    basis = str(row["basis"])
    spent = _amount(row["spent"], basis)
    if row.get("unverified"):
        spent = "unknown" if Decimal(row["spent"]) == 0 else f"{spent} + ?"
    limit = row.get("limit_in_force")
    return f"{spent} / {'lifted' if limit is None else _amount(limit, basis)}"


def budget_row(row: dict[str, Any], tz: tzinfo, now: float) -> Row:
    name = str(row["name"])
    state = str(row["state"])
    percent = None if row.get("percent") is None else Decimal(row["percent"])
    forecast = row.get("forecast_at")
    last = row.get("last_action")
    if last and row.get("last_action_at"):
        last = f"{last} ({_clock(float(row['last_action_at']), tz, now)})"
    override = row.get("override")
    over_text = ""
    if override:
        what = (
            "lifted"
            if override["limit"] is None
            else f"raised to {_amount(override['limit'], row['basis'])}"
        )
        until = _clock(float(override["until"]), tz, now)
        over_text = f"{what} until {until} by {override['who']}: {override['why']}"
    scope = str(row["scope"])
    cells = (
        Cell(name, name),
        Cell(state, _STATE_ORDER.get(state, 5), _STATE_TONES.get(state, "")),
        Cell(spent_text(row), percent, "warn" if row.get("unverified") else ""),
        Cell(bar(percent), percent, _STATE_TONES.get(state, "")),
        Cell(scope, scope),
        Cell(str(row["period"]), str(row["period"])),
        Cell(str(row["basis"]), str(row["basis"])),
        Cell(str(row["action"]), str(row["action"])),
        Cell(
            "" if forecast is None else f"crosses {_clock(float(forecast), tz, now)}",
            forecast,
            "warn" if forecast is not None else "",
        ),
        Cell(last or "", row.get("last_action_at")),
        Cell(over_text, over_text or None),
        Cell(row.get("unverified") or "", row.get("unverified")),
    )
    return Row(name, cells, _machine(scope))


def budget_rows(rows: tuple[dict[str, Any], ...], tz: tzinfo, now: float) -> dict[str, Row]:
    return {str(r["name"]): budget_row(r, tz, now) for r in rows}


def _deliveries(alert: dict[str, Any]) -> str:
    """ "ops-hook delivered · pager dead (3 tries)"."""
    parts = []
    for d in alert.get("deliveries", []):
        tries = f" ({d['attempts']} tries)" if d["state"] != "delivered" and d["attempts"] else ""
        parts.append(f"{d['sink']} {d['state']}{tries}")
    return " · ".join(parts) or "no sink routes it"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def alert_row(alert: dict[str, Any], tz: tzinfo, now: float, text_width: int = 1000) -> Row:
    """`text_width`: the sentence is cut to it (whole in the alert's detail: enter)."""
    key = str(alert["id"])
    state = str(alert["state"])
    order, tone = _SEVERITY.get(str(alert["severity"]), (3, ""))
    acked = alert.get("acked")
    scope = str(alert["scope"])
    raised = float(alert["raised"])
    cells = (
        Cell(_clock(raised, tz, now), raised),
        Cell(state, state, _ALERT_TONES.get(state, "")),
        Cell(str(alert["severity"]), order, tone),
        Cell(str(alert["kind"]), str(alert["kind"])),
        Cell(scope, scope),
        Cell(_clip(str(alert["text"]), text_width), str(alert["text"])),
        Cell(_deliveries(alert), state),
        Cell(
            "" if acked is None else _acked(acked, tz, now),
            None if acked is None else float(acked["when"]),
            "dim" if acked is not None and acked.get("lapsed") else "",
        ),
    )
    return Row(key, cells, _machine(scope))


def _acked(acked: dict[str, Any], tz: tzinfo, now: float) -> str:
    """ "ann 14:02" (for good), "ann until 16:02", "ann lapsed 16:02" (unacknowledged again)."""
    if acked.get("until") is None:
        return f"{acked['who']} {_clock(float(acked['when']), tz, now)}"
    lapse = "lapsed" if acked.get("lapsed") else "until"
    return f"{acked['who']} {lapse} {_clock(float(acked['until']), tz, now)}"


def alert_rows(
    alerts: tuple[dict[str, Any], ...], tz: tzinfo, now: float, text_width: int = 1000
) -> dict[str, Row]:
    return {str(a["id"]): alert_row(a, tz, now, text_width) for a in alerts}


def alert_lines(alert: dict[str, Any], tz: tzinfo, now: float) -> list[str]:
    """An alert whole, for its detail view: what, where, when, the evidence, each delivery."""
    lines = [
        str(alert["text"]),
        "",
        f"id        {alert['id']}",
        f"kind      {alert['kind']} ({alert['severity']})",
        f"scope     {alert['scope']}",
        f"started   {_clock(float(alert['start']), tz, now)}, "
        f"raised {_clock(float(alert['raised']), tz, now)}",
        f"state     {alert['state']}",
    ]
    if alert.get("acked"):
        acked = alert["acked"]
        lines.append(f"acked     by {acked['who']} at {_clock(float(acked['when']), tz, now)}")
        if acked.get("until") is not None:
            lapse = "lapsed" if acked.get("lapsed") else "until"
            lines[-1] += f", {lapse} {_clock(float(acked['until']), tz, now)}"
    lines += [f"evidence  {k} = {v}" for k, v in sorted(alert.get("evidence", {}).items())]
    for d in alert.get("deliveries", []):
        result = f": {d['last_result']}" if d.get("last_result") else ""
        tries = f"{d['attempts']} attempt" + ("" if d["attempts"] == 1 else "s")
        lines.append(f"delivery  {d['sink']} {d['state']}, {tries}{result}")
    return lines


def budget_lines(row: dict[str, Any], tz: tzinfo, now: float) -> list[str]:
    """A budget whole, for its detail view: every cell of its row, labelled, and the rest."""
    built = budget_row(row, tz, now)
    lines = [
        f"{c.label:<19} {cell.text}" for c, cell in zip(BUDGET_COLUMNS, built.cells, strict=True)
    ]
    extra = ("thresholds", "next_period", "tz", "forecast_minutes", "on_unverified", "bucket")
    lines += [f"{k:<19} {row[k]}" for k in extra if row.get(k) is not None]
    if row.get("overshoot") is not None:
        lines.append(f"{'overshoot':<19} {_amount(row['overshoot'], str(row['basis']))}")
    return lines


@dataclass(frozen=True, slots=True)
class Breaches:
    """What the header says of the budgets: how many are at or past their limit, the worst."""

    count: int = 0
    worst: str | None = None  # its name
    worst_percent: Decimal | None = None


def breaches(rows: tuple[dict[str, Any], ...]) -> Breaches:
    hit = [r for r in rows if r["state"] in BREACHED]
    if not hit:
        return Breaches()

    def share(r: dict[str, Any]) -> Decimal:
        return Decimal(r["percent"]) if r.get("percent") is not None else Decimal(0)

    worst = max(hit, key=share)
    return Breaches(len(hit), str(worst["name"]), share(worst))


def open_alerts(alerts: tuple[dict[str, Any], ...]) -> int:
    """Alerts nobody acknowledged nor silenced."""
    return sum(a["state"] not in ("acked", "silenced") for a in alerts)

"""The Reconciliation tab as plain rows (no Textual: the TUI renders them, a test reads them),
from `hub.reconcile.days`' exact figures; money is rounded here, for display, and nowhere
before. A fleet figure with calls of no known price reads "$12.30 + ?", never as all of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any, Final

from hub import _format as fmt
from hub.dashboard import Cell, Column, Row
from hub.reconcile.days import PARTIAL, UNREACHABLE, ProviderDay

_BLOCKS: Final = "▁▂▃▄▅▆▇█"
_STATUS_TONES: Final = {"final": "", PARTIAL: "dim", UNREACHABLE: "bad"}

RECONCILE_COLUMNS: Final = (
    Column("provider", "provider"),
    Column("day", "day (UTC)"),
    Column("fleet", "fleet est.", numeric=True),
    Column("billed", "billed", numeric=True),
    Column("drift", "drift", numeric=True),
    Column("percent", "drift %", numeric=True, priority=2),
    Column("status", "status"),
    Column("trend", "trend", priority=2),
    Column("cause", "cause", priority=1),  # before % and trend at 80 columns: the why
)


def signed_money(amount: Decimal) -> str:
    text = fmt.money(amount)
    return text if amount <= 0 or text.startswith("<") else f"+{text}"


def signed_percent(percent: Decimal | None) -> str:
    if percent is None:
        return "–"
    return f"{percent.quantize(Decimal('0.1')):+}%"


def trend(values: Sequence[Decimal | None]) -> str:
    """One block per day, as tall as that day's drift is large (either way) against the
    largest; "·" for a day with nothing billed."""
    top = max((abs(v) for v in values if v is not None), default=Decimal(0))
    out = []
    for v in values:
        if v is None:
            out.append("·")
        elif top == 0:
            out.append(_BLOCKS[0])
        else:
            out.append(_BLOCKS[int(abs(v) / top * (len(_BLOCKS) - 1))])
    return "".join(out)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def day_row(entry: ProviderDay, cause_width: int = 1000) -> Row:
    day = entry.day.isoformat() if entry.day else "–"
    status_tone = _STATUS_TONES.get(entry.status, "")
    if entry.status == UNREACHABLE:
        why = entry.error or ""
        cells = (
            Cell(entry.provider, entry.provider),
            Cell(day, None),
            Cell("–", None),
            Cell("–", None),
            Cell("–", None),
            Cell("–", None),
            Cell(entry.status, entry.status, status_tone),
            Cell("", None),
            Cell(_clip(why, cause_width), why, "bad"),
        )
        return Row(entry.key, cells, "")
    drift = entry.drift
    tone = "warn" if entry.causes else ""
    cells = (
        Cell(entry.provider, entry.provider),
        Cell(day, day),
        Cell(fmt.spend(entry.fleet, entry.unknown_calls), entry.fleet),
        Cell(fmt.money(entry.billed), entry.billed),
        Cell(signed_money(drift), drift, tone),
        Cell(signed_percent(entry.percent), entry.percent, tone),
        Cell(entry.status, entry.status, status_tone),
        Cell(trend(entry.trend), entry.percent),
        Cell(_clip(", ".join(entry.causes), cause_width), ", ".join(entry.causes), tone),
    )
    return Row(entry.key, cells, "")


def day_rows(entries: Sequence[ProviderDay], cause_width: int = 1000) -> dict[str, Row]:
    return {e.key: day_row(e, cause_width) for e in entries}


def _when(at: float, tz: tzinfo, now: float) -> str:
    when = datetime.fromtimestamp(at, tz)
    today = datetime.fromtimestamp(now, tz).date()
    return when.strftime("%H:%M" if when.date() == today else "%m-%d %H:%M")


def status_line(latest: Mapping[str, Any] | None, tz: tzinfo, now: float) -> str:
    """What the line under the header says of the tab (short: it shares an 80-column line):
    when the rows are from, and the key that asks again."""
    if latest is None:
        return "reading the latest reconciliation…"
    if not latest["configured"]:
        return "not set up (see the tab)"
    running = " · running now" if latest.get("running") else ""
    if latest.get("result") is None:
        every = latest.get("interval") or 0
        when = f"the hub runs it every {fmt.age(every)}" if every else "interval = 0"
        return f"no run yet ({when}){running} · u: reconcile now"
    return f"as of {_when(float(latest['at']), tz, now)}{running} · u: reconcile now"


def analytics_problem(latest: Mapping[str, Any] | None) -> str | None:
    """Why the analytics report could not be had (the rest of the run went on), or None."""
    result = None if latest is None else latest.get("result")
    if result is None:
        return None
    why = result["errors"].get("anthropic analytics")
    return None if why is None else f"Claude Code analytics: {why}"


def _row_lines(row: Mapping[str, Any]) -> list[str]:
    """A row in two or three lines (80 columns hold them): what, figures, why."""
    fleet = fmt.spend(Decimal(row["fleet"]["usd"]), int(row["fleet"]["unknown_calls"]))
    billed = fmt.money(Decimal(row["billed"]["usd"]))
    given = row["drift"]["percent"]
    percent = signed_percent(None if given is None else Decimal(given))
    drift = signed_money(Decimal(row["drift"]["usd"]))
    head = f"{row['model']}  key {row['key']}" + ("  (finalising)" if row.get("partial") else "")
    figures = f"    fleet {fleet}   billed {billed}   drift {drift} ({percent})"
    out = [head, figures + (f"   {row['cause']}" if row["cause"] else "")]
    if row.get("explanation"):
        out.append(f"    {row['explanation']}")
    return out


def detail_lines(entry: ProviderDay, result: Mapping[str, Any] | None) -> list[str]:
    """A provider's day whole: its rows per model and key (each cause in words), and for
    Anthropic with the analytics report, Claude Code's spend per model and per user."""
    if entry.status == UNREACHABLE:
        return [f"{entry.provider} could not be asked:", "", entry.error or ""]
    lines = [
        f"fleet estimate {fmt.spend(entry.fleet, entry.unknown_calls)}, billed "
        f"{fmt.money(entry.billed)}, drift {signed_money(entry.drift)} "
        f"({signed_percent(entry.percent)}), {entry.status}",
        f"trend (drift % of the days before, this one last): {trend(entry.trend)}  "
        + " ".join(signed_percent(v) for v in entry.trend),
        "",
    ]
    for row in entry.rows:
        lines += _row_lines(row)
    if not entry.rows:
        lines.append("(no usage on either side)")
    claude_code = None if result is None else result.get("claude_code")
    if entry.provider == "anthropic" and claude_code and entry.day is not None:
        lines += _claude_code_lines(claude_code, entry.day.isoformat())
    elif entry.provider == "anthropic" and (why := analytics_problem({"result": result})):
        lines += ["", why]
    return lines


def _claude_code_lines(part: Mapping[str, Any], day: str) -> list[str]:
    lines = ["", "Claude Code (the Enterprise analytics cost report)"]
    days = [d for d in part["days"] if d["day"] == day]
    if not days:
        return [*lines, "(no data for this day)"]
    total = days[0]
    lines.append(
        f"billed {fmt.money(Decimal(total['usd']))} (list price "
        f"{fmt.money(Decimal(total['list_usd']))})"
        + (", still being filled in" if total["partial"] else "")
    )
    for m in (m for m in part["models"] if m["day"] == day):
        lines.append(
            f"  {m['model']}: {fmt.money(Decimal(m['usd']))} "
            f"(list {fmt.money(Decimal(m['list_usd']))})"
        )
    for a in (a for a in part["actors"] if a["day"] == day):
        fleet = fmt.spend(Decimal(a["fleet"]["list_usd"]), int(a["fleet"]["unknown_calls"]))
        lines.append(
            f"  {a['actor']}: fleet {fleet}, billed {fmt.money(Decimal(a['billed']['list_usd']))}"
            f" at list price ({fmt.money(Decimal(a['billed']['usd']))} after the discount), "
            f"drift {signed_money(Decimal(a['drift']['usd']))}"
        )
    return lines

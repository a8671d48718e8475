"""What a budget is: a ceiling on a scope, over a period, on a basis, with warn thresholds and an
action at the limit. Parsed from untrusted text (hub.toml, the CLI, the API): every problem is a
`BudgetError` with one line naming what is wrong and what to do.

Money is exact: a limit is a `Decimal` in the unit the user wrote (USD for `paid` and `api`,
percent of the provider's window for `quota`), compared as such, never as a float.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class BudgetError(ValueError):
    """A budget that cannot be: the message says what is wrong and what to do."""


class ScopeKind(StrEnum):
    FLEET = "fleet"
    ACCOUNT = "account"
    PROFILE = "profile"
    MACHINE = "machine"
    AGENT = "agent"
    PROJECT = "project"
    SESSION = "session"
    MODEL = "model"


class Basis(StrEnum):
    PAID = "paid"  # metered + estimated: what is owed
    API = "api"  # API-equivalent: every priced call at list rates (binds subscriptions too)
    QUOTA = "quota"  # a subscription window's used-% reading (5-hour or weekly)


class Action(StrEnum):
    ALERT = "alert"
    PAUSE = "pause"
    KILL = "kill"


class NextPeriod(StrEnum):
    RESUME = "resume"  # resume what the budget paused when the next period starts
    WAIT = "wait"  # leave it paused until a person resumes it


class PeriodKind(StrEnum):
    SESSION = "session"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    ROLLING = "rolling"  # the last N seconds, e.g. "5h"
    WINDOW = "window"  # quota: the provider's own 5-hour or weekly window


CALENDAR: Final = (PeriodKind.HOUR, PeriodKind.DAY, PeriodKind.WEEK, PeriodKind.MONTH)
DEFAULT_THRESHOLDS: Final = (50, 80, 100)
DEFAULT_FORECAST_MINUTES: Final = 30
NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._$/-]{0,63}$")
_ROLLING_RE: Final = re.compile(r"^(\d{1,6})(s|m|h|d)$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_ROLLING_S: Final = 10
MAX_ROLLING_S: Final = 31 * 86400
MAX_LIMIT: Final = Decimal(10) ** 12
QUOTA_WINDOWS: Final = {"5h": "5h", "week": "weekly", "weekly": "weekly"}
KINDS_TEXT: Final = ", ".join(k.value for k in ScopeKind)


@dataclass(frozen=True, slots=True)
class Scope:
    """Up to two (kind, value) parts that a call must all match; no parts: the whole fleet."""

    parts: tuple[tuple[ScopeKind, str], ...] = ()

    @property
    def text(self) -> str:
        return ",".join(f"{k.value}={v}" for k, v in self.parts) or "fleet"

    def value(self, kind: ScopeKind) -> str | None:
        return next((v for k, v in self.parts if k is kind), None)

    def contains(self, other: Scope) -> bool:
        """Whether every call of `other` is also in this scope (this is a parent of it)."""
        return set(self.parts) <= set(other.parts)


@dataclass(frozen=True, slots=True)
class Period:
    kind: PeriodKind
    seconds: int = 0  # ROLLING: the window's length
    window: str = ""  # WINDOW: "5h" or "weekly" (the LimitWindow value)

    @property
    def text(self) -> str:
        if self.kind is PeriodKind.ROLLING:
            return rolling_text(self.seconds)
        if self.kind is PeriodKind.WINDOW:
            return "week" if self.window == "weekly" else self.window
        return self.kind.value


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    scope: Scope
    period: Period
    basis: Basis
    limit: Decimal  # USD (paid, api) or percent (quota), exact
    action: Action = Action.ALERT
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    next_period: NextPeriod = NextPeriod.WAIT
    tz: str = "UTC"
    forecast_minutes: int = DEFAULT_FORECAST_MINUTES  # 0: no forecast warning
    on_unverified: Action = Action.ALERT  # alert or pause when the spend cannot be computed

    @property
    def hard(self) -> bool:
        return self.action is not Action.ALERT

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def limit_text(self, limit: Decimal | None = None) -> str:
        return amount_text(self.limit if limit is None else limit, self.basis)

    @property
    def title(self) -> str:
        """How the feed names it: "budget 'spark02-day' (machine=spark02, day, $50)"."""
        return f"budget '{self.name}' ({self.scope.text}, {self.period.text}, {self.limit_text()})"

    def to_table(self) -> dict[str, Any]:
        """The `[[budgets]]` table (and the API's shape): every value as the user writes it."""
        table: dict[str, Any] = {
            "name": self.name,
            "scope": self.scope.text,
            "period": self.period.text,
            "basis": self.basis.value,
            "limit": str(self.limit),
            "action": self.action.value,
        }
        if self.thresholds != DEFAULT_THRESHOLDS:
            table["thresholds"] = list(self.thresholds)
        if self.next_period is not NextPeriod.WAIT:
            table["next_period"] = self.next_period.value
        if self.tz != "UTC":
            table["tz"] = self.tz
        if self.forecast_minutes != DEFAULT_FORECAST_MINUTES:
            table["forecast_minutes"] = self.forecast_minutes
        if self.on_unverified is not Action.ALERT:
            table["on_unverified"] = self.on_unverified.value
        return table


def amount_text(amount: Decimal, basis: Basis) -> str:
    if basis is Basis.QUOTA:
        return f"{amount.normalize():f} %"
    return f"${amount:,.2f}" if amount == amount.quantize(Decimal("0.01")) else f"${amount:,f}"


def rolling_text(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_S[unit] == 0:
            return f"{seconds // _UNIT_S[unit]}{unit}"
    return f"{seconds}s"


# --- parsing --------------------------------------------------------------------------------


def parse_scope(text: str) -> Scope:
    """ "project=x,agent=claude-code" (at most two parts), or "fleet"."""
    text = text.strip()
    if text in ("fleet", "fleet=", "fleet=*", ""):
        return Scope()
    parts: list[tuple[ScopeKind, str]] = []
    for item in text.split(","):
        kind_text, sep, value = item.partition("=")
        kind_text, value = kind_text.strip(), value.strip()
        try:
            kind = ScopeKind(kind_text)
        except ValueError:
            raise BudgetError(
                f"scope {text!r}: {kind_text!r} is not a scope kind (use KIND=VALUE with one "
                f"of {KINDS_TEXT})"
            ) from None
        if kind is ScopeKind.FLEET:
            continue
        if not sep or not value or len(value) > 256 or "\0" in value:
            raise BudgetError(f"scope {text!r}: {kind.value} needs a value, e.g. {kind.value}=X")
        if any(k is kind for k, _ in parts):
            raise BudgetError(f"scope {text!r}: {kind.value} is given twice")
        parts.append((kind, value))
    if len(parts) > 2:
        raise BudgetError(f"scope {text!r}: combine at most two kinds (e.g. project=x,agent=y)")
    return Scope(tuple(sorted(parts)))


def parse_period(text: str, basis: Basis) -> Period:
    text = text.strip().lower()
    if basis is Basis.QUOTA:
        if text not in QUOTA_WINDOWS:
            raise BudgetError(
                f"period {text!r}: a quota budget follows the provider's window: 5h or week"
            )
        return Period(PeriodKind.WINDOW, window=QUOTA_WINDOWS[text])
    if (match := _ROLLING_RE.match(text)) is not None:
        seconds = int(match[1]) * _UNIT_S[match[2]]
        if not MIN_ROLLING_S <= seconds <= MAX_ROLLING_S:
            raise BudgetError(f"period {text!r}: a rolling window is 10s to 31d")
        return Period(PeriodKind.ROLLING, seconds=seconds)
    try:
        kind = PeriodKind(text)
    except ValueError:
        kind = PeriodKind.ROLLING  # not a name either: fall to the error below
    if kind in (PeriodKind.ROLLING, PeriodKind.WINDOW):
        raise BudgetError(
            f"period {text!r}: use session, hour, day, week, month or a rolling window "
            "such as 5h, 90m, 7d"
        )
    return Period(kind)


def parse_limit(text: object, basis: Basis) -> Decimal:
    raw = str(text).strip()
    cleaned = raw.removeprefix("$").removesuffix("%").strip().replace(",", "")
    try:
        limit = Decimal(cleaned)
    except InvalidOperation:
        limit = Decimal("NaN")
    if not limit.is_finite() or not 0 < limit <= MAX_LIMIT or isinstance(text, float):
        unit = "a percent of the window, e.g. 90" if basis is Basis.QUOTA else "dollars, e.g. 50"
        hint = " (write it as a string: floats are not exact)" if isinstance(text, float) else ""
        raise BudgetError(f"limit {raw!r}: must be a positive amount in {unit}{hint}")
    if basis is Basis.QUOTA and limit > 100:
        raise BudgetError(f"limit {raw!r}: a quota budget's limit is a percent, at most 100")
    return limit


def parse_thresholds(value: object) -> tuple[int, ...]:
    items: Iterable[object]
    if isinstance(value, str):
        items = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise BudgetError(f"thresholds {value!r}: give percents such as 50,80,100")
    out: list[int] = []
    for item in items:
        try:
            pct = int(str(item).strip().removesuffix("%"))
        except ValueError:
            raise BudgetError(f"thresholds: {item!r} is not a whole percent") from None
        if not 1 <= pct <= 1000:
            raise BudgetError(f"thresholds: {pct} is out of range (1 to 1000 %)")
        out.append(pct)
    if 100 not in out:
        out.append(100)  # the limit itself is always a threshold: the action happens there
    return tuple(sorted(set(out)))


def _enum(kind: type[Any], key: str, value: object, allowed: Iterable[str] | None = None) -> Any:
    names = list(allowed) if allowed is not None else [m.value for m in kind]
    if not isinstance(value, str) or value not in names:
        raise BudgetError(f"{key} {value!r}: use {' | '.join(names)}")
    return kind(value)


KEYS: Final = (
    "name",
    "scope",
    "period",
    "basis",
    "limit",
    "action",
    "thresholds",
    "next_period",
    "tz",
    "forecast_minutes",
    "on_unverified",
)


def parse_budget(table: Mapping[str, Any]) -> Budget:
    """One `[[budgets]]` table (or the API's body, or the CLI's flags) as a `Budget`."""
    if extra := sorted(set(table) - set(KEYS)):
        raise BudgetError(f"unknown key(s) {', '.join(extra)} (known: {', '.join(KEYS)})")
    name = table.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BudgetError(
            f"name {name!r}: 1 to 64 letters, digits, spaces or . _ $ / -, starting with a "
            "letter or digit"
        )
    for key in ("scope", "period", "basis", "limit"):
        if key not in table:
            raise BudgetError(f"budget {name!r}: '{key}' is missing")
    where = f"budget {name!r}: "
    try:
        basis = _enum(Basis, "basis", table["basis"])
        scope_text = table["scope"]
        if not isinstance(scope_text, str):
            raise BudgetError(f"scope {scope_text!r}: write it as KIND=VALUE[,KIND=VALUE]")
        scope = parse_scope(scope_text)
        period_text = table["period"]
        if not isinstance(period_text, str):
            raise BudgetError(f"period {period_text!r}: write it as text, e.g. day or 5h")
        period = parse_period(period_text, basis)
        limit = parse_limit(table["limit"], basis)
        action = _enum(Action, "action", table.get("action", "alert"))
        on_unverified = _enum(
            Action, "on_unverified", table.get("on_unverified", "alert"), ("alert", "pause")
        )
        next_period = _enum(NextPeriod, "next_period", table.get("next_period", "wait"))
        thresholds = parse_thresholds(table.get("thresholds", list(DEFAULT_THRESHOLDS)))
        tz = table.get("tz", "UTC")
        if not isinstance(tz, str):
            raise BudgetError(f"tz {tz!r}: an IANA zone name such as Europe/Berlin")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise BudgetError(f"tz {tz!r}: not an IANA zone (e.g. UTC, Europe/Berlin)") from None
        forecast = table.get("forecast_minutes", DEFAULT_FORECAST_MINUTES)
        if isinstance(forecast, bool) or not isinstance(forecast, int) or not forecast >= 0:
            raise BudgetError(f"forecast_minutes {forecast!r}: whole minutes, 0 for none")
        if forecast > 60 * 24 * 31:
            raise BudgetError(f"forecast_minutes {forecast!r}: at most a month (44640)")
    except BudgetError as exc:
        raise BudgetError(where + str(exc)) from None
    if basis is Basis.QUOTA and any(
        k in (ScopeKind.PROJECT, ScopeKind.SESSION, ScopeKind.MODEL) for k, _ in scope.parts
    ):
        raise BudgetError(
            f"{where}a quota budget binds a subscription's window: scope it by fleet, account, "
            "profile, machine or agent"
        )
    return Budget(
        name,
        scope,
        period,
        basis,
        limit,
        action,
        thresholds,
        next_period,
        tz,
        forecast,
        on_unverified,
    )


def check_budgets(budgets: Iterable[Budget]) -> list[Budget]:
    """The budgets, once they are known to fit together: unique names, and no child above its
    parent (a budget over a narrower scope on the same period and basis)."""
    out: list[Budget] = []
    for budget in budgets:
        if any(b.name == budget.name for b in out):
            raise BudgetError(f"budget {budget.name!r} is defined twice: names must be unique")
        out.append(budget)
    for child in out:
        for parent in out:
            if (
                parent is not child
                and parent.basis is child.basis
                and parent.period == child.period
                and parent.tz == child.tz
                and parent.scope != child.scope
                and parent.scope.contains(child.scope)
                and child.limit > parent.limit
            ):
                raise BudgetError(
                    f"budget {child.name!r} ({child.scope.text}) limit {child.limit_text()} "
                    f"exceeds its parent {parent.name!r} ({parent.scope.text}, same period "
                    f"and basis) limit {parent.limit_text()}: lower it or raise the parent"
                )
    return out

"""Codex quota readings and usage-limit hits (research/log-formats.md §2.5).

`token_count` events carry `payload.rate_limits`, Codex's own reading of the account's
windows. Three shapes have been written over time, all handled here:

- current: `{limit_id, limit_name, primary: {used_percent, window_minutes, resets_at},
  secondary: {...}, plan_type, ...}` with `resets_at` in unix seconds;
- until codex PR #5304 (2025-10-17): the same with `resets_in_seconds`, relative to the time
  the line was written;
- earliest (~Sept 2025): flat `primary_used_percent`, `primary_window_minutes`, ...

A window is classified by its length, never by its slot: some plans put the weekly window in
`primary` with `secondary` null (hermes-resetwatch PR #3, Maestro PR #1597).

Every refresh repeats the snapshot, so a window is reported only when its reading changed
since the last one reported from the same file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from node_agent.sources._values import number as _num
from node_agent.sources._values import text as _text
from shared.events import Agent, LimitEvent, LimitKind, LimitWindow

USAGE_LIMIT_EXCEEDED: Final = "usage_limit_exceeded"
_SLOTS: Final = ("primary", "secondary")
# A reset time derived from `resets_in_seconds` moves by the line's write jitter; treat
# readings whose reset differs by less than this as the same window instance.
_RELATIVE_RESET_SLACK_S: Final = 90.0


def _minutes(value: object) -> int | None:
    number = _num(value)
    return int(number) if number is not None and number > 0 else None


def classify_window(minutes: int | None) -> LimitWindow:
    if minutes is None:
        return LimitWindow.UNKNOWN
    if minutes == 300:
        return LimitWindow.FIVE_HOUR
    if minutes == 10080:
        return LimitWindow.WEEKLY
    return LimitWindow.OTHER


class WindowReading(msgspec.Struct, frozen=True, gc=False):
    slot: str  # where it was logged ("primary"/"secondary"); informational only
    window_minutes: int | None
    used_percent: float | None
    resets_at: float | None  # epoch seconds
    relative: bool  # resets_at was computed from resets_in_seconds

    @property
    def window(self) -> LimitWindow:
        return classify_window(self.window_minutes)

    def key(self, limit_id: str | None) -> str:
        # By length, so a weekly window keeps its identity whichever slot it moves to.
        span = str(self.window_minutes) if self.window_minutes is not None else self.slot
        return f"{limit_id or '-'}:{span}"

    def same_as(self, other: WindowReading, plan_changed: bool) -> bool:
        if plan_changed or self.used_percent != other.used_percent:
            return False
        if self.window_minutes != other.window_minutes:
            return False
        if self.resets_at is None or other.resets_at is None:
            return self.resets_at is other.resets_at
        slack = _RELATIVE_RESET_SLACK_S if self.relative or other.relative else 0.5
        return abs(self.resets_at - other.resets_at) < slack


class RateLimitsReading(msgspec.Struct, frozen=True, gc=False):
    limit_id: str | None
    limit_name: str | None
    plan_type: str | None
    windows: tuple[WindowReading, ...]


def _window(slot: str, raw: Mapping[str, object], now: float | None) -> WindowReading | None:
    used = _num(raw.get("used_percent"))
    minutes = _minutes(raw.get("window_minutes"))
    resets_at = _num(raw.get("resets_at"))
    relative = False
    if resets_at is None:
        rel = _num(raw.get("resets_in_seconds"))
        if rel is not None and now is not None:
            resets_at, relative = now + rel, True
    if used is None and minutes is None and resets_at is None:
        return None
    return WindowReading(slot, minutes, used, resets_at, relative)


def parse_rate_limits(value: object, now: float | None) -> RateLimitsReading | None:
    """The windows of one `rate_limits` object; `now` (the line's time) anchors relative resets."""
    if not isinstance(value, dict):
        return None
    windows: list[WindowReading] = []
    for slot in _SLOTS:
        nested = value.get(slot)
        if isinstance(nested, dict):
            reading = _window(slot, nested, now)
        else:
            # Earliest shape: `primary_used_percent`, `primary_window_minutes`, ...
            prefix = slot + "_"
            flat = {k[len(prefix) :]: v for k, v in value.items() if k.startswith(prefix)}
            reading = _window(slot, flat, now) if flat else None
        if reading is not None:
            windows.append(reading)
    if not windows:
        return None
    return RateLimitsReading(
        limit_id=_text(value.get("limit_id")),
        limit_name=_text(value.get("limit_name")),
        plan_type=_text(value.get("plan_type")),
        windows=tuple(windows),
    )


def usage_limit_message(payload: Mapping[str, object]) -> str | None:
    """The message of a usage-limit refusal, or None when the event is not one.

    Newer builds put it on `task_complete` as `error: {message, codex_error_info}`; older ones
    wrote an `error` event with `message` and `codex_error_info` on the payload itself.
    """
    kind = payload.get("type")
    if kind == "task_complete":
        error = payload.get("error")
        if not isinstance(error, dict):
            return None
        holder: Mapping[str, object] = error
    elif kind == "error":
        holder = payload
    else:
        return None
    info = holder.get("codex_error_info")
    hit = info == USAGE_LIMIT_EXCEEDED or (isinstance(info, dict) and USAGE_LIMIT_EXCEEDED in info)
    if not hit:
        return None
    return _text(holder.get("message")) or "usage limit exceeded"


def _reset_window(reading: RateLimitsReading, at: float) -> WindowReading | None:
    """The window a refusal waits on: one at 100 % (latest reset among them), else the latest
    reset of all. A reset already in the past says nothing about this refusal."""
    future = [w for w in reading.windows if w.resets_at is not None and w.resets_at > at]
    if not future:
        return None
    full = [w for w in future if w.used_percent is not None and w.used_percent >= 100.0]
    pool = full or future
    return max(pool, key=lambda w: w.resets_at or 0.0)


class LimitTracker(msgspec.Struct):
    """Per-file memory of the last reported reading of each window."""

    reported: dict[str, tuple[WindowReading, str | None]] = msgspec.field(default_factory=dict)
    latest: RateLimitsReading | None = None

    def snapshots(
        self,
        reading: RateLimitsReading,
        *,
        ts: float,
        ts_key: str,
        thread: str,
        origin: str,
    ) -> list[LimitEvent]:
        self.latest = reading
        events: list[LimitEvent] = []
        label = reading.limit_name or reading.limit_id
        message = None if label in (None, "codex") else f"limit {label}"
        for window in reading.windows:
            key = window.key(reading.limit_id)
            previous = self.reported.get(key)
            if previous is not None and window.same_as(
                previous[0], plan_changed=previous[1] != reading.plan_type
            ):
                continue
            self.reported[key] = (window, reading.plan_type)
            events.append(
                LimitEvent(
                    event_id=f"codex:{thread}:quota:{key}:{ts_key}",
                    ts=ts,
                    agent=Agent.CODEX,
                    kind=LimitKind.QUOTA_SNAPSHOT,
                    window=window.window,
                    window_minutes=window.window_minutes,
                    used_percent=window.used_percent,
                    resets_at=window.resets_at,
                    message=message,
                    plan_type=reading.plan_type,
                    session_id=thread,
                    origin=origin,
                )
            )
        return events

    def hit(self, message: str, *, ts: float, ts_key: str, thread: str, origin: str) -> LimitEvent:
        window = _reset_window(self.latest, ts) if self.latest is not None else None
        return LimitEvent(
            event_id=f"codex:{thread}:limit-hit:{ts_key}",
            ts=ts,
            agent=Agent.CODEX,
            kind=LimitKind.RATE_LIMIT_HIT,
            window=window.window if window is not None else LimitWindow.UNKNOWN,
            window_minutes=window.window_minutes if window is not None else None,
            used_percent=window.used_percent if window is not None else None,
            resets_at=window.resets_at if window is not None else None,
            message=message,
            plan_type=self.latest.plan_type if self.latest is not None else None,
            session_id=thread,
            origin=origin,
        )

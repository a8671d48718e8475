"""Claude Code rate-limit messages: which window was hit and when it resets.

Claude Code writes a limit hit as a synthetic assistant line whose text names the window and a
wall-clock reset time, e.g. `You've hit your session limit · resets 5:40pm (Europe/Madrid)` or
`You've hit your weekly limit · resets Sep 17 at 10pm (Europe/Lisbon)`. A time without a zone is in
the machine's local zone. The reset is resolved against the line's own timestamp: the first such
wall-clock moment after it. Releases up to ~1.0.8x wrote `Claude AI usage limit reached|<epoch>`.
See research/log-formats.md §1.5.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

from shared.events import LimitWindow

WINDOW_MINUTES: Final[dict[LimitWindow, int]] = {
    LimitWindow.FIVE_HOUR: 5 * 60,
    LimitWindow.WEEKLY: 7 * 24 * 60,
}

# Patterns, not compiled at import: `re` compiles them at their first use (its cache keeps
# them), and most scans meet no limit line (the two cost ~0.5 ms of every scan's start-up).
_LEGACY: Final = r"usage limit reached\|(\d{9,12})\b"

_MONTHS: Final = {
    name: i
    for i, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}

# "resets 6pm", "resets 5:40pm (Europe/Madrid)", "resets Sep 17 at 10pm (Europe/Lisbon)",
# "reset at 3pm"; a 24-hour "resets 18:00" is accepted too in case the wording changes.
_RESET: Final = (
    r"\breset(?:s)?\s+(?:at\s+)?"
    r"(?:(?P<month>[A-Za-z]{3,9})\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)?"
    r"(?:\s*\((?P<zone>[^()]+)\))?"
)


@dataclass(frozen=True, slots=True)
class LimitInfo:
    window: LimitWindow
    window_minutes: int | None
    resets_at: float | None
    problem: str | None = None  # why a reset that the text announces could not be resolved


def machine_zone() -> tzinfo:
    """The machine's zone with its DST rules (not just today's offset) where it can be found."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # here: limit lines are rare

    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        pass
    # No tz database (e.g. Windows without tzdata): today's fixed offset is the best we have.
    return datetime.now().astimezone().tzinfo or UTC


def is_limit_text(text: str) -> bool:
    """Wording of a usage/rate-limit refusal, for error lines that carry no `error` field."""
    low = text.lower()
    return (
        "limit reached" in low
        or "out of extra usage" in low
        or ("hit your" in low and "limit" in low)
        or re.search(_LEGACY, text, re.IGNORECASE) is not None
    )


def classify_window(text: str) -> LimitWindow:
    low = text.lower()
    if "session limit" in low or "5-hour limit" in low or "5 hour limit" in low:
        return LimitWindow.FIVE_HOUR
    if "weekly limit" in low:
        return LimitWindow.WEEKLY
    if "out of extra usage" in low:
        return LimitWindow.OTHER
    return LimitWindow.UNKNOWN


def parse_limit_text(text: str, ts: float, local_tz: tzinfo) -> LimitInfo:
    """Window and reset instant of one limit message logged at epoch `ts`."""
    window = classify_window(text)
    minutes = WINDOW_MINUTES.get(window)
    legacy = re.search(_LEGACY, text, re.IGNORECASE)
    if legacy is not None:
        return LimitInfo(window, minutes, float(legacy.group(1)))
    match = re.search(_RESET, text, re.IGNORECASE)
    if match is None:
        return LimitInfo(window, minutes, None)
    resets_at, problem = _resolve(match, ts, local_tz)
    return LimitInfo(window, minutes, resets_at, problem)


def _resolve(match: re.Match[str], ts: float, local_tz: tzinfo) -> tuple[float | None, str | None]:
    hour = int(match["hour"])
    minute = int(match["minute"] or 0)
    ampm = (match["ampm"] or "").replace(".", "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            return None, f"bad reset hour in {match.group(0)!r}"
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    elif match["minute"] is None:
        # A bare number ("resets 3") is not a time we can trust.
        return None, f"reset time without am/pm or minutes in {match.group(0)!r}"
    if hour > 23 or minute > 59:
        return None, f"bad reset time in {match.group(0)!r}"

    zone: tzinfo = local_tz
    if match["zone"]:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        name = match["zone"].strip()
        try:
            zone = UTC if name.upper() in ("UTC", "GMT", "Z") else ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return None, f"unknown time zone {name!r} in limit message"

    base = datetime.fromtimestamp(ts, zone)
    if match["month"]:
        month = _MONTHS.get(match["month"].lower())
        if month is None:
            return None, f"unknown month {match['month']!r} in limit message"
        day = int(match["day"])
        # The next such date after the line: this year, else next year.
        for year in (base.year, base.year + 1):
            try:
                cand = datetime(year, month, day, hour, minute, tzinfo=zone)
            except ValueError:  # Feb 29 in a non-leap year
                continue
            if cand.timestamp() > ts:
                return cand.timestamp(), None
        return None, f"impossible reset date in {match.group(0)!r}"

    # Wall-clock arithmetic on dates, not on +24h, so a DST change in between is respected.
    day0 = base.date()
    for offset in (0, 1, 2):
        d = day0 + timedelta(days=offset)
        cand = datetime(d.year, d.month, d.day, hour, minute, tzinfo=zone)
        if cand.timestamp() > ts:
            return cand.timestamp(), None
    return None, f"unresolvable reset time in {match.group(0)!r}"  # pragma: no cover

"""Claude Code rate-limit wordings (research/log-formats.md §1.5) and their resolved resets."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from node_agent.sources._claude_limits import (
    classify_window,
    is_limit_text,
    machine_zone,
    parse_limit_text,
)
from shared.events import LimitWindow


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")

# (text, line timestamp UTC, local zone of the machine, window, resets_at UTC or None)
CASES = [
    # Zone-less time: the machine's zone (Berlin, UTC+2 in September). 16:02 local -> 18:00 today.
    (
        "You've hit your limit · resets 6pm",
        "2026-09-03T14:02:11.482",
        BERLIN,
        LimitWindow.UNKNOWN,
        "2026-09-03T16:00:00",
    ),
    # Same wording after 6pm local (19:30): the next day's 6pm.
    (
        "You've hit your limit · resets 6pm",
        "2026-09-03T17:30:00",
        BERLIN,
        LimitWindow.UNKNOWN,
        "2026-09-04T16:00:00",
    ),
    (
        "You've hit your session limit · resets 5:40pm (Europe/Madrid)",
        "2026-09-03T14:02:11.482",
        TOKYO,  # the named zone wins over the machine's
        LimitWindow.FIVE_HOUR,
        "2026-09-03T15:40:00",
    ),
    (
        "You've hit your weekly limit · resets Sep 17 at 10pm (Europe/Lisbon)",
        "2026-09-03T14:02:11.482",
        BERLIN,
        LimitWindow.WEEKLY,
        "2026-09-17T21:00:00",  # Lisbon is UTC+1 in September
    ),
    # A month/day already past this year: next year's (Lisbon is UTC+0 in January).
    (
        "You've hit your weekly limit · resets Jan 2 at 9am (Europe/Lisbon)",
        "2026-12-30T12:00:00",
        BERLIN,
        LimitWindow.WEEKLY,
        "2027-01-02T09:00:00",
    ),
    (
        "You're out of extra usage · resets 11:59pm (UTC)",
        "2026-09-03T14:02:11.482",
        TOKYO,
        LimitWindow.OTHER,
        "2026-09-03T23:59:00",
    ),
    # Older wording, zone-less; 23:02 in Tokyo, so 3pm is tomorrow's.
    (
        "5-hour limit reached ∙ resets 3pm",
        "2026-09-03T14:02:00",
        TOKYO,
        LimitWindow.FIVE_HOUR,
        "2026-09-04T06:00:00",
    ),
    (
        "Weekly limit reached · resets 10am (Asia/Seoul) · /upgrade to keep using Claude Code",
        "2026-09-03T14:02:00",
        BERLIN,
        LimitWindow.WEEKLY,
        "2026-09-04T01:00:00",
    ),
    # 12am is midnight, 12pm noon.
    (
        "You've hit your session limit · resets 12am (UTC)",
        "2026-09-03T14:02:00",
        BERLIN,
        LimitWindow.FIVE_HOUR,
        "2026-09-04T00:00:00",
    ),
    (
        "You've hit your session limit · resets 12pm (UTC)",
        "2026-09-03T09:00:00",
        BERLIN,
        LimitWindow.FIVE_HOUR,
        "2026-09-03T12:00:00",
    ),
    # Across the end of US daylight time (Nov 1 2026): 9am EST is 14:00Z, not 13:00Z.
    (
        "You've hit your limit · resets 9am",
        "2026-10-31T14:00:00",
        NEW_YORK,
        LimitWindow.UNKNOWN,
        "2026-11-01T14:00:00",
    ),
    # Legacy: the reset is the epoch after the bar.
    (
        "Claude AI usage limit reached|1757012400",
        "2025-09-04T16:00:00",
        BERLIN,
        LimitWindow.UNKNOWN,
        "2025-09-04T19:00:00",
    ),
    ("API Error: Rate limit reached", "2026-09-03T14:02:00", BERLIN, LimitWindow.UNKNOWN, None),
]


@pytest.mark.parametrize(("text", "ts", "zone", "window", "reset"), CASES)
def test_wordings_resolve(
    text: str, ts: str, zone: ZoneInfo, window: LimitWindow, reset: str | None
) -> None:
    info = parse_limit_text(text, utc(ts), zone)
    assert info.window is window
    assert info.resets_at == (utc(reset) if reset else None)
    assert info.problem is None
    if reset:
        assert info.resets_at is not None and info.resets_at > utc(ts)


def test_window_minutes() -> None:
    assert parse_limit_text("You've hit your session limit", 0, UTC).window_minutes == 300
    assert parse_limit_text("Weekly limit reached", 0, UTC).window_minutes == 7 * 24 * 60
    assert parse_limit_text("You're out of extra usage", 0, UTC).window_minutes is None


def test_unknown_zone_is_a_problem_not_a_guess() -> None:
    info = parse_limit_text(
        "You've hit your session limit · resets 5pm (Mars/Olympus)", utc("2026-09-03T14:00"), UTC
    )
    assert info.resets_at is None
    assert info.problem is not None and "Mars/Olympus" in info.problem
    assert info.window is LimitWindow.FIVE_HOUR


def test_impossible_hour_is_a_problem() -> None:
    info = parse_limit_text("You've hit your limit · resets 13pm", utc("2026-09-03T14:00"), UTC)
    assert info.resets_at is None and info.problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("You've hit your limit · resets 6pm", True),
        ("5-hour limit reached ∙ resets 3pm", True),
        ("You're out of extra usage · resets 11:59pm (UTC)", True),
        ("Claude AI usage limit reached|1757012400", True),
        ("API Error: Rate limit reached", True),
        ("Not logged in · Please run /login", False),
        ("API Error: 500 Internal server error", False),
    ],
)
def test_is_limit_text(text: str, expected: bool) -> None:
    assert is_limit_text(text) is expected


def test_classify_window_is_case_insensitive() -> None:
    assert classify_window("WEEKLY LIMIT reached") is LimitWindow.WEEKLY
    assert classify_window("You've hit your Opus limit") is LimitWindow.UNKNOWN


def test_machine_zone_follows_tz_with_its_dst_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    zone = machine_zone()
    # Real rules, not a fixed offset: summer and winter differ.
    summer = datetime(2026, 7, 1, tzinfo=zone).utcoffset()
    winter = datetime(2026, 12, 1, tzinfo=zone).utcoffset()
    assert summer is not None and winter is not None and summer != winter
    monkeypatch.setenv("TZ", "Not/AZone")
    assert machine_zone() is not None  # falls back without raising


def test_the_limit_patterns_are_not_compiled_at_import() -> None:
    """Most scans meet no limit line: loading the module compiles none of its patterns (~0.5 ms
    of every scan's start-up), and they still match once used."""
    import subprocess
    import sys

    probe = (
        "import re, sys\n"
        "from node_agent.sources import _claude_limits as m\n"
        "sys.exit(any(isinstance(v, re.Pattern) for v in vars(m).values()))\n"
    )
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
    assert is_limit_text("Claude AI usage limit reached|1760000000")

"""The hub's profile board: a profile's state is decided at read time from its events and calls."""

from __future__ import annotations

from pathlib import Path

import msgspec

from hub.profile_board import IDLE_AFTER_S, ProfileBoard, WindowReading
from hub.service import FleetService
from hub.store import Store
from pricing import PriceBook
from shared.events import Agent, LimitEvent, LimitKind, LimitWindow, ProfileEvent, ProfileState

T0 = 1_800_000_000.0


def pe(ts: float, state: ProfileState, **kw: object) -> ProfileEvent:
    return ProfileEvent(f"pe-{ts}-{state}", ts, "spark01", "max-a", Agent.CLAUDE_CODE, state, **kw)  # type: ignore[arg-type]


def hit(ts: float, resets_at: float | None) -> LimitEvent:
    return LimitEvent(
        f"hit-{ts}",
        ts,
        Agent.CLAUDE_CODE,
        LimitKind.RATE_LIMIT_HIT,
        resets_at=resets_at,
        message="usage limit reached",
        machine="spark01",
        profile="max-a",
    )


def reading(ts: float, window: LimitWindow, used: float, resets_at: float) -> LimitEvent:
    return LimitEvent(
        f"q-{ts}-{window}",
        ts,
        Agent.CODEX,
        LimitKind.QUOTA_SNAPSHOT,
        window,
        used_percent=used,
        resets_at=resets_at,
        machine="spark01",
        profile="max-a",
    )


KEY = "spark01/max-a"


def test_calls_make_a_profile_active_then_idle() -> None:
    board = ProfileBoard()
    assert board.standing(KEY, T0).state is ProfileState.IDLE
    board.note_call("spark01", "max-a", T0)
    assert board.standing(KEY, T0 + 60).state is ProfileState.ACTIVE
    assert board.standing(KEY, T0 + IDLE_AFTER_S + 1).state is ProfileState.IDLE


def test_a_rate_limit_lasts_until_its_reset_then_ends_without_an_event() -> None:
    board = ProfileBoard()
    board.note_call("spark01", "max-a", T0 - 10)
    board.add_profile_event(pe(T0, ProfileState.RATE_LIMITED, until=T0 + 3600, reason="5h"))
    limited = board.standing(KEY, T0 + 60)
    assert limited.state is ProfileState.RATE_LIMITED
    assert limited.until == T0 + 3600
    assert board.standing(KEY, T0 + 3601).state is not ProfileState.RATE_LIMITED


def test_a_limit_hit_alone_limits_the_profile_and_one_without_reset_is_open_ended() -> None:
    board = ProfileBoard()
    assert board.add_limit(hit(T0, T0 + 900)) == KEY
    assert board.standing(KEY, T0 + 1).state is ProfileState.RATE_LIMITED
    assert board.standing(KEY, T0 + 901).state is ProfileState.IDLE
    board.add_limit(hit(T0 + 1000, None))
    standing = board.standing(KEY, T0 + 5000)
    assert standing.state is ProfileState.RATE_LIMITED
    assert standing.until is None


def test_switched_away_holds_until_the_profile_is_used_again() -> None:
    board = ProfileBoard()
    board.add_profile_event(pe(T0, ProfileState.SWITCHED_AWAY, switched_to="max-b"))
    away = board.standing(KEY, T0 + 10)
    assert (away.state, away.switched_to) == (ProfileState.SWITCHED_AWAY, "max-b")
    board.note_call("spark01", "max-a", T0 + 20)
    assert board.standing(KEY, T0 + 30).state is ProfileState.ACTIVE


def test_events_arriving_out_of_order_keep_the_latest() -> None:
    board = ProfileBoard()
    board.add_profile_event(pe(T0 + 100, ProfileState.ACTIVE))
    board.add_profile_event(pe(T0, ProfileState.RATE_LIMITED, until=T0 + 9999))
    assert board.standing(KEY, T0 + 200).state is not ProfileState.RATE_LIMITED
    assert [e.ts for e in board.history(KEY)] == [T0, T0 + 100]


def test_window_readings_keep_the_latest_and_expire_at_their_reset() -> None:
    board = ProfileBoard()
    board.add_limit(reading(T0, LimitWindow.FIVE_HOUR, 40, T0 + 3600))
    board.add_limit(reading(T0 + 60, LimitWindow.FIVE_HOUR, 55, T0 + 3600))
    board.add_limit(reading(T0 + 30, LimitWindow.FIVE_HOUR, 45, T0 + 3600))  # older, late
    board.add_limit(reading(T0, LimitWindow.WEEKLY, 12, T0 + 7 * 86400))
    windows = board.standing(KEY, T0 + 120).windows
    assert windows[LimitWindow.FIVE_HOUR].used_percent == 55
    assert windows[LimitWindow.WEEKLY].used_percent == 12
    later = board.standing(KEY, T0 + 3700).windows
    assert LimitWindow.FIVE_HOUR not in later
    assert LimitWindow.WEEKLY in later


def test_limits_without_a_profile_are_not_filed() -> None:
    board = ProfileBoard()
    event = LimitEvent("x", T0, Agent.CODEX, LimitKind.RATE_LIMIT_HIT, machine="spark01")
    assert board.add_limit(event) is None


def test_quota_readings_reach_the_feed_only_when_they_cross_a_band() -> None:
    from hub._feed import _crosses_a_band

    reset = T0 + 3600
    seen: WindowReading | None = None
    fed = []
    for used in (10, 30, 49, 51, 60, 76, 74, 91, 100):
        event = reading(T0 + used, LimitWindow.FIVE_HOUR, used, reset)
        if _crosses_a_band(event, seen):
            fed.append(used)
        seen = WindowReading(event.used_percent, event.resets_at, event.ts)
    assert fed == [51, 76, 91, 100]
    # a new window starts counting from zero again
    fresh = reading(T0 + 5000, LimitWindow.FIVE_HOUR, 55, reset + 18_000)
    assert _crosses_a_band(fresh, seen)


def test_two_readings_of_a_window_in_one_batch_make_one_feed_line(tmp_path: Path) -> None:
    """The demo's duplicate: a node's batch held two of codex-pro's weekly readings (one per
    call); both were judged against the reading before the batch, so both crossed 50 %."""
    service = FleetService(Store.in_dir(tmp_path), PriceBook.default(), clock=lambda: T0 + 60)
    week = T0 + 5 * 86_400
    first = msgspec.structs.replace(
        reading(T0 + 1, LimitWindow.WEEKLY, 60.2, week), machine="spark02"
    )
    second = msgspec.structs.replace(
        reading(T0 + 2, LimitWindow.WEEKLY, 60.4, week), machine="spark02"
    )
    service.ingest("spark02", "events", 1, 2, [second, first])  # order in a batch: any
    third = msgspec.structs.replace(
        reading(T0 + 3, LimitWindow.WEEKLY, 60.6, week), machine="spark02"
    )
    service.ingest("spark02", "events", 3, 3, [third])
    lines = [item.text for item in service.recent_feed(50) if item.kind == "limit"]
    assert lines == ["max-a has used 60% of its weekly window"]

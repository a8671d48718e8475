"""Profile timelines: limits from the logs, quota readings, switches, and attribution by time."""

from __future__ import annotations

from pathlib import Path

from node_agent.identity import Identity, IdentitySwitch
from node_agent.timeline import UNKNOWN_RESET_S, ProfileTimeline
from shared.config import Billing, NodeConfig, Profile
from shared.events import (
    Agent,
    LimitEvent,
    LimitKind,
    LimitWindow,
    ProfileEvent,
    ProfileState,
)

T0 = 1_790_000_000.0
SHARED = Path("/srv/claude-shared")
PROFILES = (
    Profile("max-a", Agent.CLAUDE_CODE, SHARED, Billing.SUBSCRIPTION, "a@example.com"),
    Profile("max-b", Agent.CLAUDE_CODE, SHARED, Billing.SUBSCRIPTION, "uuid-b"),
    Profile("pro", Agent.CODEX, Path("/srv/codex"), Billing.SUBSCRIPTION, "acct-pro"),
)
CONFIG = NodeConfig(node="spark01", profiles=PROFILES)


def hit(profile: str, at: float, resets_at: float | None, session: str = "s1") -> LimitEvent:
    return LimitEvent(
        event_id=f"{session}:{at}",
        ts=at,
        agent=Agent.CODEX,
        kind=LimitKind.RATE_LIMIT_HIT,
        window=LimitWindow.FIVE_HOUR,
        resets_at=resets_at,
        message="You've hit your usage limit.",
        profile=profile,
        session_id=session,
    )


def quota(at: float, window: LimitWindow, used: float, resets_at: float) -> LimitEvent:
    minutes = 300 if window is LimitWindow.FIVE_HOUR else 10080
    return LimitEvent(
        event_id=f"q:{at}:{window}",
        ts=at,
        agent=Agent.CODEX,
        kind=LimitKind.QUOTA_SNAPSHOT,
        window=window,
        window_minutes=minutes,
        used_percent=used,
        resets_at=resets_at,
        plan_type="pro",
        profile="pro",
    )


def login(identity: Identity | None, at: float) -> IdentitySwitch:
    return IdentitySwitch(Agent.CLAUDE_CODE, SHARED, identity, at, str(SHARED / ".claude.json"))


A = Identity("uuid-a", "A@example.com", "org-1")
B = Identity("uuid-b", "b@example.com", "org-1")


def test_a_limit_hit_rate_limits_until_its_reset() -> None:
    timeline = ProfileTimeline(CONFIG)
    reset = T0 + 3600
    assert timeline.add_limit(hit("pro", T0, reset))
    # Other sessions hitting the same limit add nothing.
    assert not timeline.add_limit(hit("pro", T0 + 60, reset + 1, session="s2"))
    (event,) = timeline.drain()
    assert (event.profile, event.state, event.until) == ("pro", ProfileState.RATE_LIMITED, reset)
    assert event.machine == "spark01" and event.account == "acct-pro"
    assert timeline.drain() == []
    assert timeline.state("pro", T0 - 1) is ProfileState.IDLE
    assert timeline.state("pro", T0 + 10) is ProfileState.RATE_LIMITED
    assert timeline.state("pro", reset + 1) is ProfileState.IDLE  # expired by itself


def test_limit_ids_are_stable_across_restarts() -> None:
    first, second = ProfileTimeline(CONFIG), ProfileTimeline(CONFIG)
    first.add_limit(hit("pro", T0, T0 + 3600))
    second.add_limit(hit("pro", T0 + 5, T0 + 3600, session="other"))  # read in another order
    assert [e.event_id for e in first.drain()] == [e.event_id for e in second.drain()]


def test_a_hit_without_reset_time_lasts_a_few_minutes() -> None:
    timeline = ProfileTimeline(CONFIG)
    timeline.add_limit(hit("pro", T0, None))
    assert not timeline.add_limit(hit("pro", T0 + 30, None))  # the same episode
    (event,) = timeline.drain()
    assert event.until is None
    assert timeline.state("pro", T0 + UNKNOWN_RESET_S - 1) is ProfileState.RATE_LIMITED
    assert timeline.state("pro", T0 + UNKNOWN_RESET_S + 1) is ProfileState.IDLE
    # A reset in the past says nothing about when this refusal ends.
    timeline.add_limit(hit("pro", T0 + 7200, T0 + 7000))
    assert timeline.drain()[0].until is None


def test_quota_readings_keep_window_usage() -> None:
    timeline = ProfileTimeline(CONFIG)
    timeline.add_limit(quota(T0 + 10, LimitWindow.FIVE_HOUR, 42.0, T0 + 9000))
    timeline.add_limit(quota(T0, LimitWindow.FIVE_HOUR, 12.0, T0 + 9000))  # older, read later
    timeline.add_limit(quota(T0, LimitWindow.WEEKLY, 71.5, T0 + 400_000))
    usage = timeline.usage("pro")
    assert usage[LimitWindow.FIVE_HOUR].used_percent == 42.0
    assert usage[LimitWindow.WEEKLY].used_percent == 71.5
    assert usage[LimitWindow.WEEKLY].window_minutes == 10080
    assert timeline.status("pro", T0 + 20).usage == usage
    assert timeline.drain() == []  # readings are not state changes
    assert timeline.state("pro", T0 + 20) is ProfileState.IDLE
    # A window at 100 % is a limit until it resets.
    timeline.add_limit(quota(T0 + 30, LimitWindow.FIVE_HOUR, 100.0, T0 + 9000))
    assert timeline.state("pro", T0 + 40) is ProfileState.RATE_LIMITED
    assert timeline.status("pro", T0 + 40).until == T0 + 9000


def switch(profile: str, state: ProfileState, at: float, to: str | None = None) -> ProfileEvent:
    return ProfileEvent(
        f"status:{profile}:{state}:{at}",
        at,
        "spark01",
        profile,
        Agent.CLAUDE_CODE,
        state,
        switched_to=to,
        reason="rate_limited",
    )


def test_status_file_switches_decide_the_profile_of_a_shared_home() -> None:
    timeline = ProfileTimeline(CONFIG)
    for event in (
        switch("max-a", ProfileState.ACTIVE, T0),
        switch("max-a", ProfileState.SWITCHED_AWAY, T0 + 100, to="max-b"),
        switch("max-b", ProfileState.ACTIVE, T0 + 100),
    ):
        assert timeline.add_profile_event(event)
    assert not timeline.add_profile_event(switch("max-a", ProfileState.ACTIVE, T0))
    assert len(timeline.drain()) == 3
    at = timeline.profile_at
    assert at(Agent.CLAUDE_CODE, SHARED, T0 - 1) is None  # nothing tells yet
    assert at(Agent.CLAUDE_CODE, SHARED, T0 + 50) == "max-a"
    assert at(Agent.CLAUDE_CODE, SHARED / "projects" / "x.jsonl", T0 + 100) == "max-b"
    # A home with one profile needs no timeline; an unknown home has no profile.
    assert at(Agent.CODEX, Path("/srv/codex/sessions"), T0) == "pro"
    assert at(Agent.CODEX, Path("/elsewhere"), T0) is None
    assert at(Agent.GEMINI, SHARED, T0 + 50) is None
    status = timeline.status("max-a", T0 + 200)
    assert (status.state, status.switched_to) == (ProfileState.SWITCHED_AWAY, "max-b")


def test_switched_away_for_a_limit_is_ready_again_when_it_passes() -> None:
    timeline = ProfileTimeline(CONFIG)
    timeline.add_profile_event(switch("max-a", ProfileState.ACTIVE, T0))
    timeline.add_limit(hit("max-a", T0 + 10, T0 + 1000))
    timeline.add_profile_event(switch("max-a", ProfileState.SWITCHED_AWAY, T0 + 11, to="max-b"))
    assert timeline.state("max-a", T0 + 500) is ProfileState.RATE_LIMITED
    assert timeline.state("max-a", T0 + 1001) is ProfileState.IDLE
    # Switched away on a schedule, with no limit: it stays switched away.
    timeline.add_profile_event(switch("max-b", ProfileState.SWITCHED_AWAY, T0 + 2000, to="x"))
    assert timeline.state("max-b", T0 + 3000) is ProfileState.SWITCHED_AWAY


def test_logins_map_to_profiles_by_account() -> None:
    timeline = ProfileTimeline(CONFIG)
    assert timeline.add_identity(login(A, T0))  # email, any case
    assert not timeline.add_identity(login(A, T0 + 5))  # the same login again
    assert timeline.add_identity(login(B, T0 + 100))  # account uuid
    events = timeline.drain()
    assert [(e.profile, e.state, e.switched_to) for e in events] == [
        ("max-a", ProfileState.ACTIVE, None),
        ("max-a", ProfileState.SWITCHED_AWAY, "max-b"),
        ("max-b", ProfileState.ACTIVE, None),
    ]
    assert events[1].ts == T0 + 100 and events[1].reason == "login changed"
    assert timeline.profile_at(Agent.CLAUDE_CODE, SHARED, T0 + 99) == "max-a"
    assert timeline.profile_at(Agent.CLAUDE_CODE, SHARED, T0 + 100) == "max-b"
    # The same observations in a fresh timeline give the same ids.
    again = ProfileTimeline(CONFIG)
    again.add_identity(login(A, T0))
    again.add_identity(login(B, T0 + 100))
    assert [e.event_id for e in again.drain()] == [e.event_id for e in events]


def test_an_unknown_login_or_logout_leaves_the_home_unattributed() -> None:
    timeline = ProfileTimeline(CONFIG)
    timeline.add_identity(login(A, T0))
    stranger = Identity("uuid-z", "z@example.com")
    assert timeline.add_identity(login(stranger, T0 + 50))
    assert timeline.profile_at(Agent.CLAUDE_CODE, SHARED, T0 + 60) is None
    timeline.add_identity(login(B, T0 + 70))
    assert timeline.add_identity(login(None, T0 + 80))
    assert timeline.drain()[-1].reason == "logged out"
    assert timeline.profile_at(Agent.CLAUDE_CODE, SHARED, T0 + 75) == "max-b"
    assert timeline.profile_at(Agent.CLAUDE_CODE, SHARED, T0 + 85) is None


def test_identity_of_a_home_with_one_profile_changes_nothing() -> None:
    timeline = ProfileTimeline(CONFIG)
    codex = IdentitySwitch(Agent.CODEX, Path("/srv/codex"), Identity("other"), T0, "auth.json")
    assert not timeline.add_identity(codex)
    assert timeline.drain() == [] and timeline.profile_at(Agent.CODEX, Path("/srv/codex"), T0)


def test_restored_events_are_not_sent_again() -> None:
    sent = ProfileTimeline(CONFIG)
    sent.add_identity(login(A, T0))
    earlier = sent.drain()
    timeline = ProfileTimeline(CONFIG)
    timeline.restore(earlier)
    # After a restart the watcher reports the current login again, with a newer mtime.
    assert not timeline.add_identity(login(A, T0 + 500))
    assert timeline.drain() == []
    assert timeline.profile_at(Agent.CLAUDE_CODE, SHARED, T0 + 1) == "max-a"

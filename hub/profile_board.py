"""Where each auth profile stands now: active, idle, rate-limited until T, switched away to P;
and the latest official reading of its 5-hour and weekly windows.

Built from what the nodes send (profile events from their timelines and status files, limit
events from the logs) and from the time of each profile's latest call. The state is decided
when it is read, against the clock, so a limit whose reset has passed ends without any event,
as on the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from hub.ledger import profile_key
from shared.events import LimitEvent, LimitKind, LimitWindow, ProfileEvent, ProfileState

IDLE_AFTER_S: Final = 600.0  # a profile with no call for this long is idle


@dataclass(frozen=True, slots=True)
class WindowReading:
    used_percent: float | None
    resets_at: float | None
    ts: float  # when the agent logged it


@dataclass(frozen=True, slots=True)
class ProfileStanding:
    """A profile's state as of `now`: what the profiles view shows."""

    state: ProfileState
    since: float | None  # when the deciding event happened (None: no event, no call)
    # RATE_LIMITED: its reset (None: unknown); SWITCHED_AWAY: the reset of a limit still in
    # force (the usual reason for the switch), None when none is
    until: float | None = None
    switched_to: str | None = None
    reason: str | None = None
    windows: dict[LimitWindow, WindowReading] = field(default_factory=dict)
    last_call: float | None = None


@dataclass(slots=True)
class _Profile:
    latest: ProfileEvent | None = None
    hit: LimitEvent | None = None  # the latest rate-limit hit
    limited: ProfileEvent | None = None  # the latest rate-limited event
    windows: dict[LimitWindow, WindowReading] = field(default_factory=dict)
    last_call: float | None = None
    history: list[ProfileEvent] = field(default_factory=list)


HISTORY: Final = 50  # profile events kept per profile for the detail view


class ProfileBoard:
    """Not thread-safe: the hub service calls it under its lock. Keys are "machine/profile"."""

    def __init__(self) -> None:
        self._profiles: dict[str, _Profile] = {}

    def _of(self, key: str) -> _Profile:
        p = self._profiles.get(key)
        if p is None:
            p = self._profiles[key] = _Profile()
        return p

    def add_profile_event(self, event: ProfileEvent) -> str:
        key = profile_key(event.machine, event.profile)
        p = self._of(key)
        if p.latest is None or event.ts >= p.latest.ts:
            p.latest = event
        limited = event.state is ProfileState.RATE_LIMITED
        if limited and (p.limited is None or event.ts >= p.limited.ts):
            p.limited = event
        p.history.append(event)
        p.history.sort(key=lambda e: e.ts)
        del p.history[:-HISTORY]
        return key

    def add_limit(self, event: LimitEvent) -> str | None:
        if event.profile is None:
            return None
        key = profile_key(event.machine, event.profile)
        p = self._of(key)
        if event.kind is LimitKind.RATE_LIMIT_HIT:
            if p.hit is None or event.ts >= p.hit.ts:
                p.hit = event
        elif event.window in (LimitWindow.FIVE_HOUR, LimitWindow.WEEKLY):
            old = p.windows.get(event.window)
            if old is None or event.ts >= old.ts:
                p.windows[event.window] = WindowReading(
                    event.used_percent, event.resets_at, event.ts
                )
        return key

    def window(self, key: str, window: LimitWindow) -> WindowReading | None:
        p = self._profiles.get(key)
        return p.windows.get(window) if p else None

    def note_call(self, machine: str, profile: str, ts: float) -> None:
        p = self._of(profile_key(machine, profile))
        if p.last_call is None or ts > p.last_call:
            p.last_call = ts

    def history(self, key: str) -> list[ProfileEvent]:
        p = self._profiles.get(key)
        return list(p.history) if p else []

    def standing(self, key: str, now: float) -> ProfileStanding:
        p = self._profiles.get(key) or _Profile()
        # Window readings whose reset has passed say nothing about the new window.
        windows = {w: r for w, r in p.windows.items() if r.resets_at is None or r.resets_at > now}
        latest = p.latest
        hit = p.hit
        if hit is not None and (latest is None or hit.ts > latest.ts):
            # A hit the node's timeline has not (yet) turned into a profile event.
            until = hit.resets_at
            if until is None or until > now:
                return ProfileStanding(
                    ProfileState.RATE_LIMITED,
                    hit.ts,
                    until,
                    reason=hit.message,
                    windows=windows,
                    last_call=p.last_call,
                )
        if latest is not None:
            limited = latest.state is ProfileState.RATE_LIMITED
            if limited and (latest.until is None or latest.until > now):
                return ProfileStanding(
                    ProfileState.RATE_LIMITED,
                    latest.ts,
                    latest.until,
                    reason=latest.reason,
                    windows=windows,
                    last_call=p.last_call,
                )
            called_since = p.last_call is not None and p.last_call > latest.ts
            if latest.state is ProfileState.SWITCHED_AWAY and not called_since:
                return ProfileStanding(
                    ProfileState.SWITCHED_AWAY,
                    latest.ts,
                    _reset_in_force(p, now),
                    switched_to=latest.switched_to,
                    reason=latest.reason,
                    windows=windows,
                    last_call=p.last_call,
                )
        busy = p.last_call is not None and now - p.last_call < IDLE_AFTER_S
        since = p.last_call if busy or latest is None else max(latest.ts, p.last_call or 0.0)
        return ProfileStanding(
            ProfileState.ACTIVE if busy else ProfileState.IDLE,
            since,
            windows=windows,
            last_call=p.last_call,
        )


def _reset_in_force(p: _Profile, now: float) -> float | None:
    """The reset of the latest limit (a hit, or a rate-limited event) still in force at `now`."""
    limits = []
    if p.hit is not None and p.hit.resets_at is not None:
        limits.append((p.hit.ts, p.hit.resets_at))
    if p.limited is not None and p.limited.until is not None:
        limits.append((p.limited.ts, p.limited.until))
    latest = max(limits, default=None)
    return latest[1] if latest is not None and latest[1] > now else None

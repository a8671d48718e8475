"""The feed's words: one line in plain language per thing that happened, stamped with when it
happened.

A rate limit reaches the hub several times over: the agent's log says it was refused, the
node's timeline turns that into a rate-limited event, and a scheduler's status file may say
it again; a switch comes as "switched away" for one profile and "active" for the other. Each
is one happening and gets one line: a limit is told once per reset time, the "active" half of
a switch is part of the switch's line, and a limit hit and the switch it caused, learned
together, share a line ("max-a hit its rate limit (resets 14:00) · claude-code switched to
max-b"). Not thread-safe: the service calls it under its lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Final

from hub.profile_board import WindowReading
from shared.events import LimitEvent, LimitKind, LimitWindow, ProfileEvent, ProfileState

# Two limits of one profile whose resets differ by less than this are the same limit (the
# node's own rule); a limit with no reset time is the same as one hit within SAME_HIT_S.
SAME_RESET_S: Final = 90.0
SAME_HIT_S: Final = 300.0
# A quota reading reaches the feed when it crosses one of these (percent used): agents log
# one with every call, and the profiles view shows the figure anyway.
FEED_BANDS: Final = (50.0, 75.0, 90.0, 100.0)
NEW_WINDOW_S: Final = 600.0  # a reset this much later than the last reading's: a new window
_WINDOW_WORDS: Final = {LimitWindow.FIVE_HOUR: "5-hour", LimitWindow.WEEKLY: "weekly"}
_REASON_WORDS: Final = {"rate_limited": "rate limit", "active changed": "active profile changed"}
_MEMORY: Final = 64  # limits remembered per profile


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One line of the event feed: something an operator should notice."""

    ts: float  # when it happened
    kind: str  # node | limit | profile | session | command | auth
    machine: str
    text: str


class FeedWords:
    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        # (machine, profile) -> (reset or None, hit time) of the limits told, newest last
        self._limits: dict[tuple[str, str], list[tuple[float | None, float]]] = {}

    def limits_and_switches(
        self,
        node: str,
        limits: list[LimitEvent],
        events: list[ProfileEvent],
        previous: Callable[[LimitEvent], WindowReading | None],
    ) -> list[FeedItem]:
        """The lines for a batch's limit and profile events (`previous`: the window's reading
        before `limit`, to tell a quota band crossed)."""
        hits: dict[str, FeedItem] = {}  # profile -> its limit line in this batch
        out: list[FeedItem] = []
        # The board learns a batch's readings only after this: a batch holding two readings
        # of one window (an agent logs one per call) must judge the second against the first,
        # or both cross the same band and the feed says it twice.
        read: dict[tuple[str | None, LimitWindow], WindowReading] = {}
        for limit in sorted(limits, key=lambda event: event.ts):
            if limit.kind is LimitKind.RATE_LIMIT_HIT:
                who = limit.profile or limit.agent.value
                hit = self._limit(node, who, limit.ts, limit.resets_at, _window(limit.window))
                if hit is not None:
                    hits[who] = hit
                continue
            window = (limit.profile, limit.window)
            if _crosses_a_band(limit, read.get(window) or previous(limit)):
                out.append(_quota(node, limit))
            read[window] = WindowReading(limit.used_percent, limit.resets_at, limit.ts)
        for e in events:  # limits first: a switch they caused shares their line
            if e.state is ProfileState.RATE_LIMITED:
                hit = self._limit(node, e.profile, e.ts, e.until, e.reason)
                if hit is not None:
                    hits[e.profile] = hit
        switches = {(e.switched_to, e.ts) for e in events if e.state is ProfileState.SWITCHED_AWAY}
        for e in events:
            if e.state is ProfileState.SWITCHED_AWAY:
                out.append(_switch(node, e, hits.pop(e.profile, None)))
            elif e.state is ProfileState.ACTIVE and (e.profile, e.ts) not in switches:
                out.append(FeedItem(e.ts, "profile", node, f"{e.agent} now uses {e.profile}"))
            elif e.state is ProfileState.IDLE:
                out.append(FeedItem(e.ts, "profile", node, f"{e.profile} is idle"))
        out.extend(hits.values())
        out.sort(key=lambda item: item.ts)
        return out

    def _limit(
        self, node: str, who: str, ts: float, until: float | None, reason: str | None
    ) -> FeedItem | None:
        """The line for a limit of `who`, or None when it was told already."""
        told = self._limits.setdefault((node, who), [])
        for reset, hit in told:
            if until is not None and reset is not None and abs(until - reset) < SAME_RESET_S:
                return None
            if (until is None or reset is None) and abs(ts - hit) < SAME_HIT_S:
                return None
        told.append((until, ts))
        del told[:-_MEMORY]
        details = [_words(reason)] if reason else []
        details.append(f"resets {self._when(until, ts)}" if until else "reset time unknown")
        return FeedItem(ts, "limit", node, f"{who} hit its rate limit ({', '.join(details)})")

    def _when(self, at: float, now: float) -> str:
        """14:00 today, "Tue 14:00" later in the week, else the date too."""
        when = datetime.fromtimestamp(at, self.tz)
        today = datetime.fromtimestamp(now, self.tz).date()
        days = (when.date() - today).days
        if days == 0:
            return when.strftime("%H:%M")
        if 0 < days < 7:
            return when.strftime("%a %H:%M")
        return when.strftime("%Y-%m-%d %H:%M")


def _switch(node: str, e: ProfileEvent, hit: FeedItem | None) -> FeedItem:
    if e.switched_to is None:
        text = f"{e.agent} stopped using {e.profile}"
    elif hit is not None:
        text = f"{e.agent} switched to {e.switched_to}"
    else:
        text = f"{e.agent} switched from {e.profile} to {e.switched_to}"
    if hit is not None:
        return FeedItem(hit.ts, "limit", node, f"{hit.text} · {text}")
    if e.reason:
        text += f" ({_words(e.reason)})"
    return FeedItem(e.ts, "profile", node, text)


def _quota(node: str, limit: LimitEvent) -> FeedItem:
    who = limit.profile or limit.agent.value
    used = f"{limit.used_percent:.0f}%" if limit.used_percent is not None else "?"
    window = _window(limit.window) or "quota window"
    return FeedItem(limit.ts, "limit", node, f"{who} has used {used} of its {window}")


def _window(window: LimitWindow) -> str | None:
    words = _WINDOW_WORDS.get(window)
    return f"{words} window" if words else None


def _words(reason: str) -> str:
    """A reason as a person would say it (the wire's words are identifiers)."""
    return _REASON_WORDS.get(reason, reason.replace("_", " "))


def _crosses_a_band(limit: LimitEvent, previous: WindowReading | None) -> bool:
    used = limit.used_percent
    if used is None:
        return False
    before = 0.0  # a first reading, or one of a new window
    if previous is not None and previous.used_percent is not None:
        new_window = (
            previous.resets_at is not None
            and limit.resets_at is not None
            and limit.resets_at - previous.resets_at > NEW_WINDOW_S
        )
        if not new_window:
            before = previous.used_percent
    return any(before < band <= used for band in FEED_BANDS)

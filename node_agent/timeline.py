"""Per-profile timelines on the node: who was active, rate-limited until when, switched to whom.

Fed by three things, all in any order (a restart re-reads old logs):
- the status file's `ProfileEvent`s (`add_profile_event`): switches and limits a scheduler made;
- the sources' `LimitEvent`s (`add_limit`), already attributed to a profile: a rate-limit hit
  makes the profile RATE_LIMITED until its reset (a hit without a reset time: until unknown,
  taken as `UNKNOWN_RESET_S`); a quota reading keeps the window's usage (`usage()`), and a
  reading at 100 % with a future reset is a limit too;
- identity switches (`add_identity`) for homes that several profiles share: the login is mapped
  to a profile by the profile's `account`.

What changed comes out of `drain()` as `ProfileEvent`s, each id once; ids depend only on what
was observed (profile, reset time, switch time), so the same logs read after a restart give the
same ids and the hub keeps one of each. A limit ends when its `until` passes; no event is sent
for that, since the hub knows `until` too. `restore()` loads events a previous run sent, so a
restart does not report the current login again.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from node_agent.identity import IdentitySwitch
from shared.config import NodeConfig, Profile
from shared.events import Agent, LimitEvent, LimitKind, LimitWindow, ProfileEvent, ProfileState

log = logging.getLogger(__name__)

# A refusal without a reset time is most often a short per-minute API limit.
UNKNOWN_RESET_S: Final = 300.0
# Two hits whose resets differ by less than this are one limit (Codex's old relative resets
# drift by the write jitter of each line).
SAME_RESET_S: Final = 90.0
MAX_EVENTS_PER_PROFILE: Final = 2000  # a daemon runs for months; old history is the hub's
_PRESENCE: Final = (ProfileState.ACTIVE, ProfileState.SWITCHED_AWAY, ProfileState.IDLE)


def profile_event_id(machine: str, *parts: object) -> str:
    """A stable id from what was observed (never from when it was read)."""
    blob = orjson.dumps([machine, *(str(p) if p is not None else None for p in parts)])
    return "pe-" + hashlib.sha256(blob).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """The latest official reading of one quota window (Codex `rate_limits`)."""

    window: LimitWindow
    window_minutes: int | None
    used_percent: float | None
    resets_at: float | None
    ts: float  # when it was read (the log line's time)
    plan_type: str | None = None


@dataclass(frozen=True, slots=True)
class ProfileStatus:
    profile: str
    state: ProfileState
    since: float | None  # time of the event that decided the state
    until: float | None = None  # RATE_LIMITED: when it ends (None: unknown)
    switched_to: str | None = None
    reason: str | None = None
    usage: dict[LimitWindow, WindowUsage] = field(default_factory=dict)


_Entry = tuple[float, int, ProfileEvent]  # (ts, arrival order, event): sorts by time, then order


@dataclass(slots=True)
class _History:
    presence: list[_Entry] = field(default_factory=list)  # ACTIVE / SWITCHED_AWAY / IDLE
    limits: list[_Entry] = field(default_factory=list)  # RATE_LIMITED
    usage: dict[LimitWindow, WindowUsage] = field(default_factory=dict)


class ProfileTimeline:
    def __init__(self, config: NodeConfig) -> None:
        self.machine = config.node
        self.profiles: dict[str, Profile] = {p.name: p for p in config.profiles}
        self._homes = {p.name: p.home.expanduser().resolve() for p in config.profiles}
        self._history: dict[str, _History] = {}
        self._seen: set[str] = set()
        self._pending: list[ProfileEvent] = []
        self._order = 0
        self._resolved: dict[Path, Path] = {}  # profile_at runs per event: spare the syscalls

    # -- input ------------------------------------------------------------------------------

    def add_profile_event(self, event: ProfileEvent) -> bool:
        """Record an event (from the status file); True when it was new."""
        return self._record(event, emit=True)

    def restore(self, events: Iterable[ProfileEvent]) -> None:
        """Events already sent by an earlier run: recorded, never sent again."""
        for event in events:
            self._record(event, emit=False)

    def add_limit(self, event: LimitEvent) -> bool:
        """A limit event from a source, with its profile set; True when it changed a timeline."""
        profile = event.profile
        if profile is None:
            return False  # unattributed: no timeline to put it on
        if event.kind is LimitKind.QUOTA_SNAPSHOT:
            self._note_usage(profile, event)
            full = event.used_percent is not None and event.used_percent >= 100.0
            if not (full and event.resets_at is not None and event.resets_at > event.ts):
                return False
        until = (
            event.resets_at if event.resets_at is not None and event.resets_at > event.ts else None
        )
        if self._known_limit(profile, event.ts, until):
            return False
        # One limit instance: its reset minute, or (no reset known) the minute it was hit.
        key: tuple[object, ...] = (
            ("limit", profile, round(until / 60))
            if until is not None
            else ("limit", profile, None, math.floor(event.ts / 60))
        )
        named = event.window in (LimitWindow.FIVE_HOUR, LimitWindow.WEEKLY)
        reason = event.message or (f"{event.window.value} window" if named else None)
        return self._record(
            ProfileEvent(
                event_id=profile_event_id(self.machine, *key),
                ts=event.ts,
                machine=self.machine,
                profile=profile,
                agent=event.agent,
                state=ProfileState.RATE_LIMITED,
                until=until,
                reason=reason,
                account=event.account or self._account(profile),
                origin=event.origin,
            ),
            emit=True,
        )

    def add_identity(self, switch: IdentitySwitch) -> bool:
        """A home's login as first read or after a change; True when a profile switch followed."""
        home = self._resolve(switch.home)
        candidates = [
            p
            for p in self.profiles.values()
            if p.agent is switch.agent and self._homes[p.name] == home
        ]
        if len(candidates) < 2:
            return False  # the directory alone tells the profile
        matched = self._match(switch, candidates)
        before = self.profile_at(switch.agent, home, switch.ts)
        if matched == before:
            return False
        reason = "login changed" if switch.identity is not None else "logged out"
        key = ("identity", switch.agent, home, before, matched, round(switch.ts * 1000))
        changed = False
        if before is not None:
            changed |= self._record(
                self._event(
                    (*key, "away"), switch, before, ProfileState.SWITCHED_AWAY, reason, matched
                ),
                emit=True,
            )
        if matched is not None:
            changed |= self._record(
                self._event((*key, "active"), switch, matched, ProfileState.ACTIVE, reason),
                emit=True,
            )
        return changed

    def drain(self) -> list[ProfileEvent]:
        """The events recorded since the last drain, to be sent to the hub."""
        pending, self._pending = self._pending, []
        return pending

    # -- questions --------------------------------------------------------------------------

    def profile_at(self, agent: Agent, home: Path, ts: float) -> str | None:
        """The profile in use by `agent` in `home` (or any path inside it) at `ts`.

        One configured profile there: that one. Several: the one whose latest switch or login
        at or before `ts` made it active; None when nothing tells.
        """
        candidates = self._candidates(agent, self._resolve(home))
        if len(candidates) < 2:
            return candidates[0] if candidates else None
        latest: _Entry | None = None
        for name in candidates:
            entries = self._history[name].presence if name in self._history else []
            index = bisect.bisect_right(entries, (ts, math.inf)) - 1
            if index >= 0 and (latest is None or entries[index][:2] > latest[:2]):
                latest = entries[index]
        if latest is None:
            return None
        event = latest[2]
        if event.state is ProfileState.ACTIVE:
            return event.profile
        return event.switched_to if event.switched_to in candidates else None

    def state(self, profile: str, now: float) -> ProfileState:
        return self.status(profile, now).state

    def status(self, profile: str, now: float) -> ProfileStatus:
        history = self._history.get(profile, _History())
        base = _latest(history.presence, now)
        usage = dict(history.usage)
        started = history.limits[: bisect.bisect_right(history.limits, (now, math.inf))]
        # The limit that ends last among those hit by `now` (a weekly one outlasts a 5h one).
        limit = max((e[2] for e in started), key=_limit_end, default=None)
        if limit is not None and _limit_end(limit) > now:
            return ProfileStatus(
                profile,
                ProfileState.RATE_LIMITED,
                limit.ts,
                limit.until,
                reason=limit.reason,
                usage=usage,
            )
        if base is None:
            return ProfileStatus(profile, ProfileState.IDLE, None, usage=usage)
        if base.state is ProfileState.SWITCHED_AWAY and limit is not None:
            end = _limit_end(limit)
            if end > base.ts:
                # Switched away while limited; the limit has passed since: ready again.
                return ProfileStatus(profile, ProfileState.IDLE, end, usage=usage)
        return ProfileStatus(
            profile,
            base.state,
            base.ts,
            switched_to=base.switched_to,
            reason=base.reason,
            usage=usage,
        )

    def usage(self, profile: str) -> dict[LimitWindow, WindowUsage]:
        """The latest reading of each quota window of `profile` (5h, weekly, ...)."""
        history = self._history.get(profile)
        return dict(history.usage) if history is not None else {}

    # -- internals --------------------------------------------------------------------------

    def _record(self, event: ProfileEvent, *, emit: bool) -> bool:
        if event.event_id in self._seen:
            return False
        self._seen.add(event.event_id)
        history = self._history.setdefault(event.profile, _History())
        entries = history.limits if event.state is ProfileState.RATE_LIMITED else history.presence
        self._order += 1
        bisect.insort(entries, (event.ts, self._order, event))
        if len(entries) > MAX_EVENTS_PER_PROFILE:
            del entries[0]
        if emit:
            self._pending.append(event)
        return True

    def _known_limit(self, profile: str, ts: float, until: float | None) -> bool:
        """True when a recorded limit already covers this hit (another session hit the same)."""
        history = self._history.get(profile)
        if history is None:
            return False
        for _, _, event in reversed(history.limits):
            if until is None:
                if event.ts <= ts < _limit_end(event):
                    return True
            elif event.until is not None and abs(event.until - until) < SAME_RESET_S:
                return True
        return False

    def _note_usage(self, profile: str, event: LimitEvent) -> None:
        history = self._history.setdefault(profile, _History())
        old = history.usage.get(event.window)
        if old is None or event.ts >= old.ts:
            history.usage[event.window] = WindowUsage(
                event.window,
                event.window_minutes,
                event.used_percent,
                event.resets_at,
                event.ts,
                event.plan_type,
            )

    def _match(self, switch: IdentitySwitch, candidates: list[Profile]) -> str | None:
        identity = switch.identity
        if identity is None:
            return None
        by_id = [
            p for p in candidates if p.account is not None and p.account == identity.account_id
        ]
        found = by_id or [
            p for p in candidates if p.account is not None and identity.matches(p.account)
        ]
        if len(found) == 1:
            return found[0].name
        if not found:
            log.warning(
                "%s is logged in to an account no profile names (set `account` on one of %s)",
                switch.home,
                ", ".join(p.name for p in candidates),
            )
        else:
            log.warning(
                "%s: the login matches several profiles (%s); give each its account id",
                switch.home,
                ", ".join(p.name for p in found),
            )
        return None

    def _resolve(self, path: Path) -> Path:
        resolved = self._resolved.get(path)
        if resolved is None:
            if len(self._resolved) >= 4096:
                self._resolved.clear()
            resolved = self._resolved[path] = path.expanduser().resolve()
        return resolved

    def _candidates(self, agent: Agent, path: Path) -> list[str]:
        """Profiles of `agent` whose home is the deepest one holding `path`."""
        best: list[str] = []
        depth = -1
        for name, home in self._homes.items():
            if self.profiles[name].agent is not agent:
                continue
            if path != home and home not in path.parents:
                continue
            if len(home.parts) > depth:
                best, depth = [name], len(home.parts)
            elif len(home.parts) == depth:
                best.append(name)
        return best

    def _event(
        self,
        key: tuple[object, ...],
        switch: IdentitySwitch,
        profile: str,
        state: ProfileState,
        reason: str,
        switched_to: str | None = None,
    ) -> ProfileEvent:
        return ProfileEvent(
            event_id=profile_event_id(self.machine, *key),
            ts=switch.ts,
            machine=self.machine,
            profile=profile,
            agent=switch.agent,
            state=state,
            switched_to=switched_to,
            reason=reason,
            account=self._account(profile),
            origin=switch.origin,
        )

    def _account(self, profile: str) -> str | None:
        known = self.profiles.get(profile)
        return known.account if known is not None else None


def _latest(entries: list[_Entry], now: float) -> ProfileEvent | None:
    index = bisect.bisect_right(entries, (now, math.inf)) - 1
    return entries[index][2] if index >= 0 else None


def _limit_end(event: ProfileEvent) -> float:
    return event.until if event.until is not None else event.ts + UNKNOWN_RESET_S

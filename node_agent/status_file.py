"""The profile heartbeat: a small JSON file in which a subscription-rotation scheduler says which
profile each agent uses now, when it switched, and which profiles are rate-limited.

The scheduler writes the whole file atomically (write `profiles.json.tmp`, then rename it over
`profiles.json`) whenever something changes, and may rewrite it as a heartbeat. Format,
version 1 (every time is ISO 8601 *with* a zone; "Z" is fine):

    {
      "version": 1,                                  # required; other versions are refused
      "updated_at": "2026-10-12T09:15:00+02:00",     # required: when the scheduler wrote it
      "active": {                                    # agent -> profile in use now (or null)
        "claude-code": "max-b",
        "codex": "pro-a"
      },
      "switches": [                                  # recent switches, any order; keep a few
        {"at": "2026-10-12T09:14:58+02:00",          # required
         "agent": "claude-code",                     # required: claude-code|codex|gemini|...
         "from": "max-a",                            # null/absent: nothing was active before
         "to": "max-b",                              # null/absent: the agent was switched off
         "reason": "rate_limited"}                   # rate_limited | schedule | manual | text
      ],
      "limited": {                                   # profile -> its current limit
        "max-a": {"until": "2026-10-12T14:00:00+02:00",  # required: when it resets
                  "reason": "5h window",                  # optional, free text
                  "since": "2026-10-12T09:14:50+02:00",   # optional: when it was hit
                  "agent": "claude-code"}                 # optional if the profile is configured
      }
    }

Unknown keys are ignored (a newer scheduler may say more). Profile names are those of the
node's config (`[[profiles]] name`); a name the config does not know is still reported when the
file tells its agent.

What it becomes (`ProfileEvent`s, each emitted once per watcher, with ids that depend only on
the file's content, so a re-read or a daemon restart yields the same ids):

- a switch: `from` -> SWITCHED_AWAY (switched_to = `to`), `to` -> ACTIVE, both at `at`;
- a limited entry: RATE_LIMITED until `until`, at `since` (else the file's `updated_at`);
- an `active` entry not explained by a switch in the file: ACTIVE at `updated_at` (and, when
  a previous read named another profile, SWITCHED_AWAY for that one): schedulers that keep only
  `active` still give a timeline, but recording switches gives the exact times.

A file that cannot be used (not JSON, wrong version, no `updated_at`) is reported in `error` and
logged; the last good state is kept. A bad entry is skipped, reported in `problems`, and the
rest of the file is used.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import orjson

from node_agent.timeline import profile_event_id
from shared.config import Profile
from shared.events import Agent, ProfileEvent, ProfileState

log = logging.getLogger(__name__)

VERSION: Final = 1
MAX_BYTES: Final = 1 << 20  # a heartbeat is a few KiB; refuse to slurp anything huge
_ORIGIN: Final = "status-file"


class StatusFileError(ValueError):
    """The file as a whole cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class Switch:
    at: float
    agent: Agent
    from_profile: str | None
    to_profile: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Limited:
    profile: str
    until: float
    since: float | None
    reason: str | None
    agent: Agent | None


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """One good read of the file."""

    updated_at: float
    active: Mapping[Agent, str | None]
    switches: tuple[Switch, ...]
    limited: tuple[Limited, ...]
    problems: tuple[str, ...] = ()  # entries skipped, each with its place


def _time(value: object, here: str) -> float:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{here}: must be an ISO 8601 time with a zone, not {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{here}: {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{here}: {value!r} has no time zone (add Z or +HH:MM)")
    return parsed.timestamp()


def _agent(value: object, here: str) -> Agent:
    try:
        return Agent(str(value))
    except ValueError:
        choices = ", ".join(a.value for a in Agent)
        raise ValueError(f"{here}: unknown agent {value!r} (one of {choices})") from None


def _name(value: object, here: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{here}: must be a profile name or null, not {value!r}")
    return value


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_status(data: bytes, where: str) -> StatusSnapshot:
    """Parse a whole file. Raises StatusFileError when nothing in it can be trusted."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StatusFileError(
            f"{where}: not valid JSON (line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(doc, dict):
        raise StatusFileError(f"{where}: must hold a JSON object")
    if doc.get("version") != VERSION:
        raise StatusFileError(
            f"{where}: version: {doc.get('version')!r} is not supported (expected {VERSION})"
        )
    try:
        updated_at = _time(doc.get("updated_at"), f"{where}: updated_at")
    except ValueError as exc:
        raise StatusFileError(str(exc)) from None
    problems: list[str] = []
    return StatusSnapshot(
        updated_at=updated_at,
        active=_parse_active(doc.get("active"), where, problems),
        switches=tuple(_parse_switches(doc.get("switches"), where, problems)),
        limited=tuple(_parse_limited(doc.get("limited"), where, problems)),
        problems=tuple(problems),
    )


def _parse_active(raw: object, where: str, problems: list[str]) -> dict[Agent, str | None]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: active: must be an object of agent -> profile")
        return {}
    active: dict[Agent, str | None] = {}
    for key, value in raw.items():
        here = f"{where}: active.{key}"
        try:
            active[_agent(key, here)] = _name(value, here)
        except ValueError as exc:
            problems.append(str(exc))
    return active


def _parse_switches(raw: object, where: str, problems: list[str]) -> list[Switch]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"{where}: switches: must be an array")
        return []
    switches: list[Switch] = []
    for index, entry in enumerate(raw):
        here = f"{where}: switches[{index}]"
        try:
            if not isinstance(entry, dict):
                raise ValueError(f"{here}: must be an object")
            switch = Switch(
                at=_time(entry.get("at"), f"{here}.at"),
                agent=_agent(entry.get("agent"), f"{here}.agent"),
                from_profile=_name(entry.get("from"), f"{here}.from"),
                to_profile=_name(entry.get("to"), f"{here}.to"),
                reason=_optional_text(entry.get("reason")),
            )
            if switch.from_profile is None and switch.to_profile is None:
                raise ValueError(f"{here}: names neither 'from' nor 'to'")
        except ValueError as exc:
            problems.append(str(exc))
            continue
        switches.append(switch)
    return sorted(switches, key=lambda s: s.at)


def _parse_limited(raw: object, where: str, problems: list[str]) -> list[Limited]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        problems.append(f"{where}: limited: must be an object of profile -> {{until, reason}}")
        return []
    limited: list[Limited] = []
    for profile, entry in raw.items():
        here = f"{where}: limited.{profile}"
        try:
            if not isinstance(entry, dict):
                raise ValueError(f"{here}: must be an object with 'until'")
            since = entry.get("since")
            agent = entry.get("agent")
            limited.append(
                Limited(
                    profile=profile,
                    until=_time(entry.get("until"), f"{here}.until"),
                    since=None if since is None else _time(since, f"{here}.since"),
                    reason=_optional_text(entry.get("reason")),
                    agent=None if agent is None else _agent(agent, f"{here}.agent"),
                )
            )
        except ValueError as exc:
            problems.append(str(exc))
    return limited


@dataclass(slots=True)
class StatusFileWatcher:
    """Re-reads the heartbeat when it changed and turns it into profile events."""

    path: Path
    machine: str
    profiles: Iterable[Profile] = ()
    state: StatusSnapshot | None = field(default=None, init=False)  # the last good read
    error: str | None = field(default=None, init=False)  # why the latest read was not used
    _signature: tuple[int, int, int] | None = field(default=None, init=False)
    _emitted: set[str] = field(default_factory=set, init=False)
    _logged: set[str] = field(default_factory=set, init=False)
    _known: dict[str, Profile] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._known = {p.name: p for p in self.profiles}

    @property
    def problems(self) -> tuple[str, ...]:
        return self.state.problems if self.state is not None else ()

    def poll(self) -> list[ProfileEvent] | None:
        """New events since the last poll; None when the file was not (usably) read."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._signature = None  # no scheduler (yet): not an error
            return None
        except OSError as exc:
            self._fail(f"{self.path}: cannot read: {exc.strerror or exc}")
            return None
        if self._signature == _signature(info):
            return None
        if not stat.S_ISREG(info.st_mode):  # opening a FIFO would block the node's reader
            self._fail(f"{self.path}: not a regular file (a scheduler writes a file, then renames)")
            return None
        try:
            with open(self.path, "rb") as fh:
                # The signature of what was actually read: a write racing this read shows up
                # as a change at the next poll.
                signature = _signature(os.fstat(fh.fileno()))
                data = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            self._fail(f"{self.path}: cannot read: {exc.strerror or exc}")
            return None
        self._signature = signature
        if len(data) > MAX_BYTES:
            self._fail(f"{self.path}: larger than {MAX_BYTES} bytes; not a status file?")
            return None
        try:
            snapshot = parse_status(data, str(self.path))
        except StatusFileError as exc:
            self._fail(str(exc))
            return None
        previous, self.state, self.error = self.state, snapshot, None
        for problem in snapshot.problems:
            self._log(problem)
        fresh = [e for e in self._events(snapshot, previous) if e.event_id not in self._emitted]
        self._emitted.update(e.event_id for e in fresh)
        return fresh

    def _fail(self, message: str) -> None:
        self.error = message
        self._log(message + " (keeping the last good state)")

    def _log(self, message: str) -> None:
        # Once per distinct message: a scheduler stuck writing a bad file is one warning.
        if message not in self._logged and len(self._logged) < 1000:
            self._logged.add(message)
            log.warning("%s", message)

    def _event(
        self,
        key: tuple[object, ...],
        ts: float,
        profile: str,
        agent: Agent,
        state: ProfileState,
        *,
        until: float | None = None,
        switched_to: str | None = None,
        reason: str | None = None,
    ) -> ProfileEvent:
        known = self._known.get(profile)
        return ProfileEvent(
            event_id=profile_event_id(self.machine, "status", *key),
            ts=ts,
            machine=self.machine,
            profile=profile,
            agent=agent,
            state=state,
            until=until,
            switched_to=switched_to,
            reason=reason,
            account=known.account if known is not None else None,
            origin=str(self.path),
        )

    def _switch_events(self, switch: Switch, key: tuple[object, ...]) -> list[ProfileEvent]:
        events: list[ProfileEvent] = []
        if switch.from_profile is not None:
            events.append(
                self._event(
                    (*key, "away"),
                    switch.at,
                    switch.from_profile,
                    switch.agent,
                    ProfileState.SWITCHED_AWAY,
                    switched_to=switch.to_profile,
                    reason=switch.reason,
                )
            )
        if switch.to_profile is not None:
            events.append(
                self._event(
                    (*key, "active"),
                    switch.at,
                    switch.to_profile,
                    switch.agent,
                    ProfileState.ACTIVE,
                    reason=switch.reason,
                )
            )
        return events

    def _events(self, snap: StatusSnapshot, previous: StatusSnapshot | None) -> list[ProfileEvent]:
        events: list[ProfileEvent] = []
        last_switch: dict[Agent, Switch] = {}
        for s in snap.switches:
            key = ("switch", s.agent, s.from_profile, s.to_profile, _ms(s.at))
            events.extend(self._switch_events(s, key))
            last_switch[s.agent] = s
        for agent, profile in snap.active.items():
            explained = last_switch.get(agent)
            if profile is None or (explained is not None and explained.to_profile == profile):
                continue
            before = previous.active.get(agent) if previous is not None else None
            if before is not None and before != profile:
                # The scheduler changed `active` without recording a switch: this read is when.
                change = Switch(snap.updated_at, agent, before, profile, "active changed")
                key = ("active-change", agent, before, profile, _ms(snap.updated_at))
                events.extend(self._switch_events(change, key))
            else:
                anchor = _ms(explained.at) if explained is not None else None
                events.append(
                    self._event(
                        ("active", agent, profile, anchor),
                        snap.updated_at,
                        profile,
                        agent,
                        ProfileState.ACTIVE,
                    )
                )
        agents = self._agents_named(snap)
        for entry in snap.limited:
            limited_agent = entry.agent or agents.get(entry.profile)
            if limited_agent is None:
                problem = (
                    f"{self.path}: limited.{entry.profile}: unknown profile; "
                    "add 'agent' to the entry or configure the profile"
                )
                self._log(problem)
                continue
            events.append(
                self._event(
                    ("limited", entry.profile, _ms(entry.until)),
                    entry.since if entry.since is not None else snap.updated_at,
                    entry.profile,
                    limited_agent,
                    ProfileState.RATE_LIMITED,
                    until=entry.until,
                    reason=entry.reason,
                )
            )
        return events

    def _agents_named(self, snap: StatusSnapshot) -> dict[str, Agent]:
        """profile -> agent, from the config and from what the file itself says."""
        agents = {name: p.agent for name, p in self._known.items()}
        for agent, profile in snap.active.items():
            if profile is not None:
                agents.setdefault(profile, agent)
        for s in snap.switches:
            for profile in (s.from_profile, s.to_profile):
                if profile is not None:
                    agents.setdefault(profile, s.agent)
        return agents


def _signature(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def _ms(ts: float) -> int:
    # Ids from whole milliseconds: "Z" and "+00:00" spellings of one moment give one id.
    return round(ts * 1000)

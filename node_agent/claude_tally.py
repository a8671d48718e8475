"""The calls of one Claude Code transcript's reading, counted without building their events.

`ClaudeSource` dedupes calls across files: keys, sidechain replays, retractions, one
`UsageEvent` per call. Most files share no call with another and repeat no call of their own,
and then that machinery decides nothing: each run of the reading is one call, its best line.
`solo_calls` tells that case apart and gives those lines in the order the source would have
emitted their events (so sums and rows come out in the same order), with the snapshot skips it
would have counted; a report prices them straight from the lines. Any other reading returns
None and goes through the source as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timezone
from typing import TYPE_CHECKING

import msgspec

from node_agent.claude_reading import FileReading
from node_agent.sources._claude_line import UsageLine
from pricing.rollup import Attribution, Rollup, RowKey
from shared.events import Agent, Role

if TYPE_CHECKING:
    from pricing._book import Kind

# The row keys that read a call's time: each only through its local date.
_DATED = frozenset(("day", "week", "month"))


class SoloCalls(msgspec.Struct, frozen=True):
    lines: list[UsageLine]  # the best line of each call, in the source's order of events
    snapshots: int  # lines skipped as earlier or equal snapshots of a call


def solo_calls(reading: FileReading) -> SoloCalls | None:
    """The calls of `reading` when none can affect another's count (no event id or message id
    met twice); None when the source's dedupe must decide."""
    ids: set[str] = set()
    groups: set[str] = set()
    lines: list[UsageLine] = []
    held: UsageLine | None = None
    snapshots = 0
    for run in reading.runs:
        line = run.best
        if line.event_id in ids:
            return None
        ids.add(line.event_id)
        group = line.group
        if group is None:
            # Emitted at once, ahead of the call the source still holds (see `take`).
            lines.append(line)
            continue
        if group in groups:
            return None
        groups.add(group)
        top = -1
        for revision in run.revisions:
            if revision <= top:
                snapshots += 1
            else:
                top = revision
        if held is not None:
            lines.append(held)
        held = line
    if held is not None:
        lines.append(held)
    return SoloCalls(lines, snapshots)


class LineCall:
    """What a report row's keys read of a call (`pricing.rollup.Keyed`), from its line."""

    __slots__ = ("ts", "model", "session_id", "project", "role")

    agent = Agent.CLAUDE_CODE
    profile = None
    account = None
    machine = ""

    def __init__(self, line: UsageLine) -> None:
        self.ts = line.ts
        self.model = line.model
        self.session_id = line.session
        self.project = line.project
        self.role = Role.SUBAGENT if line.is_sub else Role.MAIN


class RowKeys:
    """`rollup.key(LineCall(line), attribution)` for the lines of one target, each worked out
    once per distinct (local date, model, session, project, role): a transcript's calls share
    a handful. Exact: a `LineCall` gives its row keys nothing else (the rest is the target's
    `attribution` or the class's constants), and the dated keys read only the local date."""

    __slots__ = ("_rollup", "_attribution", "_tz", "_dated", "_known")

    def __init__(self, rollup: Rollup, attribution: Attribution) -> None:
        self._rollup = rollup
        self._attribution = attribution
        self._tz = rollup.tz
        self._dated = not _DATED.isdisjoint(rollup.by)
        self._known: dict[tuple[date | None, str, str, str | None, bool], RowKey] = {}

    def __call__(self, line: UsageLine) -> RowKey:
        day = datetime.fromtimestamp(line.ts, self._tz).date() if self._dated else None
        terms = (day, line.model, line.session, line.project, line.is_sub)
        row = self._known.get(terms)
        if row is None:
            row = self._known[terms] = self._rollup.key(LineCall(line), self._attribution)
        return row

    def alike(self, lines: Iterable[UsageLine]) -> list[tuple[RowKey, Kind, bool, list[UsageLine]]]:
        """The lines in buckets of one row, one kind of call (model, provider, service tier,
        speed, inference geography: what finds its price terms with its time and counts) and
        one cache-write split, in the order of each bucket's first line: (row, kind, unsplit,
        lines). Per line only its bucket is found; the row once per bucket."""
        dated, tz = self._dated, self._tz
        stamp = datetime.fromtimestamp
        # A fixed-offset zone (the default, UTC) has days of 86,400 s and a date that never
        # goes back: a time over a second inside the last day found (clear of any rounding to
        # microseconds) is on that day, told without building a datetime.
        fixed = dated and isinstance(tz, timezone)
        day: date | None = None
        low = high = 0.0
        buckets: dict[tuple[object, ...], list[UsageLine]] = {}
        for line in lines:
            ts = line.ts
            if dated and not (fixed and low < ts < high):
                day = stamp(ts, tz).date()
                if fixed:
                    low = datetime.combine(day, time(), tz).timestamp() + 1
                    high = low + 86_398
            key = (
                day,
                line.model,
                line.session,
                line.project,
                line.is_sub,
                line.service_tier,
                line.speed,
                line.inference_geo,
                line.unsplit,
            )
            found = buckets.get(key)
            if found is None:
                buckets[key] = [line]
            else:
                found.append(line)
        return [
            (
                self(first),
                # Claude Code logs no provider
                (first.model, None, first.service_tier, first.speed, first.inference_geo),
                first.unsplit,
                alike,
            )
            for alike in buckets.values()
            for first in alike[:1]
        ]

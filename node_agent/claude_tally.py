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

import msgspec

from node_agent.claude_reading import FileReading
from node_agent.sources._claude_line import UsageLine
from shared.events import Agent, Role


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

"""The dashboard's figures on a controlled clock: the header fitted to a width, burn and
projections over the time the figures cover, session ids that never look alike, a switched
profile's limit, and the feed in words, one line per happening, in time order.

A real `FleetService` (SQLite on disk, the ledger, the profile board) read through `Dashboard`.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from pathlib import Path

import pytest

from hub._sessions import SessionNames, short_id
from hub._totals import MONEY as MONEY_CONTEXT
from hub.dashboard import Dashboard, Table, column_index, state_cell
from hub.header import HeaderFigures, project
from hub.ledger import Period
from hub.profile_board import ProfileBoard
from hub.service import FleetService
from hub.store import Store
from pricing import PriceBook
from shared.events import (
    Agent,
    LimitEvent,
    LimitKind,
    LimitWindow,
    ProfileEvent,
    ProfileState,
    Tokens,
    UsageEvent,
)

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def service(tmp_path: Path, clock: Clock) -> FleetService:
    return FleetService(Store.in_dir(tmp_path), PriceBook.default(), clock=clock)


def call(event_id: str, ts: float, session: str, machine: str = "spark01") -> UsageEvent:
    return UsageEvent(
        event_id=event_id,
        ts=ts,
        agent=Agent.CODEX,
        model="gpt-5-codex",
        tokens=Tokens(input=1000, output=500),
        session_id=session,
        machine=machine,
        profile="api",
        project="/src/app",
    )


def send(
    service: FleetService, machine: str, events: list[UsageEvent | LimitEvent | ProfileEvent]
) -> None:
    seq = next(_SEQ)  # a new batch each time (the store keeps sequences per node and stream)
    service.ingest(machine, "s1", seq, seq, events)


_SEQ = itertools.count(1)


# -- the header ------------------------------------------------------------------------------

BIG = HeaderFigures(
    metered=Decimal("1234.56"),
    subscription_included=Decimal("117.17"),
    estimated=Decimal("12.34"),
    unknown_calls=0,
    unknown_tokens=0,
    api_equivalent=Decimal("1500"),
    burn_paid_short=Decimal("912.44"),
    burn_paid_long=Decimal("426.10"),
    burn_api_short=Decimal("960.20"),
    burn_api_long=Decimal("500.10"),
    projected_day=Decimal("1455.76"),
    projected_month=Decimal("12504.12"),
    online=3,
    nodes=3,
)
MONEY = re.compile(r"\$[\d,]+\.\d\d")


@pytest.mark.parametrize("unknown", [0, 3])
def test_the_header_fits_every_width_and_never_cuts_a_figure(unknown: int) -> None:
    h = dataclasses.replace(BIG, unknown_calls=unknown, unknown_tokens=1800 * unknown)
    figures = set(MONEY.findall(h.line(1000)))
    for width in range(30, 260):
        line = h.line(width)
        assert len(line) <= width, (width, line)
        assert set(MONEY.findall(line)) <= figures, (width, line)  # whole, never a cut one
        assert "$912.44/h" in line and line.endswith("nodes 3/3"), (width, line)  # paid burn
    at_80 = h.line(80)
    assert re.search(r"met\S* \$1,234\.56", at_80) and "→ $1,455.76" in at_80, at_80
    if unknown:
        assert "unkn. 3" in h.line(60)  # calls with no price outlast the dollar figures
    at_160 = h.line(160)
    for figure in ("$1,234.56", "$117.17", "$12.34", "$912.44", "$426.10", "$1,455.76"):
        assert figure in at_160, at_160
    assert "$12,504.12" in at_160 or unknown, at_160
    wide = h.line(400)
    assert "subscription $117.17 (API-eq)" in wide and "API-eq $960.20/h, $500.10/h" in wide
    assert "burn $912.44/h paid (5 min), $426.10/h (1 h)" in wide


def test_no_projection_before_fifteen_minutes_of_data(service: FleetService, clock: Clock) -> None:
    today, month = service.fleet(Period.TODAY), service.fleet(Period.MONTH)
    now = datetime.fromtimestamp(NOW, UTC)
    rate = Decimal(10)
    assert project(today, month, rate, now, None) == (None, None)
    assert project(today, month, rate, now, NOW - 45) == (None, None)
    assert project(today, month, rate, now, NOW - 14 * 60) == (None, None)
    day, whole = project(today, month, rate, now, NOW - 15 * 60)
    assert day == rate * 12  # nothing spent yet; 12 hours to midnight at $10/h
    # the figures cover today only: today's projection is the average day of the 12 left
    assert whole == day + day * 12
    # a header before that says so instead of multiplying 45 seconds
    send(service, "spark01", [call("c1", NOW - 45, "s1")])
    dash = Dashboard(service, clock=clock)
    frame = dash.tick()
    assert frame.header is not None and frame.header.projected_day is None
    assert "→ day – (after 15 min of data)" in frame.header.line(400)
    assert "→ –" in frame.header.line(80)


def test_burn_rests_on_the_time_covered_with_a_short_and_a_long_window(
    service: FleetService, clock: Clock
) -> None:
    # A runaway that started a minute and a half ago: 9 calls.
    for i in range(9):
        send(service, "spark02", [call(f"r{i}", NOW - 90 + i * 10, "runaway", "spark02")])
    dash = Dashboard(service, clock=clock)
    header = dash.tick().header
    assert header is not None
    spent = service.fleet(Period.TODAY).metered
    assert spent > 0
    assert header.burn_paid_short == header.burn_paid_long == spent * 3600 / 90
    # killed: five quiet minutes later the short window reads nothing, the hour still counts
    clock.now = NOW + 5 * 60
    header = dash.header()
    assert header.burn_paid_short == 0
    with localcontext(MONEY_CONTEXT):
        assert header.burn_paid_long == spent * 3600 / (90 + 5 * 60)


# -- sessions --------------------------------------------------------------------------------


def uuid7(ms: int, tail: int) -> str:
    """A UUIDv7 as Codex names its threads: 48 bits of milliseconds first."""
    value = (ms << 80) | (0x7 << 76) | (0b10 << 62) | tail
    return str(uuid.UUID(int=value))


def test_codex_sessions_started_together_never_look_alike(
    service: FleetService, clock: Clock
) -> None:
    ms = int(NOW * 1000) - 5000
    ids = [uuid7(ms + i, 0x1234_5678_9ABC + (i << 40)) for i in range(4)]
    assert len({i[:8] for i in ids}) == 1  # what the table and the feed showed before
    # the same random tail for two of them too: the shown id grows until it differs
    ids.append(uuid7(ms + 9, 0x1234_5678_9ABC + (3 << 40)))
    machines = ["spark01", "spark02", "spark03", "spark01", "spark02"]
    for n, (session, machine) in enumerate(zip(ids, machines, strict=True)):
        send(service, machine, [call(f"c{n}", NOW - 60 + n, session, machine)])
    dash = Dashboard(service, clock=clock)
    frame = dash.tick()
    rows = frame.tables[Table.SESSIONS].upserts
    col = column_index(Table.SESSIONS, "session")
    shown = [rows[i].cells[col].text for i in ids]
    assert len(set(shown)) == len(ids), shown
    assert all(
        label.startswith("…") and ids[n].endswith(label[1:]) for n, label in enumerate(shown)
    )
    assert shown[0] == "…" + ids[0][-8:]
    said = [item.text for item in service.recent_feed() if item.kind == "session"]
    assert [re.search(r"session (\S+)", t).group(1) for t in said] == shown  # type: ignore[union-attr]


def test_short_ids_keep_a_random_uuid_s_head_and_a_timed_id_s_tail() -> None:
    v4 = "6f1c2a9e-0b7d-4c55-9e1a-2b3c4d5e6f70"
    assert short_id(v4) == "6f1c2a9e"
    assert short_id("ses_5f2a1b3c4d5eFfXyZ0123abcd") == "…0123abcd"
    assert short_id("cursor:2026-10-12") == "…26-10-12"
    assert short_id("s1") == "s1"
    names = SessionNames()
    assert names.name("cursor:2026-10-12") == "…26-10-12"
    assert names.name("agent:2026-10-12") == "…t:2026-10-12"  # longer: "…26-10-12" is taken
    assert names.name("cursor:2026-10-12") == "…26-10-12"  # a name, once given, stays


# -- profiles --------------------------------------------------------------------------------


def test_a_switched_away_profile_shows_where_to_and_its_limit_countdown() -> None:
    board = ProfileBoard()
    board.add_profile_event(
        ProfileEvent(
            "l",
            NOW,
            "spark01",
            "max-a",
            Agent.CLAUDE_CODE,
            ProfileState.RATE_LIMITED,
            until=NOW + 3 * 3600 + 12 * 60,
        )
    )
    board.add_profile_event(
        ProfileEvent(
            "s",
            NOW + 2,
            "spark01",
            "max-a",
            Agent.CLAUDE_CODE,
            ProfileState.SWITCHED_AWAY,
            switched_to="max-b",
            reason="rate_limited",
        )
    )
    cell = state_cell(board.standing("spark01/max-a", NOW + 2), NOW + 2)
    assert cell.text == "switched → max-b · limited 3:11:58"
    # once the limit has passed, only the switch is left
    later = NOW + 4 * 3600
    assert state_cell(board.standing("spark01/max-a", later), later).text == "switched → max-b"


# -- the feed --------------------------------------------------------------------------------


def limit_story(at: float, reset: float) -> list[UsageEvent | LimitEvent | ProfileEvent]:
    """What a node sends when max-a is refused and a scheduler moves claude-code to max-b."""
    agent = Agent.CLAUDE_CODE
    limited = ProfileState.RATE_LIMITED
    return [
        LimitEvent(
            "hit",
            at,
            agent,
            LimitKind.RATE_LIMIT_HIT,
            LimitWindow.FIVE_HOUR,
            resets_at=reset,
            machine="spark01",
            profile="max-a",
        ),
        ProfileEvent("tl", at, "spark01", "max-a", agent, limited, until=reset, reason="5h window"),
        ProfileEvent(
            "away",
            at + 3,
            "spark01",
            "max-a",
            agent,
            ProfileState.SWITCHED_AWAY,
            switched_to="max-b",
            reason="rate_limited",
        ),
        ProfileEvent(
            "on", at + 3, "spark01", "max-b", agent, ProfileState.ACTIVE, reason="rate_limited"
        ),
        ProfileEvent(
            "sf", at + 3, "spark01", "max-a", agent, limited, until=reset + 30, reason="5h window"
        ),
    ]


def test_the_feed_tells_each_happening_once_in_words_and_in_order(
    service: FleetService, clock: Clock
) -> None:
    dash = Dashboard(service, clock=clock)
    service.subscribe(dash.note)
    dash.tick()
    reset = datetime(2026, 11, 18, 14, 0, tzinfo=UTC).timestamp()
    send(service, "spark01", [call("c1", NOW - 20, "s-new"), *limit_story(NOW - 30, reset)])
    frame = dash.tick()
    texts = [item.text for item in frame.feed]
    assert texts == [
        "max-a hit its rate limit (5-hour window, resets 14:00) · claude-code switched to max-b",
        f"new codex session {service.session_label('s-new')} (api, /src/app)",
        "spark01 is online",
    ]
    assert not frame.feed_reset
    # The status file said the limit again (another id): no second line.
    again = ProfileEvent(
        "sf2",
        NOW,
        "spark01",
        "max-a",
        Agent.CLAUDE_CODE,
        ProfileState.RATE_LIMITED,
        until=reset,
        reason="5h window",
    )
    send(service, "spark01", [again])
    assert dash.tick().feed == []
    # A switch alone, and older news from a node catching up: the feed is given again, in order.
    clock.now = NOW + 60
    back = ProfileEvent(
        "back",
        NOW + 50,
        "spark01",
        "max-b",
        Agent.CLAUDE_CODE,
        ProfileState.SWITCHED_AWAY,
        switched_to="max-c",
        reason="quota_low",
    )
    send(service, "spark01", [back])
    assert [i.text for i in dash.tick().feed] == [
        "claude-code switched from max-b to max-c (quota low)"
    ]
    send(service, "spark02", [call("c9", NOW - 100, "s-old", "spark02")])
    frame = dash.tick()
    assert frame.feed_reset
    times = [item.ts for item in frame.feed]
    assert times == sorted(times) and frame.feed[0].text.startswith("new codex session")
    assert [i.ts for i in service.recent_feed()] == sorted(i.ts for i in service.recent_feed())

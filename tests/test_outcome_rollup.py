"""The outcome roll-up on real SQLite files: `--by commit|branch|pr|repo` read from the
per-session sums equals reading every call, on generated stores with re-sent batches, tail and
out-of-order revisions, retractions, late calls, subagents, agents whose logs name no tool
calls, outcomes that grow commits after their calls are stored (commits on a call's very time
and on a quarter's start), commits two sessions share, a re-pricing and a prune (midway and
done); and on a store from the previous schema, upgraded when opened."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, date, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from msgspec.structs import replace

from hub._outcome_read import report_from_sums
from hub._outcome_rollup import MAX_CUTS, QUARTER_S
from hub._schema import SCHEMA_VERSION
from hub.outcomes import build_outcome_report, create_table, record, stored_outcomes
from hub.store import DB_FILE, Store
from pricing import Billing, PriceBook, PricedCall
from pricing.outcomes import OUTCOME_KEYS, OutcomeReport
from shared.events import Agent, Role, Tokens, UsageEvent
from shared.hello import NodeHello, ProfileInfo
from shared.outcomes import Commit, PullRequest, SessionOutcome

T0 = 1_795_000_000.0  # 2026-11-18 04:26 UTC
DAY = 86400.0
KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30: days start at half hours
TOOLS = ("Bash:1", "Read:2", "Bash:1,Read:2", "Edit:3", None)


class DoubledPrices(PriceBook):
    """The shipped tables at twice the price: the tables changed, the kept calls re-priced."""

    def price(self, event: UsageEvent, billing: Billing = Billing.API) -> PricedCall:
        priced = super().price(event, billing)
        if priced.api_equivalent is None:
            return priced
        return replace(priced, api_equivalent=priced.api_equivalent * 2)


def _hello(node: str) -> NodeHello:
    sub = ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, None, "max_20x")
    return NodeHello(node, "0.1.0", T0 - 3600, "linux", 8, (sub,))


class Fleet:
    """Generates sessions' calls and outcomes and sends them to a store, as nodes would."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seq: dict[str, int] = {}
        self.sent: list[tuple[str, list[UsageEvent]]] = []

    def session_calls(self, machine: str, n: int) -> list[UsageEvent]:
        rng = self.rng
        agent = Agent.CLAUDE_CODE if n % 3 else Agent.CODEX
        session = f"{machine}-s{n}"
        at = T0 - DAY / 2 + n * 2000.0 + rng.random() * 600
        out = []
        for k in range(rng.randint(20, 60)):
            at += rng.choice((5.0, 13.5, 40.0, 300.0, 950.0))
            role, subagent, own, parent = Role.MAIN, None, session, None
            if rng.random() < 0.25:  # a subagent: Claude's in its session, Codex's in its own
                role = Role.SUBAGENT
                subagent = f"a{rng.randint(1, 2)}"
                if agent is Agent.CODEX:
                    own, parent = f"{session}-{subagent}", session
            out.append(
                UsageEvent(
                    event_id=f"{session}-c{k}",
                    ts=at,
                    agent=agent,
                    model=rng.choice(("claude-sonnet-4-5", "claude-opus-4-1", "no-such-model")),
                    tokens=Tokens(
                        input=rng.randint(1, 5000),
                        output=rng.randint(1, 900),
                        cache_read=rng.randint(0, 90_000),
                        cache_write_5m=rng.randint(0, 900),
                    ),
                    session_id=own,
                    machine=machine,
                    profile=rng.choice(("max-a", "api", None)),
                    role=role,
                    parent_session_id=parent,
                    subagent_id=subagent,
                    tool_calls=rng.choice(TOOLS),
                )
            )
        return out

    def send(self, store: Store, machine: str, events: list[UsageEvent], now: float) -> None:
        seq = self.seq.get(machine, 0)
        self.seq[machine] = seq + len(events)
        store.ingest(machine, "events", seq + 1, seq + len(events), events, _hello(machine), now)
        self.sent.append((machine, events))

    def outcome(
        self, session: str, calls: list[UsageEvent], commits: int, checked: float
    ) -> SessionOutcome:
        rng = self.rng
        times = sorted(c.ts for c in calls)
        made = []
        for i in range(commits):
            kind = rng.random()
            if kind < 0.3:  # on a call's very time
                at = rng.choice(times)
            elif kind < 0.45:  # on a quarter's start
                at = (rng.choice(times) // QUARTER_S) * QUARTER_S
            else:
                at = rng.uniform(times[0] - 100, times[-1] + 100)
            made.append(Commit(f"{session}x{i}".replace("-", "0"), at, i, 1, "trailer", f"c{i}"))
        made.sort(key=lambda c: c.author_ts)
        pr = PullRequest(7, "open", False) if rng.random() < 0.5 else None
        return SessionOutcome(
            session,
            checked,
            "ok",
            "",
            f"github.com/acme/r{rng.randint(0, 2)}",
            "main",
            tuple(made),
            pr,
        )


def build_store(path: Path, seed: int) -> tuple[Store, Fleet]:
    """A store a generated fleet filled, with outcomes sent before and after their calls."""
    fleet = Fleet(seed)
    rng = fleet.rng
    store = Store(path)
    held: list[tuple[str, UsageEvent]] = []  # calls a node sends late
    for machine in ("spark01", "spark02"):
        for n in range(7):
            calls = fleet.session_calls(machine, n)
            session = f"{machine}-s{n}"
            early = fleet.outcome(session, calls, rng.randint(0, 4), T0)
            with store.writing() as db:
                create_table(db)
                record(db, machine, [early])
            # the first call alone, then written again a little later (a streamed reply)
            fleet.send(store, machine, calls[:1], T0)
            first = replace(calls[0], revision=3, ts=calls[0].ts + 1)
            fleet.send(store, machine, [first], T0)
            for start in range(1, len(calls), 7):
                batch = calls[start : start + 7]
                if rng.random() < 0.05 and len(batch) > 2:  # one call comes late
                    held.append((machine, batch.pop(rng.randrange(len(batch) - 1))))
                tail = batch[-1]
                tokens = replace(tail.tokens, output=tail.tokens.output + 7)
                # a streamed reply's later line: a little later, maybe with its tool calls
                again = replace(
                    tail, revision=1, ts=tail.ts + 0.5, tokens=tokens, tool_calls=rng.choice(TOOLS)
                )
                if rng.random() < 0.3:  # the tail call written again, further along
                    batch.append(again)
                fleet.send(store, machine, batch, T0)
                if rng.random() < 0.2:  # the same batch again (a lost ack)
                    fleet.send(store, machine, batch, T0)
                if rng.random() < 0.5:  # the tail call written again, in the next batch
                    fleet.send(store, machine, [replace(again, revision=2, ts=tail.ts + 1)], T0)
            if rng.random() < 0.2:  # an older call revised: out of order
                old = calls[rng.randrange(len(calls) // 2)]
                fleet.send(store, machine, [replace(old, revision=5, tool_calls="Bash:1")], T0)
            if rng.random() < 0.2:  # a call found to copy another
                dup = calls[rng.randrange(len(calls))]
                fleet.send(store, machine, [replace(dup, revision=9, duplicate_of="x")], T0)
            # the outcome read again later: more commits (some on calls already stored)
            grown = fleet.outcome(session, calls, rng.randint(1, 8), T0 + 10)
            grown = replace(
                grown,
                commits=tuple(sorted(early.commits + grown.commits, key=lambda c: c.author_ts)),
            )
            with store.writing() as db:
                record(db, machine, [grown])
    for machine, call in held:
        fleet.send(store, machine, [call], T0)
    # two sessions share a commit (one branch each); one session's commits come unsorted
    shared = Commit("feedbeef01", T0 + 700.0, 5, 5, "identity", "shared")
    with store.writing() as db:
        record(
            db,
            "spark01",
            [
                SessionOutcome(
                    "spark01-s1", T0 + 99, "ok", "", "github.com/acme/r0", "a", (shared,)
                ),
                SessionOutcome(
                    "spark01-s2", T0 + 99, "ok", "", "github.com/acme/r0", "b", (shared,)
                ),
                SessionOutcome(
                    "spark01-s4",
                    T0 + 99,
                    "ok",
                    "",
                    "github.com/acme/r1",
                    "main",
                    (
                        Commit("bbbb", T0 + 9000, 1, 1, "trailer", "late"),
                        Commit("aaaa", T0 + 10, 1, 1, "trailer", "early"),
                    ),
                ),
                SessionOutcome("spark01-s5", T0 + 99, "not_a_repo", "no git here"),
            ],
        )
    return store, fleet


RANGES = [(None, None), (date(2026, 11, 18), None), (date(2026, 11, 17), date(2026, 11, 18))]


def assert_equal_reports(store: Store, tz: tzinfo = UTC) -> None:
    for by in OUTCOME_KEYS:
        for since, until in RANGES:
            fast = build_outcome_report(store, by, tz, since, until)
            slow = build_outcome_report(store, by, tz, since, until, from_sums=False)
            assert fast == slow, (by, since, until)


def summed_sessions(store: Store) -> int:
    """How many sessions a whole-store report read as sums (not raw)."""
    report = OutcomeReport("commit")
    outcomes = stored_outcomes(store.reading())
    assert report_from_sums(store, report, None, None, store.billing(), outcomes)
    clean = store.reading().execute("SELECT count(*) FROM outcome_sessions WHERE dirty = 0")
    return int(clean.fetchone()[0])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_outcome_views_from_sums_equal_reading_every_call(tmp_path: Path, seed: int) -> None:
    store, _ = build_store(tmp_path / DB_FILE, seed)
    with store:
        assert summed_sessions(store) >= 8  # the sums are what is read, mostly
        report = build_outcome_report(store, "commit", UTC)
        assert report["total"]["calls"] > 300 and len(report["rows"]) > 20
        assert report["total"]["outcome"]["retry_calls"] > 0
        assert_equal_reports(store)
        assert_equal_reports(store, KOLKATA)


def test_the_sums_follow_a_repricing_and_a_prune(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    store, _ = build_store(path, 4)
    store.close()
    with Store(path, book=DoubledPrices(PriceBook.default().tables)) as store:
        while not store.reprice(step=50)[1]:
            pass
        assert_equal_reports(store)
        before = T0 + 3 * 3600.0
        assert store.prune(before, T0 + DAY, step=40) == 40  # midway: some old calls remain
        assert_equal_reports(store)
        while store.prune(before, T0 + DAY, step=40) == 40:
            pass
        assert_equal_reports(store)
        assert_equal_reports(store, KOLKATA)


def test_a_store_from_the_previous_schema_is_rebuilt_when_opened(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    store, _ = build_store(path, 5)
    with store:
        expected = {by: build_outcome_report(store, by, UTC) for by in OUTCOME_KEYS}
    db = sqlite3.connect(path)  # as schema 3 left it: no outcome roll-up
    for table in ("rollup", "cuts", "sessions", "threads", "retries"):
        db.execute(f"DROP TABLE outcome_{table}")
    db.execute("PRAGMA user_version = 3")  # (v4 added the outcome roll-up)
    db.commit()
    db.close()
    with Store(path) as store:
        assert summed_sessions(store) >= 10  # the upgrade filed every call in order
        for by in OUTCOME_KEYS:
            assert build_outcome_report(store, by, UTC) == expected[by]
        assert_equal_reports(store)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()


def test_a_commit_on_a_calls_time_and_its_quarter(tmp_path: Path) -> None:
    """The rule's edges by hand: a call on a commit's time is that commit's; the next call is
    the next commit's; a commit at a quarter's start splits nothing before it."""
    with Store(tmp_path / DB_FILE) as store:
        q = (T0 // QUARTER_S + 1) * QUARTER_S
        calls = [
            UsageEvent(
                f"c{i}",
                at,
                Agent.CLAUDE_CODE,
                "claude-sonnet-4-5",
                Tokens(input=10),
                "s1",
                machine="n1",
            )
            for i, at in enumerate((q - 10, q, q + 5, q + 20, q + 30))
        ]
        store.ingest("n1", "e", 1, 5, calls, None, T0)
        commits = (
            Commit("aaaa", q, 1, 0, "trailer", "one"),
            Commit("bbbb", q + 20, 1, 0, "trailer", "two"),
        )
        with store.writing() as db:
            create_table(db)
            record(db, "n1", [SessionOutcome("s1", T0, "ok", "", "r", "main", commits)])
        report = build_outcome_report(store, "commit", UTC)
        calls_by = {row["commit"]: row["calls"] for row in report["rows"]}
        assert calls_by == {"aaaa": 2, "bbbb": 2, None: 1}
        assert report == build_outcome_report(store, "commit", UTC, from_sums=False)


def test_sessions_are_taken_in_the_order_of_their_first_calls(tmp_path: Path) -> None:
    """A group's detail comes from the first session with a call in it: session a's first call,
    written again later, now comes after b's, so the branch row says b's (no) pull request."""
    with Store(tmp_path / DB_FILE) as store:

        def one(event_id: str, session: str, at: float, revision: int = 0) -> UsageEvent:
            return UsageEvent(
                event_id, at, Agent.CLAUDE_CODE, "claude-sonnet-4-5", Tokens(input=10),
                session, machine="n1", revision=revision, tool_calls="Bash:1",
            )  # fmt: skip

        store.ingest("n1", "e", 1, 1, [one("a1", "a", T0)], None, T0)
        store.ingest("n1", "e", 2, 2, [one("b1", "b", T0 + 0.5)], None, T0)
        store.ingest("n1", "e", 3, 3, [one("a1", "a", T0 + 1, revision=1)], None, T0)
        store.ingest("n1", "e", 4, 5, [one("a2", "a", T0 + 9), one("b2", "b", T0 + 9)], None, T0)
        outcomes = [
            SessionOutcome("a", T0, "ok", "", "r", "main", (), PullRequest(7, "open", False)),
            SessionOutcome("b", T0, "ok", "", "r", "main"),
        ]
        with store.writing() as db:
            create_table(db)
            record(db, "n1", outcomes)
        assert summed_sessions(store) == 2
        report = build_outcome_report(store, "branch", UTC)
        assert "pr" not in report["rows"][0]["outcome"]  # b's: its first call came first
        assert report == build_outcome_report(store, "branch", UTC, from_sums=False)


def test_a_node_naming_new_commit_times_forever_gets_its_session_read_raw(
    tmp_path: Path,
) -> None:
    """Cuts are bounded per session: past MAX_CUTS the session is read call by call (and the
    report is still the one reading every call gives)."""
    with Store(tmp_path / DB_FILE) as store:
        calls = [
            UsageEvent(f"c{i}", T0 + i * 60.0, Agent.CLAUDE_CODE, "claude-sonnet-4-5",
                       Tokens(input=10), "s1", machine="n1")
            for i in range(30)
        ]  # fmt: skip
        store.ingest("n1", "e", 1, 30, calls, None, T0)
        with store.writing() as db:
            create_table(db)
        for n in range(6):  # 6 x 500 commit times, each outcome newer than the last
            commits = tuple(
                Commit(f"{n:04x}{i:08x}", T0 + n * 0.01 + i * 3.1, 1, 0, "trailer", "x")
                for i in range(500)
            )
            with store.writing() as db:
                record(db, "n1", [SessionOutcome("s1", T0 + n, "ok", "", "r", "main", commits)])
        db = store.reading()
        assert db.execute("SELECT count(*) FROM outcome_cuts").fetchone()[0] <= MAX_CUTS
        assert db.execute("SELECT dirty FROM outcome_sessions").fetchall() == [(1,)]
        for by in OUTCOME_KEYS:
            fast = build_outcome_report(store, by, UTC)
            assert fast == build_outcome_report(store, by, UTC, from_sums=False)

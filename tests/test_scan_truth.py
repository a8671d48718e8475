"""`node-agent scan` of a generated fleet equals the generator's truth, to the token and the cent.

The generator (node_agent.simulate) computes its truth with its own small price list and its own
knowledge of what each call was; nothing here shares code with the sources or the price tables.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from node_agent.report import Query, build_report
from node_agent.scan import ScanResult, scan
from node_agent.simulate.fleet import generate_fleet
from node_agent.simulate.truth import Total, Truth
from pricing import CostClass, PriceBook
from pricing.rollup import Attribution, Rollup
from shared.config import NodeConfig
from shared.events import Agent, LimitKind, Tokens

SEED = 11
KEYS = ("machine", "profile", "agent", "session", "model", "day", "role")
TRUTH_KEYS = ("machine", "profile", "agent", "session_id", "model", "day", "role")


@dataclass(frozen=True)
class Fleet:
    root: Path
    truth: Truth
    machines: list[Path]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    root = tmp_path_factory.mktemp("fleet") / "fleet"
    generate_fleet(root, seed=SEED, machines=3, start=datetime(2026, 10, 5, tzinfo=UTC), days=4)
    truth = Truth.load(root / "truth.json")
    machines = sorted(p for p in root.iterdir() if p.is_dir())
    return Fleet(root, truth, machines)


def scan_machines(fleet: Fleet) -> Iterator[tuple[Path, ScanResult]]:
    for machine in fleet.machines:
        yield machine, scan([machine], NodeConfig(node=machine.name))


@pytest.fixture(scope="module")
def scanned(fleet: Fleet) -> list[tuple[Path, ScanResult]]:
    return list(scan_machines(fleet))


def rollup_of(scanned: list[tuple[Path, ScanResult]], by: tuple[str, ...]) -> Rollup:
    book = PriceBook.default()
    report = Rollup(by, UTC)
    for machine, result in scanned:
        for target_result in result.results:
            # The truth names a profile by its home's folder (claude, claude-max2, codex, ...).
            attribution = Attribution(machine=machine.name, profile=target_result.target.path.name)
            for event in target_result.collector.events.counted_usage():
                report.add(event, book.price(event, target_result.target.billing), attribution)
    return report


def as_truth_key(keys: dict[str, str | None]) -> tuple[str, ...]:
    out = []
    for name in KEYS:
        value = keys[name] or ""
        if name == "session" and keys["agent"] == Agent.CURSOR.value:
            value = ""  # Cursor rows carry no session; the source makes a synthetic id
        out.append(value)
    return tuple(out)


def test_every_group_matches_truth_to_the_token_and_cent(
    fleet: Fleet, scanned: list[tuple[Path, ScanResult]]
) -> None:
    report = rollup_of(scanned, KEYS)
    got: dict[tuple[str, ...], Total] = {}
    for row in report.rows.values():
        total = got.setdefault(as_truth_key(row.keys), Total())
        total.calls += row.calls
        total.tokens = total.tokens + row.tokens
        total.cost += row.api_equivalent
        total.unknown_calls += row.unknown_calls
    want = fleet.truth.total_by(*TRUTH_KEYS)
    assert len(want) > 100, "the corpus is too small to mean anything"
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"missing {missing[:5]} extra {extra[:5]}"
    diffs = [
        (
            key,
            (got[key].calls, got[key].tokens, got[key].cost, got[key].unknown_calls),
            (w.calls, w.tokens, w.cost, w.unknown_calls),
        )
        for key, w in want.items()
        if (got[key].calls, got[key].tokens, got[key].cost, got[key].unknown_calls)
        != (w.calls, w.tokens, w.cost, w.unknown_calls)
    ]
    assert not diffs, f"{len(diffs)} groups differ, e.g. {diffs[:3]}"


def test_grand_total_and_classes(fleet: Fleet, scanned: list[tuple[Path, ScanResult]]) -> None:
    report = rollup_of(scanned, ())
    want = fleet.truth.total()
    assert report.total.calls == want.calls
    assert report.total.tokens == want.tokens
    assert report.total.api_equivalent == want.cost
    assert report.total.unknown_calls == want.unknown_calls > 0
    # No profile configured: everything priced is metered, or estimated where the log lacked
    # the cache-write split; never subscription-included.
    classes = report.total.by_class
    assert classes.get(CostClass.SUBSCRIPTION_INCLUDED, Decimal(0)) == 0
    assert classes[CostClass.METERED] + classes[CostClass.ESTIMATED] == want.cost
    assert classes[CostClass.ESTIMATED] > 0


def test_problems_are_reported_with_file_and_line(
    fleet: Fleet, scanned: list[tuple[Path, ScanResult]]
) -> None:
    problems = [p for _, r in scanned for t in r.results for p in t.collector.problems]
    got = sorted((Path(p.path).resolve(), p.line) for p in problems if p.line)
    want = sorted(
        ((fleet.root / p["path"]).resolve(), p["line"])
        for p in fleet.truth.problems
        if p["kind"] == "garbage_line"  # torn tails are still being written: not problems
    )
    assert got == want
    assert len(want) == fleet.truth.counts["parse_problems"]


def test_skips_and_limit_hits(fleet: Fleet, scanned: list[tuple[Path, ScanResult]]) -> None:
    skipped = sum((t.collector.skipped for _, r in scanned for t in r.results), start=Counter())
    assert skipped["incomplete last line (still being written)"] == fleet.truth.counts["torn_tails"]
    hits = [
        e
        for _, r in scanned
        for t in r.results
        for e in t.collector.events.limits.values()
        if e.kind is LimitKind.RATE_LIMIT_HIT
    ]
    assert len(hits) == fleet.truth.counts["rate_limit_hits"]
    # Every `<synthetic>` Claude line is either a limit hit or skipped; none is a call.
    claude_hits = sum(1 for h in hits if h.agent is Agent.CLAUDE_CODE)
    assert skipped["synthetic"] + claude_hits == fleet.truth.counts["synthetic_lines"]
    want_resets = sorted((h["resets_at"] or 0.0) for h in fleet.truth.rate_limit_hits)
    assert sorted((h.resets_at or 0.0) for h in hits) == pytest.approx(want_resets)


def run_cli(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "node_agent.cli", "scan", "--json", *args],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    data: dict[str, Any] = orjson.loads(proc.stdout)
    return data


def test_cross_project_fork_is_read_together(fleet: Fleet) -> None:
    forks = fleet.truth.realism.get("claude.fork_copy", [])
    assert forks, "the corpus should hold a Claude fork"
    query = Query(("agent",), UTC)
    report = build_report(fleet.machines, NodeConfig(), query, jobs=1)
    claude = report.rollup.rows[(Agent.CLAUDE_CODE.value,)]
    assert claude.calls == fleet.truth.total(agent=Agent.CLAUDE_CODE.value).calls


def test_cli_json_twice_is_identical_and_matches_truth(fleet: Fleet) -> None:
    """Two scans, one in process and one split over worker processes, print the same JSON.
    The corpus has a Claude fork copied into another project dir, so the parallel split must
    notice the shared message ids and read those units again together."""
    paths = [str(m) for m in fleet.machines]
    first = run_cli("--by", "day,agent", "--jobs", "1", *paths)
    second = run_cli("--by", "day,agent", "--jobs", "2", *paths)
    assert first == second
    want = fleet.truth.total()
    total = first["total"]
    assert isinstance(total, dict)
    assert total["calls"] == want.calls
    assert Decimal(total["cost"]["api_equivalent"]) == want.cost
    assert total["cost"]["unknown"] is None  # there are unpriced calls: no dollar figure
    assert (
        Tokens(**total["tokens"], web_search_requests=total["web_search_requests"]) == want.tokens
    )
    rows = first["rows"]
    assert isinstance(rows, list)
    for row in rows:
        assert set(row["cost"]) == {
            "api_equivalent",
            "metered",
            "subscription_included",
            "estimated",
            "unknown",
        }
        want_row = fleet.truth.total(day=row["day"], agent=row["agent"])
        assert row["calls"] == want_row.calls
        assert Decimal(row["cost"]["api_equivalent"]) == want_row.cost

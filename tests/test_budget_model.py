"""Budgets as parsed from untrusted text, and their periods cut in a stated zone."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from hub.budgets.evaluation import limit_marks, p95
from hub.budgets.model import (
    Basis,
    BudgetError,
    PeriodKind,
    ScopeKind,
    check_budgets,
    parse_budget,
)
from hub.budgets.periods import bucket_at, calendar_bounds, window_slots

BASE = {"name": "b", "scope": "fleet", "period": "day", "basis": "paid", "limit": "50"}


def budget(**changes: object) -> dict[str, object]:
    return {**BASE, **changes}


def test_a_budget_reads_as_the_user_wrote_it() -> None:
    b = parse_budget(
        budget(scope="project=/src/x,agent=claude-code", limit="$12.345678901", action="kill",
               thresholds="75,90", tz="Europe/Berlin", next_period="resume")
    )  # fmt: skip
    assert b.scope.parts == ((ScopeKind.AGENT, "claude-code"), (ScopeKind.PROJECT, "/src/x"))
    assert b.limit == Decimal("12.345678901")  # exact, in the unit given
    assert b.thresholds == (75, 90, 100)  # the limit itself is always one
    assert parse_budget(b.to_table() | {"thresholds": list(b.thresholds)}) == b
    assert parse_budget(budget(period="5h")).period.seconds == 5 * 3600
    quota = parse_budget(budget(basis="quota", period="week", limit="90%"))
    assert quota.basis is Basis.QUOTA and quota.period.window == "weekly"


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"scope": "galaxy=x"}, "not a scope kind"),
        ({"scope": "machine="}, "machine needs a value"),
        ({"scope": "machine=a,agent=b,model=c"}, "at most two"),
        ({"period": "fortnight"}, "rolling window such as 5h"),
        ({"period": "1s"}, "10s to 31d"),
        ({"limit": "-1"}, "positive amount"),
        ({"limit": "NaN"}, "positive amount"),
        ({"limit": 1.5}, "floats are not exact"),
        ({"basis": "quota", "period": "day", "limit": "90"}, "5h or week"),
        ({"basis": "quota", "period": "5h", "limit": "150"}, "at most 100"),
        ({"basis": "quota", "period": "5h", "limit": "90", "scope": "model=x"}, "quota budget"),
        ({"action": "explode"}, "alert | pause | kill"),
        ({"tz": "Mars/Olympus"}, "not an IANA zone"),
        ({"thresholds": "50,abc"}, "not a whole percent"),
        ({"name": ""}, "name"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_a_bad_budget_is_one_clear_line(changes: dict[str, object], says: str) -> None:
    with pytest.raises(BudgetError) as caught:
        parse_budget(budget(**changes))
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_child_may_not_exceed_its_parent() -> None:
    fleet = parse_budget(budget(name="fleet", limit="40"))
    child = parse_budget(budget(name="spark02", scope="machine=spark02", limit="50"))
    other_period = parse_budget(budget(name="wk", scope="machine=spark02", period="week",
                                       limit="500"))  # fmt: skip
    with pytest.raises(BudgetError, match="exceeds its parent 'fleet'"):
        check_budgets([fleet, child])
    assert len(check_budgets([fleet, other_period])) == 2  # another period: not a child
    with pytest.raises(BudgetError, match="defined twice"):
        check_budgets([fleet, fleet])


def test_calendar_periods_are_cut_in_the_stated_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29: Berlin's spring-forward day has 23 hours
    noon = datetime(2026, 3, 29, 12, tzinfo=berlin).timestamp()
    start, end = calendar_bounds(PeriodKind.DAY, berlin, noon)
    assert end - start == 23 * 3600
    assert datetime.fromtimestamp(start, berlin).hour == 0
    week_start, _ = calendar_bounds(PeriodKind.WEEK, berlin, noon)
    assert datetime.fromtimestamp(week_start, berlin).weekday() == 0  # Monday
    month_start, month_end = calendar_bounds(PeriodKind.MONTH, ZoneInfo("UTC"), noon)
    assert datetime.fromtimestamp(month_start, ZoneInfo("UTC")).day == 1
    assert datetime.fromtimestamp(month_end, ZoneInfo("UTC")).month == 4
    utc_day = parse_budget(budget())
    berlin_day = parse_budget(budget(tz="Europe/Berlin"))
    late = datetime(2026, 3, 29, 23, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert bucket_at(utc_day, late) != bucket_at(berlin_day, late)  # already the 30th there
    rolling = parse_budget(budget(period="10s"))
    low, high = window_slots(rolling, 1000.0)
    assert high - low + 1 == 60
    # the window spans its length, whatever the length
    assert int(bucket_at(rolling, 1000.0 - 9.7)) >= low  # (to a slot: a sixtieth)
    assert int(bucket_at(rolling, 1000.0 - 10.2)) < low


def test_marks_are_exact_and_a_hard_stop_keeps_a_call_of_headroom() -> None:
    soft = parse_budget(budget(limit="1.00"))
    hard = parse_budget(budget(limit="1.00", action="pause"))
    limit = Decimal("1.00")
    assert [m for m, _ in limit_marks(soft, Decimal("0.999999999"), limit, Decimal(0))] == [
        "50@1.00",
        "80@1.00",
    ]
    assert ("100@1.00", "alert") in limit_marks(soft, Decimal("1.000000000"), limit, Decimal(0))
    # a hard budget stops once less than one typical call is left
    headroom = p95([Decimal("0.10")] * 19 + [Decimal("0.30")])
    assert headroom == Decimal("0.10")
    assert ("100@1.00", "pause") in limit_marks(hard, Decimal("0.90"), limit, headroom)
    assert ("100@1.00", "pause") not in limit_marks(hard, Decimal("0.89"), limit, headroom)

"""Billing exports read row by row (the traps: BOM, quoted commas, strings against numbers, CNY
with and without its rate, Beijing-time hours, units in thousands), filed in a real SQLite store
(the same file twice adds nothing, a newer export replaces, a partial day never replaces a
complete one), and Cursor's own dollars held against the fleet's estimate of the same calls."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from msgspec.structs import replace

from hub.reconcile.billed_store import BilledImports
from hub.reconcile.cursor_billed import VALUATION, cursor_side
from hub.reconcile.imports import (
    UNSPLIT,
    ImportFileError,
    ImportOptions,
    Rate,
    parse_file,
    parse_rate,
)
from pricing import Billing, PriceBook
from shared.events import Agent, Tokens, UsageEvent

BOM = "\ufeff"
GENERIC = (
    BOM + "day,provider,model,key,input_tokens,output_tokens,cache_read_tokens,amount,currency,"
    "fx_rate,fx_date\n"
    '2026-04-20,deepseek,deepseek-chat,sk-1,"1,000,000",500000,0,$0.49,USD,,\n'  # quoted commas
    "2026-04-21,deepseek,deepseek-chat,sk-1,1000000,5E+5,0,3.5525,CNY,7.25,2026-04-21\n"
    "2026-04-22,deepseek,deepseek-chat,sk-1,1000000,500000,0,3.55,CNY,,\n"  # CNY, no rate
    "2026-04-22,deepseek,deepseek-chat,sk-1,1000000,500000,0,1,234.00,USD,,\n"  # unquoted comma
    "2026-04-23,deepseek,deepseek-chat,sk-1,10.5,500000,0,1,USD,,\n"  # half a token
    '2026-04-23,deepseek,deepseek-chat,sk-1,1000,500,0,"0.00049",,,\n'  # no currency
    "2026-04-23,deepseek,deepseek-chat,,1000,500,0,0.00049,usd,,\n"  # no key: "-"
)


def parse(text: str, fmt: str = "generic", **options: object) -> tuple[list[object], list[str]]:
    parsed = parse_file(text.encode(), "bill.csv", fmt, ImportOptions(**options))  # type: ignore[arg-type]
    return list(parsed.rows), parsed.errors


def test_the_generic_csv_keeps_good_rows_and_names_each_bad_one() -> None:
    parsed = parse_file(GENERIC.encode(), "bill.csv", "generic", ImportOptions())
    assert [(r.day.day, r.key, r.currency) for r in parsed.rows] == [
        (20, "sk-1", "USD"),
        (21, "sk-1", "CNY"),
        (23, "-", "USD"),
    ]
    first, cny, keyless = parsed.rows
    assert first.tokens == Tokens(input=1_000_000, output=500_000)
    assert first.amount == Decimal("0.49") and first.usd == Decimal("0.49")
    assert first.token_class == UNSPLIT
    # CNY: kept as charged, with its rate and day; dollars only through that rate
    assert cny.amount == Decimal("3.5525") and cny.currency == "CNY"
    assert cny.rate == Rate("CNY", Decimal("7.25"), date(2026, 4, 21))
    assert cny.usd == Decimal("0.49")
    assert cny.tokens.output == 500_000  # "5E+5", a spreadsheet's spelling
    assert keyless.usd == Decimal("0.00049")
    assert parsed.errors == [
        "bill.csv:4: currency: CNY with no rate: give fx_rate and fx_date in the row or --rate "
        "CNY=UNITS_PER_USD@YYYY-MM-DD (never counted as dollars without one)",
        "bill.csv:5: 12 fields where the header has 11 (a comma inside an unquoted number?)",
        "bill.csv:6: input_tokens: '10.5' is not a whole number of tokens",
        "bill.csv:7: currency: missing: say USD or CNY (never assumed)",
    ]
    assert parsed.refused == 4


def test_a_rate_given_on_the_command_line_converts_rows_without_one() -> None:
    rate = parse_rate("CNY=7.1@2026-04-22")
    rows, errors = parse(GENERIC, rates={"CNY": rate})
    assert not any(":4:" in e for e in errors)
    converted = [r for r in rows if r.day == date(2026, 4, 22)]  # type: ignore[attr-defined]
    assert [r.usd for r in converted] == [Decimal("3.55") / Decimal("7.1")]  # type: ignore[attr-defined]
    for bad in ("CNY=7.1", "CNY=0@2026-04-22", "CNY=x@2026-04-22", "CNY=7.1@2026-13-01"):
        with pytest.raises(ValueError, match="CNY"):
            parse_rate(bad)


def test_provider_column_or_flag_and_whole_file_faults() -> None:
    text = "day,model,amount,currency\n2026-04-20,glm-4.6,1.5,USD\n"
    rows, errors = parse(text)
    assert rows == [] and errors == [
        "bill.csv:2: provider: missing: add the column or give --provider"
    ]
    rows, errors = parse(text, provider="zhipu")
    assert len(rows) == 1 and not errors
    rows, errors = parse("day,provider,model,amount,currency\n2026-04-20,acme,m,1,USD\n")
    assert errors == ["bill.csv:2: provider: 'acme' is not one of deepseek, qwen, zhipu"]
    rows, errors = parse("day,provider,model,key,amount,currency\n2026-04-20,qwen,m,a\x07b,1,USD\n")
    assert errors == ["bill.csv:2: key: 'a\\x07b' is not a name"]
    with pytest.raises(
        ImportFileError, match=r"bill.csv:1: no column for amount \(amount / cost\)"
    ):
        parse("day,provider,model\n2026-04-20,deepseek,m\n")
    with pytest.raises(ImportFileError, match="empty: no header"):
        parse("")
    with pytest.raises(ImportFileError, match="unknown format"):
        parse("a\n", fmt="xlsx")
    # a broken quote ends the rows there: those before it are kept
    rows, errors = parse(
        "day,provider,model,amount,currency\n2026-04-20,zhipu,glm-4.6,1,USD\n"
        '2026-04-21,zhipu,"glm-4.6,1,USD\n'
    )
    assert len(rows) == 1 and len(errors) == 1 and "bad CSV" in errors[0]


DASHSCOPE = (
    BOM + "Billing Cycle,Product Detail,Instance ID,Usage Start Time,Usage,Usage Unit,"
    "Pretax Amount,Amount After Price Reduction,Currency\n"
    # 2026-04-20 07:00 Beijing = 2026-04-19 23:00 UTC: the first UTC day, in part
    "2026-04,Model Studio Foundation Model Inference,12345;llm-ws1;qwen3-coder-plus;"
    "input_token;api,2026-04-20 07:00:00,2000,1K tokens,0.90,0.80,CNY\n"
    "2026-04,Model Studio Foundation Model Inference,12345;llm-ws1;qwen3-coder-plus;"
    'output_token;api,2026-04-20 09:00:00,"1,000",1K tokens,16.00,16.00,CNY\n'
    "2026-04,Model Studio Foundation Model Inference,text_token;llm-ws1;qwen-max;"
    "output_token;app,2026-04-20 09:00:00,100,tokens,0.01,0.01,CNY\n"
    "2026-04,Model Studio Foundation Model Inference,12345;llm-ws1;qwen3-coder-plus;"
    "input_token_cache_hit;api,2026-04-20 10:00:00,500,1K tokens,0.40,0.40,CNY\n"
    "2026-04,Model Studio Foundation Model Inference,12345;qwen3-coder-plus,"
    "2026-04-20 10:00:00,5,1K tokens,0.40,0.40,CNY\n"
    "2026-04,Model Studio Foundation Model Inference,12345;llm-ws1;qwen3-coder-plus;"
    "input_token;api,2026-04-20 11:00:00,1.5,tokens,0.40,0.40,CNY\n"
)


def test_the_dashscope_bill_details_export() -> None:
    rate = parse_rate("CNY=7.2@2026-04-20")
    parsed = parse_file(
        DASHSCOPE.encode(), "bill.csv", "dashscope", ImportOptions(rates={"CNY": rate})
    )
    assert parsed.errors == [
        "bill.csv:6: Instance ID: '12345;qwen3-coder-plus' is not "
        "ApiKeyID;WorkspaceID;ModelName;Input/Output Type;Channel",
        "bill.csv:7: Usage: '1.5' tokens is not a whole number of tokens",
    ]
    early, output, old, cached = parsed.rows
    assert early.day == date(2026, 4, 19) and output.day == date(2026, 4, 20)  # Beijing time
    assert (early.key, early.model, early.token_class) == ("12345", "qwen3-coder-plus", "input")
    assert early.tokens.input == 2_000_000 and early.amount == Decimal("0.80")  # after reduction
    assert output.tokens.output == 1_000_000
    assert output.usd * Decimal("7.2") == Decimal(16)  # at 40 digits, to the last place
    assert (old.key, old.model, old.tokens.output) == ("-", "qwen-max", 100)  # before 2025-12
    assert cached.token_class == "cache_read" and cached.tokens.cache_read == 500_000
    # an export of Beijing days covers its first and last UTC days in part
    assert parsed.partial == {date(2026, 4, 19), date(2026, 4, 20)}
    assert all(r.provider == "qwen" for r in parsed.rows)
    # no rate for CNY: every row refused, said by line
    refused = parse_file(DASHSCOPE.encode(), "bill.csv", "dashscope", ImportOptions())
    assert refused.rows == [] and refused.refused == 6
    # --tz: the export states UTC times
    utc = parse_file(
        DASHSCOPE.encode(),
        "bill.csv",
        "dashscope",
        ImportOptions(rates={"CNY": rate}, zone="UTC"),
    )
    assert utc.rows[0].day == date(2026, 4, 20) and utc.partial == set()


def _rows(text: str) -> list:  # type: ignore[type-arg]
    return parse_file(text.encode(), "bill.csv", "generic", ImportOptions()).rows


DAY_ONE = "day,provider,model,key,input_tokens,output_tokens,amount,currency\n"


def test_the_store_files_each_day_once_and_replaces_it_with_a_newer_export(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hub.db"
    first = _rows(
        DAY_ONE + "2026-04-20,deepseek,deepseek-chat,sk-1,1000,500,0.10,USD\n"
        "2026-04-21,deepseek,deepseek-chat,sk-1,1000,500,0.20,USD\n"
    )
    with BilledImports(db) as imports:
        done = imports.store(first, date(2026, 4, 21), "a.csv")
        assert done.added == ["deepseek 2026-04-20", "deepseek 2026-04-21"]
        assert done.partial == ["deepseek 2026-04-21"]  # taken that day: still open
        again = imports.store(first, date(2026, 4, 21), "a.csv")
        assert again.unchanged == done.added and again.rows == 0
        count = imports._db.execute("SELECT count(*) FROM billed_import_rows").fetchone()[0]
        assert count == 2  # the same export twice adds nothing
        # a newer export of the same days: the 21st now whole, the 20th restated
        newer = _rows(
            DAY_ONE + "2026-04-20,deepseek,deepseek-chat,sk-1,1000,500,0.11,USD\n"
            "2026-04-21,deepseek,deepseek-chat,sk-1,3000,900,0.50,USD\n"
        )
        replaced = imports.store(newer, date(2026, 4, 25), "b.csv")
        assert replaced.replaced == ["deepseek 2026-04-20", "deepseek 2026-04-21"]
        assert replaced.partial == []
        # an older, partial export of the 21st does not undo the complete one
        kept = imports.store(first[1:], date(2026, 4, 21), "a.csv")
        assert kept.kept == ["deepseek 2026-04-21"]
        held = imports.imported(date(2026, 4, 20), date(2026, 4, 21), None)
    day20 = held.figures[("deepseek", date(2026, 4, 20), "deepseek-chat", "sk-1")]
    day21 = held.figures[("deepseek", date(2026, 4, 21), "deepseek-chat", "sk-1")]
    assert day20.usd == Decimal("0.11") and day21.usd == Decimal("0.50")
    assert day21.tokens == Tokens(input=3000, output=900)
    assert held.partial == {} and held.covered == {
        "deepseek": {date(2026, 4, 20), date(2026, 4, 21)}
    }


def test_cny_stays_cny_beside_its_dollars(tmp_path: Path) -> None:
    rows = _rows(
        "day,provider,model,key,amount,currency,fx_rate,fx_date\n"
        "2026-04-20,zhipu,glm-4.6,k,7.25,CNY,7.25,2026-04-19\n"
        "2026-04-20,zhipu,GLM-4.6,k,1.00,USD,,\n"  # as a console spells it
    )
    with BilledImports(tmp_path / "hub.db") as imports:
        imports.store(rows, date(2026, 5, 1), "z.csv")
        figure = imports.imported(date(2026, 4, 20), date(2026, 4, 20), ["zhipu"]).figures[
            ("zhipu", date(2026, 4, 20), "glm-4.6", "k")
        ]
    assert figure.usd == Decimal(2)
    assert figure.original == {"CNY": Decimal("7.25")}
    assert figure.rates == {"CNY 7.25/USD on 2026-04-19"}


def cursor_call(
    n: int, kind: str, cost: str | None, *, model: str = "claude-4.5-sonnet", profile: str = "cur"
) -> UsageEvent:
    return UsageEvent(
        event_id=f"cursor:{kind}:{n}:{model}",
        ts=datetime(2026, 4, 20, 12, tzinfo=UTC).timestamp() + n,
        agent=Agent.CURSOR,
        model=model,
        tokens=Tokens(input=1000, output=1000, cache_read=10_000),
        session_id="cursor:2026-04-20",
        service_tier=kind,
        reported_cost_usd=cost,
        machine="spark01",
        profile=profile,
    )


def test_cursor_dollars_against_the_fleets_estimate() -> None:
    book = PriceBook.default()
    # sonnet 4.5 at list: 1000 in $0.003 + 1000 out $0.015 + 10k read $0.003 = $0.021
    events = [
        cursor_call(1, "On-Demand", "0.021"),
        cursor_call(2, "On-Demand", "0.021"),
        cursor_call(3, "Included", "0.05"),  # Cursor values it at more than list
        cursor_call(4, "Included", None),  # a label: no figure, compared on neither side
        cursor_call(5, "On-Demand", "0.3", model="auto"),  # no list price: unknown
    ]
    day = date(2026, 4, 20)
    side = cursor_side(events, book, {}, day, day)
    demand = ("cursor", day, "claude-4.5-sonnet", "spark01/cur")
    included = ("cursor", day, "claude-4.5-sonnet", "spark01/cur included")
    assert side.billed[demand].usd == Decimal("0.042") == side.fleet[demand].paid
    assert side.billed[included].usd == Decimal("0.05")
    assert side.fleet[included].paid == Decimal("0.021")  # the API-equivalent estimate
    assert side.billed[included].other == [VALUATION]
    auto = ("cursor", day, "auto", "spark01/cur")
    assert side.fleet[auto].unknown_calls == 1 and auto not in side.billed
    assert side.days == {day}
    # the same on-demand calls on a plan: the fleet classed them as included
    on_plan = cursor_side(events, book, {("spark01", "cur"): Billing.SUBSCRIPTION}, day, day)
    assert on_plan.fleet[demand].paid == 0
    assert on_plan.fleet[demand].subscription == Decimal("0.042")
    # outside the days asked: nothing
    assert cursor_side(events, book, {}, date(2026, 4, 21), date(2026, 4, 22)).billed == {}


def test_the_store_side_reads_cursor_calls_and_imports_together(tmp_path: Path) -> None:
    """StoreBilled on a real store: Cursor's calls of today are partial (still coming in), an
    import's figures come with them, and a provider not asked for is not read."""
    from hub.reconcile.local import StoreBilled
    from hub.store import Store

    today = datetime.now(UTC).date()
    now = datetime.now(UTC).timestamp()
    calls = [replace(cursor_call(n, "On-Demand", "0.021"), ts=now - n) for n in range(3)]
    with Store(tmp_path / "hub.db") as store:
        store.ingest("spark01", "s1", 1, 3, calls, None, now)
    with BilledImports(tmp_path / "hub.db") as imports:
        imports.store(
            _rows(DAY_ONE + f"{today},qwen,qwen3-coder-plus,k,1000,500,0.10,USD\n"),
            today,
            "q.csv",
        )
    local = StoreBilled(tmp_path / "hub.db", PriceBook.default())
    side = local(today, today, None)
    assert side.partial == {"cursor": {today}, "qwen": {today}}
    assert side.covered == {"cursor": {today}, "qwen": {today}}
    key = ("cursor", today, "claude-4.5-sonnet", "spark01/cur")
    assert side.billed[key].usd == Decimal("0.063") == side.fleet[key].paid
    assert set(local(today, today, ["qwen"]).billed) == {("qwen", today, "qwen3-coder-plus", "k")}
    assert local.has_any()

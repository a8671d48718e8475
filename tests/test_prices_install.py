"""Installed price tables: laid over the shipped ones for their span only, each validation error
named (file, model, field) with nothing changed, the CLI's one-line errors, and a kill -9 in
the middle of `fleet-hub prices install` leaving the old tables or the new, never a mix."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from pricing import PriceBook, PriceTableError
from pricing._tables import load_package
from pricing.installed import install_table, installed_state, overlay, read_installed
from shared.events import Agent, Tokens, UsageEvent
from tests.fleet_harness import ROOT, child_env

OPUS = "claude-opus-4-5"
HEAD = 'schema = 1\nprovider = "anthropic"\ncurrency = "USD"\n'
SOURCE = 'sources = [{ name = "cost report", ref = "reconciliation", checked = 2026-12-01 }]\n'
GOOD_RATES = {
    "input": "4",
    "output": "20",
    "reasoning": "20",
    "cache_read": "0.4",
    "cache_write_5m": "5",
    "cache_write_1h": "8",
}


def table(
    rates: dict[str, str] | None = None,
    *,
    model: str = OPUS,
    start: str = "2026-11-01",
    until: str | None = "2026-11-15",
    extra: str = "",
) -> str:
    rates = GOOD_RATES if rates is None else rates
    lines = [HEAD, "[[models]]", f'id = "{model}"', 'name = "Claude Opus 4.5"', SOURCE, extra]
    lines += ["[[models.periods]]", f"from = {start}"]
    if until is not None:
        lines.append(f"until = {until}")
    lines.append("[models.periods.rates]")
    lines += [f'{k} = "{v}"' for k, v in rates.items()]
    return "\n".join(lines) + "\n"


def put(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def call(day: str, model: str = "claude-opus-4-5-20251101") -> UsageEvent:
    ts = datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC).timestamp()
    return UsageEvent(
        event_id=f"claude:m:{day}",
        ts=ts,
        agent=Agent.CLAUDE_CODE,
        model=model,
        tokens=Tokens(input=1_000_000, output=1_000_000),
        session_id="s",
        machine="m",
    )


def test_an_installed_period_prices_its_span_and_the_shipped_rates_resume(tmp_path: Path) -> None:
    folder = tmp_path / "prices"
    done = install_table(put(tmp_path, "opus-fix.toml", table()), folder)
    assert done.path == folder / "opus-fix.toml" and not done.replaced
    assert "claude-opus-4-5 from 2026-11-01: input 5 -> 4" in [str(c) for c in done.changes]
    book = PriceBook(overlay(load_package(), read_installed(folder)))
    # shipped $5 + $25 before, installed $4 + $20 within [11-01, 11-15), shipped again after
    prices = {
        d: book.price(call(d)).api_equivalent for d in ("2026-10-31", "2026-11-03", "2026-11-20")
    }
    assert prices == {
        "2026-10-31": Decimal(30),
        "2026-11-03": Decimal(24),
        "2026-11-20": Decimal(30),
    }
    period = book.lookup(OPUS, datetime(2026, 11, 3, tzinfo=UTC))
    assert period is not None and period.file == str(folder / "opus-fix.toml")


def test_the_default_book_is_the_shipped_one_with_the_installed_over_it(tmp_path: Path) -> None:
    folder = tmp_path / "prices"
    install_table(put(tmp_path, "opus-fix.toml", table(until=None)), folder)
    code = (
        "from pricing import PriceBook; from datetime import datetime, UTC; "
        "p = PriceBook.default().lookup('claude-opus-4-5', datetime(2026, 12, 1, tzinfo=UTC)); "
        "print(p.rates.input, p.file)"
    )
    env = {**child_env(tmp_path), "FLEETMETER_PRICES_DIR": str(folder)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["4", str(folder / "opus-fix.toml")]


# (what is wrong, the file's text, the key the error must name, words of its message)
BAD = [
    (
        "a token class left out",
        table({k: v for k, v in GOOD_RATES.items() if k != "cache_write_1h"}),
        "models[claude-opus-4-5].periods[0].rates.cache_write_1h",
        "is missing",
    ),
    (
        "the 1-hour write not 2x input",
        table({**GOOD_RATES, "cache_write_1h": "7"}),
        "models[claude-opus-4-5].periods[0].rates.cache_write_1h",
        "not 2x the input rate 4",
    ),
    (
        "the 5-minute write not 1.25x input",
        table({**GOOD_RATES, "cache_write_5m": "4"}),
        "models[claude-opus-4-5].periods[0].rates.cache_write_5m",
        "not 1.25x",
    ),
    (
        "reasoning priced apart from output",
        table({**GOOD_RATES, "reasoning": "4"}),
        "models[claude-opus-4-5].periods[0].rates.reasoning",
        "not the output rate 20",
    ),
    (
        "a per-token rate where per-million belongs",
        table(
            {
                "input": "0.000004",
                "output": "0.00002",
                "reasoning": "0.00002",
                "cache_read": "0.0000004",
                "cache_write_5m": "0.000005",
                "cache_write_1h": "0.000008",
            }
        ),
        "models[claude-opus-4-5].periods[0].rates.cache_read",
        "over 10x off the shipped 0.50",
    ),
    (
        "a name the shipped tables give another model",
        table(extra='match = ["claude-sonnet-4-5"]'),
        "models[claude-opus-4-5].match",
        "shipped 'claude-sonnet-4-5'",
    ),
    (
        "an end before its start",
        table(until="2026-10-01"),
        "models[claude-opus-4-5].periods[0].until",
        "must be after",
    ),
    (
        "a rate as a TOML float",
        table({**GOOD_RATES, "input": "4"}).replace('input = "4"', "input = 4.0"),
        "models[claude-opus-4-5].periods[0].rates.input",
        "decimal string",
    ),
    ("not TOML at all", "schema = 1\nprovider = [", "(syntax)", ""),
]


@pytest.mark.parametrize(("what", "text", "key", "words"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_table_is_refused_by_name_and_changes_nothing(
    tmp_path: Path, what: str, text: str, key: str, words: str
) -> None:
    folder = tmp_path / "prices"
    install_table(
        put(
            tmp_path,
            "first.toml",
            table(
                model="claude-sonnet-4-5",
                extra="",
                rates={
                    **GOOD_RATES,
                    "input": "3",
                    "output": "15",
                    "reasoning": "15",
                    "cache_read": "0.3",
                    "cache_write_5m": "3.75",
                    "cache_write_1h": "6",
                },
            ),
        ),
        folder,
    )
    before = installed_state(folder)
    bad = put(tmp_path, "bad.toml", text)
    with pytest.raises(PriceTableError) as raised:
        install_table(bad, folder)
    assert raised.value.file == str(bad), what
    assert raised.value.key == key
    assert words in raised.value.message
    assert installed_state(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == [".install.lock", "first.toml"]


def test_periods_of_one_model_must_not_overlap_across_files(tmp_path: Path) -> None:
    folder = tmp_path / "prices"
    install_table(put(tmp_path, "november.toml", table(until=None)), folder)
    later = put(tmp_path, "december.toml", table(start="2026-12-01", until=None))
    with pytest.raises(PriceTableError) as raised:
        install_table(later, folder)
    assert str(raised.value) == (
        f"{later}: models[claude-opus-4-5].periods[0].from: overlaps november.toml "
        "models[claude-opus-4-5].periods[0] (2026-11-01 to open-ended); give one of them an "
        "`until`"
    )
    # ended, the first leaves room for the second
    install_table(put(tmp_path, "november.toml", table(until="2026-12-01")), folder)
    install_table(later, folder)
    book = PriceBook(overlay(load_package(), read_installed(folder)))
    [opus] = [m for m in book.models() if m.id == OPUS]
    assert [(p.start.date().isoformat(), str(p.rates.input)) for p in opus.periods][-2:] == [
        ("2026-11-01", "4"),
        ("2026-12-01", "4"),
    ]


def fleet_hub(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        capture_output=True,
        text=True,
        env=child_env(tmp),
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def test_the_command_says_one_line_and_lists_what_is_in_effect(tmp_path: Path) -> None:
    folder = tmp_path / "xdg-data" / "fleetmeter" / "prices"
    bad = put(tmp_path, "bad.toml", table({**GOOD_RATES, "cache_write_1h": "7"}))
    done = fleet_hub(tmp_path, "prices", "install", str(bad), "--config", str(tmp_path / "no.toml"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"fleet-hub prices install: {bad}: models[claude-opus-4-5]")
    missing = fleet_hub(tmp_path, "prices", "install", str(tmp_path / "gone.toml"))
    assert missing.returncode == 2 and "gone.toml: (file): cannot be read" in missing.stderr
    assert missing.stderr.count("\n") == 1

    good = put(tmp_path, "opus-fix.toml", table())
    done = fleet_hub(
        tmp_path, "prices", "install", str(good), "--config", str(tmp_path / "no.toml")
    )
    assert done.returncode == 0, done.stderr
    assert "claude-opus-4-5 from 2026-11-01: input 5 -> 4" in done.stdout
    [audit] = (folder / "installs.jsonl").read_text().splitlines()
    record = orjson.loads(audit)
    assert record["file"] == str(good) and record["installed_as"] == str(folder / "opus-fix.toml")
    assert "claude-opus-4-5 from 2026-11-01: cache_write_1h 10 -> 8" in record["changes"]
    assert record["who"]

    listed = fleet_hub(tmp_path, "prices", "list", "--model", "opus-4-5", "--all", "--json")
    rows = orjson.loads(listed.stdout)["rates"]
    assert [(r["from"], r["until"], r["input"], Path(r["file"]).name) for r in rows] == [
        ("2025-11-01", "2026-11-01", "5", "anthropic.toml"),
        ("2026-11-01", "2026-11-15", "4", "opus-fix.toml"),
        ("2026-11-15", None, "5", "anthropic.toml"),
    ]


def test_a_kill_during_install_leaves_the_old_tables_or_the_new(tmp_path: Path) -> None:
    folder = tmp_path / "xdg-data" / "fleetmeter" / "prices"
    install_table(put(tmp_path, "opus-fix.toml", table()), folder)
    old = (folder / "opus-fix.toml").read_text()
    # the same file name, new rates (and long, so that writing it takes a moment)
    padding = "".join(f"# {'x' * 200}\n" for _ in range(20_000))
    new = padding + table({k: str(Decimal(v) * Decimal("0.9")) for k, v in GOOD_RATES.items()})
    source = tmp_path / "new"
    source.mkdir()
    path = put(source, "opus-fix.toml", new)
    env = child_env(tmp_path)
    command = [sys.executable, "-m", "hub.cli", "prices", "install", str(path), "--config", "x"]
    runs = []
    for _ in range(2):  # the second warm (the parsed-table cache written by the first)
        started = time.monotonic()
        subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True)
        runs.append(time.monotonic() - started)
        assert (folder / "opus-fix.toml").read_text() == new
        (folder / "opus-fix.toml").write_text(old)
    whole = min(runs)  # one install, start to end, on this machine now
    target, partial = folder / "opus-fix.toml", folder / "opus-fix.toml.partial"
    for _ in range(3):  # killed the moment it starts writing (watched in a busy loop)
        before = target.stat().st_mtime_ns
        proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if partial.exists() or target.stat().st_mtime_ns != before:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait()
        assert target.read_text() in (old, new)
        read_installed(folder)
        target.write_text(old)
    rng = random.Random(7)
    seen = set()
    rounds = 0
    # kills aimed all over the install (its checks, its write, its rename), until both ends
    # were seen: killed before the rename and after it
    while rounds < 10 or (seen != {False, True} and rounds < 40):
        rounds += 1
        proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.3, 1.6) * whole)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        text = (folder / "opus-fix.toml").read_text()
        assert text in (old, new)
        seen.add(text == new)
        read_installed(folder)  # every *.toml there loads: no half-written table is read
        if text == new:
            (folder / "opus-fix.toml").write_text(old)  # back, for the next round
    assert seen == {False, True}  # killed before the rename, and after it


def test_a_folder_edited_by_hand_into_a_bad_state_leaves_the_shipped_prices(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "prices"
    install_table(put(tmp_path, "opus-fix.toml", table()), folder)
    (folder / "opus-fix.toml").write_text(table({**GOOD_RATES, "cache_write_1h": "7"}))
    code = (
        "from pricing import PriceBook; from datetime import datetime, UTC; "
        "p = PriceBook.default().lookup('claude-opus-4-5', datetime(2026, 11, 3, tzinfo=UTC)); "
        "print(p.rates.input, p.file)"
    )
    env = {**child_env(tmp_path), "FLEETMETER_PRICES_DIR": str(folder)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["5", "pricing/tables/anthropic.toml"]
    assert out.stderr.strip() == (
        f"installed price tables left out: {folder / 'opus-fix.toml'}: "
        "models[claude-opus-4-5].periods[0].rates.cache_write_1h: 7 is not 2x the input rate 4 "
        "(Anthropic's ratio; give the model a ratio_exception saying why if it truly differs)"
    )


def acme(model: str, start: str, until: str | None = None) -> str:
    end = f"until = {until}\n" if until else ""
    return (
        'schema = 1\nprovider = "acme"\ncurrency = "USD"\n\n[[models]]\n'
        f'id = "{model}"\nname = "{model}"\n{SOURCE}\n[[models.periods]]\nfrom = {start}\n{end}'
        '[models.periods.rates]\ninput = "1"\noutput = "2"\nreasoning = "2"\ncache_read = "0.1"\n'
    )


def test_a_new_provider_in_two_files_and_a_gap_after_an_end(tmp_path: Path) -> None:
    folder = tmp_path / "prices"
    install_table(
        put(tmp_path, "acme-1.toml", acme("acme-one", "2026-01-01", "2026-02-01")), folder
    )
    install_table(put(tmp_path, "acme-2.toml", acme("acme-two", "2026-01-01")), folder)
    book = PriceBook(overlay(load_package(), read_installed(folder)))
    [table] = [t for t in book.tables if t.provider == "acme"]
    assert sorted(m.id for m in table.models) == ["acme-one", "acme-two"]
    inside = book.price(call("2026-01-15", model="acme-one"))
    assert inside.api_equivalent == Decimal(3)  # 1M input at $1 + 1M output at $2
    after = book.price(call("2026-02-15", model="acme-one"))
    assert after.api_equivalent is None and after.notes == ("no price for acme-one on 2026-02-15",)


def test_an_install_waits_for_one_in_progress(tmp_path: Path) -> None:
    folder = tmp_path / "xdg-data" / "fleetmeter" / "prices"
    folder.mkdir(parents=True)
    good = put(tmp_path, "opus-fix.toml", table())
    with open(folder / ".install.lock", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another install is checking and writing
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "prices", "install", str(good), "--config", "x"],
            env=child_env(tmp_path),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=3)  # it would be done by then on its own
        assert proc.poll() is None and not (folder / "opus-fix.toml").exists()
    assert proc.wait(timeout=60) == 0
    assert (folder / "opus-fix.toml").read_text() == good.read_text()

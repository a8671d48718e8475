"""`fleet-hub prices list|check|install`: the price tables in effect, the evidence that one is
wrong, and a corrected table installed without a release.

`install FILE` checks the file with every table it will price beside and installs it in this
user's installed tables (`pricing.installed`), all or nothing; a running hub takes it up
within seconds and re-prices its stored calls; the install is audited (who, which file, which
rates changed) in the hub's audit log when this machine has a hub store, and always in the
folder's `installs.jsonl`. `check` reads the price findings of the last reconciliations
(through the API when a hub serves, else from the store) and prints the rates the providers'
figures imply beside the tables', with a table to install.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import sys
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime
from datetime import time as day_time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import orjson

from hub.api_client import running_hub
from hub.config import load_hub_config
from hub.store import DB_FILE, Store
from pricing import PriceBook, PriceTableError
from pricing.installed import Installed, install_table, installed_files, prices_dir
from shared.cli import EXIT_FAILURE, EXIT_USAGE

PRICE_KIND: Final = "reconcile_price"
CLASSES: Final = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
AUDIT_LOG: Final = "installs.jsonl"
# Anthropic's cache rates follow input: a suggested table keeps them in step.
_ANTHROPIC: Final = {"cache_write_5m": Decimal("1.25"), "cache_write_1h": Decimal(2)}
_ANTHROPIC_READ: Final = Decimal("0.1")
RATE_TOLERANCE: Final = Decimal("0.005")


def add_parser(sub: Any, with_config: Any) -> None:
    p = sub.add_parser("prices", help="the price tables: list, check against bills, install")
    actions = p.add_subparsers(dest="prices_action", required=True, metavar="{list,check,install}")
    show = with_config(actions.add_parser("list", help="the rates in effect and their files"))
    show.add_argument("--model", help="only models whose id contains this")
    show.add_argument("--all", action="store_true", help="every period, not only today's")
    show.add_argument("--json", action="store_true", help="print JSON")
    check = with_config(
        actions.add_parser("check", help="rates the providers' bills imply, from reconciliation")
    )
    check.add_argument("--json", action="store_true", help="print JSON")
    check.add_argument("--out", type=Path, help="write the suggested table to this file")
    check.add_argument("--token", help="API token (default: $FLEETMETER_TOKEN, admin.token)")
    install = with_config(
        actions.add_parser("install", help="install a corrected price table (checked first)")
    )
    install.add_argument("file", type=Path, help="a price table (.toml), the shipped schema")


def cmd_prices(args: argparse.Namespace) -> int:
    action = args.prices_action
    try:
        if action == "list":
            return _list(args)
        if action == "check":
            return _check(args)
        return _install(args)
    except PriceTableError as exc:
        print(f"fleet-hub prices {action}: {exc}", file=sys.stderr)
        return EXIT_USAGE


# -- list ------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    directory = prices_dir()
    book = PriceBook.reload_default()
    now = datetime.now(UTC)
    rows = []
    for table in book.tables:
        for model in table.models:
            if args.model and args.model.lower() not in model.id:
                continue
            periods = model.periods if args.all else [p for p in [model.at(now)] if p]
            for period in periods:
                rates = {c: _text(period.rates.get(c)) for c in (*CLASSES, "reasoning")}
                rows.append(
                    {
                        "provider": table.provider,
                        "model": model.id,
                        "from": period.start.date().isoformat(),
                        "until": period.end.date().isoformat() if period.end else None,
                        **rates,
                        "file": period.file,
                    }
                )
    files = [str(p) for p in installed_files(directory)]
    if args.json:
        out = {"installed_dir": str(directory), "installed_files": files, "rates": rows}
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    print(f"installed tables: {directory} ({len(files)} file{'s' * (len(files) != 1)})")
    header = ["provider", "model", "from", "until", *CLASSES, "file"]
    lines = [[str(r[h] or "") for h in header] for r in rows]
    _print_table(header, lines)
    return 0


def _text(rate: Decimal | None) -> str:
    return "" if rate is None else str(rate)


def _print_table(header: list[str], lines: list[list[str]]) -> None:
    lines = [header, *lines]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


# -- install ---------------------------------------------------------------------------------


def _install(args: argparse.Namespace) -> int:
    directory = prices_dir()
    done = install_table(args.file, directory)
    who = getpass.getuser()
    changed = [str(c) for c in done.changes]
    verb = "replaced" if done.replaced else "installed"
    print(f"{verb} {done.path}")
    for line in changed or ["no base rate changed (notes, sources or tiers only)"]:
        print(f"  {line}")
    where = _audit(args, done, who, changed)
    print(
        f"audited in {where}; a running hub re-prices its stored calls within seconds, "
        "a node daemon on this machine prices its new calls with it"
    )
    return 0


def _audit(args: argparse.Namespace, done: Installed, who: str, changed: list[str]) -> str:
    digest = hashlib.sha256(done.path.read_bytes()).hexdigest()
    record = {
        "ts": time.time(),
        "who": who,
        "file": str(args.file),
        "installed_as": str(done.path),
        "sha256": digest,
        "changes": changed,
    }
    log_path = done.path.parent / AUDIT_LOG
    with open(log_path, "ab") as out:
        out.write(orjson.dumps(record) + b"\n")
        out.flush()
        os.fsync(out.fileno())
    places = [str(log_path)]
    config_path: Path = args.config
    if config_path.is_file():
        config = load_hub_config(config_path)
        if (config.data_dir / DB_FILE).is_file():
            result = "; ".join(changed) or "no base rate changed"
            with Store.in_dir(config.data_dir) as store:
                store.audit(who, "prices install", str(done.path), result[:2000], time.time())
            places.append("the hub's audit log (fleet-hub audit)")
    return " and ".join(places)


# -- check -----------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    config = load_hub_config(args.config)
    client = running_hub(config, args.token)
    if client is not None:
        alerts = client.get("/api/v1/alerts", limit=10_000)["alerts"]
        findings = [(a["text"], a["evidence"]) for a in alerts if a["kind"] == PRICE_KIND]
    else:
        from hub.alerts.cli import _outbox  # the store (or why there is none) and its outbox

        outbox = _outbox(config)
        try:
            records = outbox.alerts(limit=1_000_000)
        finally:
            outbox.close()
        findings = [
            (r.finding.text, r.finding.evidence) for r in records if r.finding.kind == PRICE_KIND
        ]
    book = PriceBook.reload_default()
    evidence = price_evidence((e for _, e in findings), book)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(evidence, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        _print_evidence(evidence)
    suggested = suggested_tables(evidence, book)
    for provider, text in suggested.items():
        out: Path | None = args.out
        if out is not None and len(suggested) > 1:  # one provider per table file
            out = out.with_name(f"{out.stem}-{provider}{out.suffix}")
        if out is not None:
            out.write_text(text, encoding="utf-8")
            said = f"wrote {out}: check it, then `fleet-hub prices install {out}`"
            print(said, file=sys.stderr if args.json else sys.stdout)
        elif not args.json:
            print(f"\n# a {provider} table for the rates above (save it as a .toml, check it,")
            print("# then `fleet-hub prices install FILE`)")
            print(text, end="")
    return EXIT_FAILURE if any(not e["in_effect"] for e in evidence) else 0


def price_evidence(findings: Iterable[dict[str, str]], book: PriceBook) -> list[dict[str, Any]]:
    """One row per (provider, model, day, token class) that a price finding names: the rate
    its tables had, the rate the provider implies, and whether the tables in effect now agree."""
    rows = []
    for ev in findings:
        try:
            day = date.fromisoformat(ev["day"])
        except (KeyError, ValueError):
            continue  # not a reconciliation finding's evidence
        noon = datetime.combine(day, day_time(12), UTC)
        period = book.lookup(ev.get("model", ""), noon, ev.get("provider"))
        for cls in CLASSES:
            implied = _decimal(ev.get(f"implied_{cls}_per_mtok"))
            if implied is None:
                continue
            now = period.rates.get(cls) if period is not None else None
            rows.append(
                {
                    "provider": ev.get("provider", ""),
                    "model": period.model_id if period is not None else ev.get("model", ""),
                    "day": day.isoformat(),
                    "token_class": cls,
                    "table_rate": ev.get(f"table_{cls}_per_mtok"),
                    "table_from": ev.get("table_from"),
                    "implied_rate": str(implied),
                    "rate_now": _text(now) or None,
                    "file_now": period.file if period is not None else None,
                    "in_effect": now is not None and _agree(now, implied),
                }
            )
    rows.sort(key=lambda r: (r["provider"], r["model"], r["day"], CLASSES.index(r["token_class"])))
    return rows


def _decimal(value: str | None) -> Decimal | None:
    try:
        return None if value is None else Decimal(value)
    except InvalidOperation:
        return None


def _agree(table: Decimal, implied: Decimal) -> bool:
    return abs(implied - table) <= RATE_TOLERANCE * max(table, Decimal("0.000001"))


def _print_evidence(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no price findings: the last reconciliations found every rate agreeing")
        return
    header = ["provider", "model", "day", "class", "table $/MTok", "implied", "now", "file now"]
    lines = [
        [
            r["provider"],
            r["model"],
            r["day"],
            r["token_class"],
            r["table_rate"] or "",
            _short(r["implied_rate"]),
            (r["rate_now"] or "unknown") + (" (agrees)" if r["in_effect"] else ""),
            r["file_now"] or "",
        ]
        for r in rows
    ]
    _print_table(header, lines)


def _short(rate: str) -> str:
    return f"{Decimal(rate).quantize(Decimal('0.0001')).normalize():f}"


def suggested_tables(rows: list[dict[str, Any]], book: PriceBook) -> dict[str, str]:
    """A price table for the rates that do not agree yet: per model, from its first such day,
    the latest implied rate of each class; the other classes as the tables have them (for
    Anthropic, cache rates follow a corrected input by the usual ratios)."""
    wrong = [r for r in rows if not r["in_effect"]]
    by_model: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in wrong:
        by_model.setdefault((row["provider"], row["model"]), []).append(row)
    parts: dict[str, list[str]] = {}
    for (provider, model), found in sorted(by_model.items()):
        first = min(r["day"] for r in found)
        at = datetime.combine(date.fromisoformat(first), day_time(12), UTC)
        period = book.lookup(model, at, provider)
        if period is None:
            continue  # no table to correct: the model is unknown to the tables
        rates = {c: period.rates.get(c) for c in (*CLASSES, "reasoning")}
        latest = {r["token_class"]: _round(Decimal(r["implied_rate"])) for r in found}
        rates.update(latest)
        base = rates["input"]
        if provider == "anthropic" and "input" in latest and base is not None:
            for cls, factor in _ANTHROPIC.items():
                rates.setdefault(cls, None)
                if cls not in latest and rates[cls] is not None:
                    rates[cls] = base * factor
            if "cache_read" not in latest and rates["cache_read"] is not None:
                rates["cache_read"] = base * _ANTHROPIC_READ
        rates["reasoning"] = rates["output"]
        lines = [
            "",
            "[[models]]",
            f'id = "{model}"',
            f'name = "{period.model_name}"',
            'sources = [{ name = "the provider\'s cost report (fleet-hub prices check)", '
            f'ref = "reconciliation of {provider}", checked = {max(r["day"] for r in found)} '
            "}]",
            "",
            "[[models.periods]]",
            f"from = {first}",
            "[models.periods.rates]",
        ]
        for cls in (
            "input",
            "output",
            "reasoning",
            "cache_read",
            "cache_write_5m",
            "cache_write_1h",
        ):
            value = rates.get(cls)
            if value is not None:
                lines.append(f'{cls} = "{value.normalize():f}"')
        parts.setdefault(provider, []).extend(lines)
    return {
        provider: "\n".join(
            ["schema = 1", f'provider = "{provider}"', 'currency = "USD"', *lines, ""]
        )
        for provider, lines in parts.items()
    }


def _round(rate: Decimal) -> Decimal:
    # Implied rates carry the division's noise: list prices have at most four decimals.
    return rate.quantize(Decimal("0.0001")).normalize()

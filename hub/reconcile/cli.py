"""`fleet-hub reconcile`: the fleet's figures against the providers' reports, now;
`fleet-hub reconcile import FILE`: a provider's billing export filed in the hub's store.

Through the running hub's API when one serves the config (`GET /api/v1/reconcile`, `POST
/api/v1/reconcile/import` with an operator token), else on the store directly (the findings
then go to the store's alert outbox, which the next `fleet-hub serve` delivers). `reconcile`
exits 1 when a provider could not be asked (the rest is shown); `import` exits 1 when a row
was refused (the good rows are kept) or the file cannot be read at all.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any, Final

import orjson

from hub.api_client import running_hub
from hub.config import HubConfig, load_hub_config
from hub.reconcile.local import LOCAL_PROVIDERS, StoreBilled
from hub.reconcile.run import Reconciler, resolve_days
from hub.reconcile.settings import PROVIDERS
from pricing import PriceBook
from shared.cli import EXIT_FAILURE, EXIT_USAGE, day_range_error, iso_day

API: Final = "/api/v1/reconcile"


def add_parser(sub: Any, with_config: Any) -> None:
    p = with_config(
        sub.add_parser("reconcile", help="hold the fleet's figures against the providers' bills")
    )
    p.add_argument("--since", type=iso_day, help="first UTC day, YYYY-MM-DD (default: days back)")
    p.add_argument("--until", type=iso_day, help="last UTC day, YYYY-MM-DD (default: today)")
    p.add_argument(
        "--provider", choices=sorted((*PROVIDERS, *LOCAL_PROVIDERS)), help="only this provider"
    )
    p.add_argument("--json", action="store_true", help="print JSON: {rows, findings, ...}")
    p.add_argument("--token", help="API token (default: $FLEETMETER_TOKEN, admin.token)")
    from hub.reconcile.import_cli import add_import_parser

    add_import_parser(p)


def cmd_reconcile(args: argparse.Namespace) -> int:
    if getattr(args, "reconcile_command", None) == "import":
        from hub.reconcile.import_cli import cmd_import

        return cmd_import(args)
    prog = "fleet-hub reconcile"
    config = load_hub_config(args.config)
    since, until = resolve_days(config.reconcile, args.since, args.until)
    if problem := day_range_error(since, until):
        print(f"{prog}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    client = running_hub(config, args.token)
    if not config.reconcile.providers and client is None and not _has_local(config):
        return _no_provider(prog, config)
    if client is not None:
        days = {"since": since.isoformat(), "until": until.isoformat()}
        result = client.get(API, **days, provider=args.provider)
        if not config.reconcile.providers and not result["providers"] and not result["rows"]:
            return _no_provider(prog, config)  # as without a hub, not an empty table
    else:
        result = _on_store(config, since, until, args.provider)
    _print(result, args.json)
    for provider, why in result["errors"].items():
        print(f"{prog}: {provider}: {why}", file=sys.stderr)
    return EXIT_FAILURE if result["errors"] else 0


def _no_provider(prog: str, config: HubConfig) -> int:
    print(
        f"{prog}: {config.path} names no provider to ask: add [reconcile.anthropic] or "
        "[reconcile.openai] with a key_file, or import a bill (fleet-hub reconcile import "
        "FILE; see README, Reconciliation)",
        file=sys.stderr,
    )
    return EXIT_USAGE


def _on_store(
    config: HubConfig, since: date | None, until: date | None, provider: str | None
) -> dict[str, Any]:
    from hub.alerts.cli import _outbox  # the store (or why there is none) and its outbox
    from hub.api.reconcile_http import HttpxTransport  # the web stack only when it asks
    from hub.credit_meters import CreditMeters
    from hub.report import build_hub_report
    from hub.store import Store

    outbox = _outbox(config)
    book = PriceBook.default()
    with Store.in_dir(config.data_dir) as store, HttpxTransport() as transport:
        reconciler = Reconciler(
            config.reconcile,
            lambda by, tz, first, last: build_hub_report(
                store, by=by, tz=tz, since=first, until=last
            ),
            outbox,
            transport,
            book=book,
            local=StoreBilled(store.path, book),
            overage=CreditMeters(
                store.snapshot, store.profiles, config.subscriptions
            ).overage_between,
        )
        try:
            outcome = reconciler.run(since, until, (provider,) if provider else None)
        finally:
            outbox.close()
    return outcome.to_json()


def _has_local(config: HubConfig) -> bool:
    """Whether the store holds an imported bill or a Cursor call with Cursor's dollars."""
    from hub.store import DB_FILE, Store
    from shared.events import Agent

    path = config.data_dir / DB_FILE
    if not path.exists():
        return False
    if StoreBilled(path, PriceBook.default()).has_any():
        return True
    with Store(path, cache_kib=2048) as store:
        events = store.usage_events(counted_only=True)
        return any(e.agent == Agent.CURSOR and e.reported_cost_usd is not None for e in events)


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        return
    print(
        f"{result['since']} to {result['until']}, {result['buckets']} "
        f"(the fleet's zone: {result['fleet_tz']})"
    )
    header = ["provider", "day", "model", "key", "fleet $", "billed $", "drift $", "cause"]
    lines = [header]
    for row in result["rows"]:
        cause = row["cause"] or ("(finalising)" if row["partial"] else "")
        lines.append(
            [
                row["provider"],
                row["day"],
                row["model"],
                row["key"],
                row["fleet"]["usd"],
                row["billed"]["usd"],
                row["drift"]["usd"],
                cause,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    for row in result["rows"]:
        if row["billed"].get("original"):  # an imported bill in another currency: as charged
            charged = ", ".join(f"{c} {a}" for c, a in row["billed"]["original"].items())
            print(
                f"  {row['provider']} {row['day']} {row['model']} {row['key']}: billed {charged}"
                f" at {'; '.join(row['billed']['rates'])}"
            )
    _print_claude_code(result.get("claude_code"))
    for finding in result["findings"]:
        print(f"! {finding['text']}")
    if result["unmapped_profiles"]:
        print(f"not compared (no [[reconcile.keys]]): {', '.join(result['unmapped_profiles'])}")


def _print_claude_code(part: dict[str, Any] | None) -> None:
    """The analytics report's Claude Code spend per user beside the fleet's (list prices)."""
    if not part or not part["actors"]:
        return
    print("\nClaude Code per user (the analytics report; list prices, billed after discount):")
    header = ["day", "user", "fleet $", "list $", "billed $", "drift $"]
    lines = [header]
    for a in part["actors"]:
        lines.append(
            [
                a["day"] + (" (filling)" if a["partial"] else ""),
                a["actor"],
                a["fleet"]["list_usd"],
                a["billed"]["list_usd"],
                a["billed"]["usd"],
                a["drift"]["usd"],
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())

"""`fleet-hub budget add|list|rm|override`: through the API of the hub serving the config when
one runs (so the change is taken at once and audited under the token's name), else on hub.toml
and the store directly (a hub started later reads them)."""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import orjson

from hub.api_client import HubClient, running_hub
from hub.budgets import config_io
from hub.budgets.evaluation import ZERO
from hub.budgets.governor import write_override
from hub.budgets.model import (
    DEFAULT_FORECAST_MINUTES,
    KINDS_TEXT,
    Budget,
    BudgetError,
    parse_budget,
    parse_limit,
)
from hub.budgets.standing import standing_of
from hub.cli_fleet import _when as when
from hub.config import load_hub_config
from hub.store import DB_FILE, Store
from shared.cli import EXIT_USAGE
from shared.config import ConfigError

_RELATIVE = re.compile(r"^\+?(\d{1,6})(m|h|d)$")


def add_parsers(sub: Any, with_config: Any) -> None:
    budget_p = sub.add_parser("budget", help="budgets: add, list, rm, override")
    budget_sub = budget_p.add_subparsers(dest="budget_command", required=True)
    add = budget_sub.add_parser("add", help="add a budget (or replace the one of that name)")
    add.add_argument("name")
    add.add_argument("--scope", required=True, help=f"KIND=VALUE[,KIND=VALUE]: {KINDS_TEXT}")
    add.add_argument("--period", required=True, help="session|hour|day|week|month or 5h, 90m")
    add.add_argument("--basis", required=True, choices=("paid", "api", "quota"))
    add.add_argument("--limit", required=True, help="dollars (paid, api) or percent (quota)")
    add.add_argument("--action", default="alert", choices=("alert", "pause", "kill"))
    add.add_argument("--thresholds", help="warn at these percents (default: 50,80,100)")
    add.add_argument(
        "--next-period",
        default="wait",
        choices=("resume", "wait"),
        help="at the next period: resume what it paused, or wait for a person (default)",
    )
    add.add_argument("--tz", default="UTC", help="the zone calendar periods are cut in")
    add.add_argument("--forecast-minutes", type=int, default=DEFAULT_FORECAST_MINUTES)
    add.add_argument("--on-unverified", default="alert", choices=("alert", "pause"))
    listing = budget_sub.add_parser("list", help="every budget and where it stands")
    listing.add_argument("--json", action="store_true")
    budget_sub.add_parser("rm", help="remove a budget").add_argument("name")
    over = budget_sub.add_parser("override", help="raise or lift a budget until a time")
    over.add_argument("name")
    what = over.add_mutually_exclusive_group(required=True)
    what.add_argument("--limit", help="the raised limit")
    what.add_argument("--lift", action="store_true", help="no limit until --until")
    over.add_argument("--until", required=True, type=parse_until, help="TIME (ISO, epoch) or +2h")
    over.add_argument("--why", required=True, help="kept in the audit log")
    over.add_argument("--who", help="who asks (without a hub; default: your user name)")
    for p in budget_sub.choices.values():
        with_config(p)
        p.add_argument("--token", help="API token (default: $FLEETMETER_TOKEN, admin.token)")


def parse_until(text: str) -> float:
    """+2h, +90m, +1d from now, or a time as `fleet-hub audit --since` takes it."""
    if (match := _RELATIVE.match(text.strip())) is not None:
        return time.time() + int(match[1]) * {"m": 60, "h": 3600, "d": 86400}[match[2]]
    return when(text)


def cmd_budget(args: argparse.Namespace) -> int:
    config = load_hub_config(args.config)
    client = running_hub(config, args.token)
    try:
        handler = {"add": _add, "list": _list, "rm": _rm, "override": _override}
        return handler[args.budget_command](args, client)
    except BudgetError as exc:
        print(f"fleet-hub budget {args.budget_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _table(args: argparse.Namespace) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": args.name,
        "scope": args.scope,
        "period": args.period,
        "basis": args.basis,
        "limit": args.limit,
        "action": args.action,
        "next_period": args.next_period,
        "tz": args.tz,
        "forecast_minutes": args.forecast_minutes,
        "on_unverified": args.on_unverified,
    }
    if args.thresholds is not None:
        table["thresholds"] = [t.strip() for t in args.thresholds.split(",") if t.strip()]
    return table


def _add(args: argparse.Namespace, client: HubClient | None) -> int:
    budget = parse_budget(_table(args))  # a bad value is told here, before any hub is asked
    if client is not None:
        body = {**budget.to_table(), "thresholds": list(budget.thresholds)}
        client.post("/api/v1/budgets", body)
    else:
        config = load_hub_config(args.config)
        assert config.path is not None
        try:
            config_io.add_budget(config.path, budget, config.budgets)
        except ConfigError as exc:
            raise BudgetError(str(exc)) from None
    print(f"{budget.title}: {budget.action.value} at the limit" + _where(client))
    return 0


def _rm(args: argparse.Namespace, client: HubClient | None) -> int:
    if client is not None:
        client.delete(_budget_path(args.name))
    else:
        config = load_hub_config(args.config)
        assert config.path is not None
        if not config_io.remove_budget(config.path, args.name):
            raise BudgetError(f"no budget named {args.name!r} in {config.path}")
    print(f"budget '{args.name}' removed" + _where(client))
    return 0


def _override(args: argparse.Namespace, client: HubClient | None) -> int:
    config = load_hub_config(args.config)
    found = [b for b in config.budgets if b.name == args.name]
    if not found:
        raise BudgetError(f"no budget named {args.name!r} (fleet-hub budget list)")
    budget = found[0]
    limit = None if args.lift else parse_limit(args.limit, budget.basis)
    if client is not None:
        body = {"limit": None if limit is None else str(limit), "until": args.until}
        reply = client.post(f"{_budget_path(args.name)}/override", {**body, "why": args.why})
        who = reply["who"]
    else:
        who = args.who or getpass.getuser()
        with Store.in_dir(config.data_dir) as store:
            write_override(store, None, budget, limit, args.until, who, args.why, time.time())
    until = datetime.fromtimestamp(args.until, UTC).strftime("%Y-%m-%d %H:%M UTC")
    what = "lifted" if limit is None else f"raised to {budget.limit_text(limit)}"
    print(f"budget '{budget.name}' {what} until {until} by {who}" + _where(client))
    return 0


def _budget_path(name: str) -> str:
    """A budget's API path: its name quoted (names may hold spaces and slashes)."""
    return f"/api/v1/budgets/{urllib.parse.quote(name, safe='')}"


def _where(client: HubClient | None) -> str:
    return "" if client is not None else " (in the config: a hub reads it when it starts)"


def _list(args: argparse.Namespace, client: HubClient | None) -> int:
    if client is not None:
        rows: list[dict[str, Any]] = client.get("/api/v1/budgets")["budgets"]
    else:
        config = load_hub_config(args.config)
        rows = _offline(config.budgets, config.data_dir / DB_FILE)
    if args.json:
        sys.stdout.write(orjson.dumps({"budgets": rows}, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0
    if not rows:
        print("no budgets (fleet-hub budget add NAME --scope ... --limit ...)")
        return 0
    header = ["name", "scope", "period", "basis", "spent", "limit", "%", "state", "action"]
    lines = [header] + [
        [
            r["name"],
            r["scope"],
            r["period"],
            r["basis"],
            r["spent"],
            r["limit_in_force"] or "lifted",
            r["percent"] or "-",
            r["state"],
            r["action"],
        ]
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _offline(budgets: tuple[Budget, ...], path: Any) -> list[dict[str, Any]]:
    """Where each budget stood when a hub last ran (the store's rows), without a hub."""
    if not path.is_file():
        return [_bare(b) for b in budgets]
    with Store(path) as store:
        db = store.reading()
        has = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'budget_spend'"
        ).fetchone()
        if not has:
            return [_bare(b) for b in budgets]
        return [standing_of(db, b, time.time(), ZERO, []).to_json() for b in budgets]


def _bare(budget: Budget) -> dict[str, Any]:
    return {
        **budget.to_table(),
        "spent": "0",
        "limit_in_force": str(budget.limit),
        "percent": "0.0",
        "state": "ok",
        "hard": budget.hard,
    }

"""`fleet-hub reconcile import FILE [--provider P] [--format F]`: a provider's billing export
filed in the hub's store, through the serving hub's API (an operator token) or on the store
when none serves, like the other commands. Each refused row is one line on stderr naming the
file, the line and the field; the good rows are kept (exit 1 when any was refused)."""

from __future__ import annotations

import argparse
import base64
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from hub.api_client import running_hub
from hub.config import load_hub_config
from hub.reconcile.imports import (
    FORMATS,
    IMPORT_PROVIDERS,
    ImportFileError,
    ImportOptions,
    Rate,
    parse_rate,
)
from shared.cli import EXIT_FAILURE, EXIT_USAGE, iso_day

API: Final = "/api/v1/reconcile/import"
PROG: Final = "fleet-hub reconcile import"


def _rate(text: str) -> Rate:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _zone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IANA zone (e.g. Asia/Shanghai)"
        ) from None
    return text


def add_import_parser(reconcile: argparse.ArgumentParser) -> None:
    acts = reconcile.add_subparsers(dest="reconcile_command")
    p = acts.add_parser("import", help="file a provider's billing export (CSV) in the hub's store")
    p.add_argument("file", type=Path, help="the export (CSV)")
    # SUPPRESS: given before the action (`reconcile --config F import FILE`), they are kept
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="hub config")
    p.add_argument("--token", default=argparse.SUPPRESS, help="an operator's API token")
    p.add_argument(
        "--provider",
        choices=IMPORT_PROVIDERS,
        help="the provider of rows that name none (generic format)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="generic",
        help="generic (docs/billing-imports.md) or dashscope (Alibaba Cloud Bill Details)",
    )
    p.add_argument(
        "--rate",
        type=_rate,
        action="append",
        default=[],
        metavar="CUR=RATE@DAY",
        help="units of CUR to one US dollar, as read on DAY (e.g. CNY=7.2345@2026-11-30); "
        "needed for amounts in another currency whose rows carry no fx_rate",
    )
    p.add_argument("--tz", type=_zone, help="zone of times without an offset")
    p.add_argument(
        "--exported",
        type=iso_day,
        help="UTC day the export was taken; that day and later ones are partial (default: "
        "the file's modification day)",
    )
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def cmd_import(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        data = path.read_bytes()
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).date()
    except OSError as exc:
        print(f"{PROG}: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    exported: date = args.exported or modified
    rates: list[Rate] = args.rate
    config = load_hub_config(args.config)
    client = running_hub(config, args.token)
    if client is not None:
        body = {
            "name": str(path),
            "format": args.format,
            "provider": args.provider,
            "rates": [f"{r.currency}={r.per_usd}@{r.day}" for r in rates],
            "tz": args.tz,
            "exported": exported.isoformat(),
            "content_base64": base64.b64encode(data).decode("ascii"),
        }
        result = client.post(API, body)
    else:
        from hub.alerts.cli import _outbox  # the store checked (or why there is none)
        from hub.reconcile.import_run import import_bill
        from hub.store import DB_FILE

        _outbox(config).close()
        options = ImportOptions(args.provider, {r.currency: r for r in rates}, args.tz)
        try:
            result = import_bill(
                config.data_dir / DB_FILE, str(path), data, args.format, options, exported
            )
        except ImportFileError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    _print(result, getattr(args, "json", False))
    for error in result["errors"]:
        print(f"{PROG}: {error}", file=sys.stderr)
    if result["rows_refused"] > len(result["errors"]):
        more = result["rows_refused"] - len(result["errors"])
        print(f"{PROG}: {path}: and {more} more rows refused", file=sys.stderr)
    return EXIT_FAILURE if result["rows_refused"] else 0


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        return
    print(
        f"{result['file']}: {result['rows_read']} rows read, {result['rows_refused']} refused, "
        f"{result['rows_written']} written"
    )
    for label, key in (
        ("added", "added_days"),
        ("replaced", "replaced_days"),
        ("unchanged", "unchanged_days"),
        ("kept (complete; this export has them in part)", "kept_days"),
        ("partial (shown, not alerted)", "partial_days"),
    ):
        if result[key]:
            print(f"  {label}: {', '.join(result[key])}")
    for note in result["notes"]:
        print(f"  note: {note}")

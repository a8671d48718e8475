"""`node-agent`: the per-machine command. `scan` reads local agent logs and prints a cost report."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from node_agent.render import render_json, render_text
from node_agent.scan import scan
from pricing import CostClass, PriceBook
from pricing.rollup import GROUP_KEYS, Attribution, Rollup, UnknownGroupKeyError
from shared.config import ConfigError, NodeConfig, find_config, load_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"scan": cmd_scan}[args.command]
    return handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="node-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    scan_p = sub.add_parser(
        "scan",
        help="read local agent logs once and print a cost report",
        description=(
            "Read the logs under the given agent homes (a Claude config dir, a Codex home, a "
            "Gemini home, an OpenCode data dir, a Cursor usage CSV, or a directory holding "
            "several of them) and print tokens and cost grouped by --by. With no path: the "
            "configured profiles and the agents' default locations."
        ),
    )
    scan_p.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    scan_p.add_argument(
        "--by",
        action="append",
        default=None,
        metavar="KEYS",
        help=f"group by these keys, comma-separated ({', '.join(GROUP_KEYS)}); default: day",
    )
    scan_p.add_argument("--tz", default="UTC", help="IANA zone for day/week/month (default UTC)")
    scan_p.add_argument("--since", type=date.fromisoformat, help="first day (YYYY-MM-DD, in --tz)")
    scan_p.add_argument("--until", type=date.fromisoformat, help="last day (YYYY-MM-DD, in --tz)")
    scan_p.add_argument("--json", action="store_true", help="print one JSON object")
    scan_p.add_argument("--config", type=Path, help="node config file (profiles)")
    return parser


def _load_config(path: Path | None) -> NodeConfig:
    if path is not None:
        return load_config(path)
    found = find_config()
    return load_config(found) if found else NodeConfig()


def cmd_scan(args: argparse.Namespace) -> int:
    try:
        tz: tzinfo = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"node-agent scan: unknown time zone {args.tz!r}", file=sys.stderr)
        return 2
    by = [k.strip() for arg in (args.by or ["day"]) for k in arg.split(",") if k.strip()]
    try:
        config = _load_config(args.config)
        report = Rollup(by, tz)
    except (ConfigError, UnknownGroupKeyError) as exc:
        print(f"node-agent scan: {exc}", file=sys.stderr)
        return 2

    result = scan(args.paths, config)
    book = PriceBook.default()
    skipped: Counter[str] = Counter()
    unknown_models: Counter[str] = Counter()
    problems = list(result.problems)
    for target_result in result.results:
        target = target_result.target
        collector = target_result.collector
        skipped.update(collector.skipped)
        problems.extend(collector.problems)
        attribution = Attribution(
            machine=config.node,
            profile=target.profile.name if target.profile else None,
            account=target.profile.account if target.profile else None,
        )
        for event in collector.events.counted_usage():
            if not _in_range(event.ts, tz, args.since, args.until):
                continue
            priced = book.price(event, target.billing)
            if priced.cost_class is CostClass.UNKNOWN:
                unknown_models[event.model] += 1
            report.add(event, priced, attribution)

    render = render_json if args.json else render_text
    out = render(
        report,
        files=result.files,
        size=result.bytes,
        skipped=skipped,
        problems=problems,
        unknown_models=unknown_models,
    )
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(out)
    for problem in result.problems:
        print(f"node-agent scan: {problem}", file=sys.stderr)
    return 1 if result.problems else 0


def _in_range(ts: float, tz: tzinfo, since: date | None, until: date | None) -> bool:
    if since is None and until is None:
        return True
    day = datetime.fromtimestamp(ts, tz).date()
    return (since is None or day >= since) and (until is None or day <= until)


if __name__ == "__main__":
    sys.exit(main())

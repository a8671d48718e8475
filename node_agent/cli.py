"""`node-agent`: the per-machine command. `scan` reads local agent logs and prints a cost report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from node_agent.render import render_json, render_text
from node_agent.report import Query, build_report
from pricing.rollup import GROUP_KEYS, UnknownGroupKeyError, check_keys
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
    scan_p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="worker processes (default: one per CPU when there is much to read)",
    )
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
        check_keys(by)
    except (ConfigError, UnknownGroupKeyError) as exc:
        print(f"node-agent scan: {exc}", file=sys.stderr)
        return 2

    query = Query(tuple(by), tz, args.since, args.until)
    report = build_report(args.paths, config, query, jobs=args.jobs)
    if args.json:
        blob = orjson.dumps(render_json(report), option=orjson.OPT_INDENT_2)
        sys.stdout.buffer.write(blob + b"\n")
    else:
        print(render_text(report))
    for problem in report.path_problems:
        print(f"node-agent scan: {problem}", file=sys.stderr)
    return 1 if report.path_problems else 0


if __name__ == "__main__":
    sys.exit(main())

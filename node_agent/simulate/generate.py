"""CLI: write a simulated fleet's agent logs and their truth.

python -m node_agent.simulate.generate ROOT [--seed N] [--machines N] [--days N]
    [--start YYYY-MM-DD] [--scale F] [--target-mb N] [--jobs N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .fleet import DEFAULT_START, generate_fleet


def _date(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m node_agent.simulate.generate",
        description="Write real-format logs of a simulated agent fleet plus ROOT/truth.json.",
    )
    parser.add_argument("root", type=Path, help="output directory (created; must be empty)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--machines", type=int, default=4)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument(
        "--start", type=_date, default=DEFAULT_START, help="first UTC day (YYYY-MM-DD)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="ordinary sessions multiplier")
    parser.add_argument(
        "--target-mb", type=float, default=None, help="keep adding sessions until this size"
    )
    parser.add_argument("--jobs", type=int, default=None, help="processes (default: CPUs)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr)

    began = time.perf_counter()
    try:
        truth = generate_fleet(
            args.root,
            seed=args.seed,
            machines=args.machines,
            start=args.start,
            days=args.days,
            scale=args.scale,
            target_bytes=None if args.target_mb is None else int(args.target_mb * 1_000_000),
            jobs=args.jobs,
            progress=say,
        )
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - began
    grand = truth.total()
    say(
        f"{truth.files['count']} files, {truth.files['bytes'] / 1e6:.1f} MB in {elapsed:.1f} s; "
        f"{grand.calls} calls, ${grand.cost:.2f} API-equivalent "
        f"({grand.unknown_calls} calls without a list price); truth: {args.root / 'truth.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

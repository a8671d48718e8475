"""`python -m hub.demo`: the demo fleet without the dashboard, for a while, then its totals."""

from __future__ import annotations

import contextlib
import logging
import signal
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Final

from hub.demo._fleet import DemoFleet
from hub.demo._loop import SINK
from hub.ledger import Dimension, Period
from hub.service import FleetService
from shared.cli import OneLineParser, positive_float, positive_int

FEED_LINES: Final = 30  # the feed's last lines printed at the end


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m hub.demo", description="Run the demo fleet headless, then print totals."
    )
    parser.add_argument("--seconds", type=positive_float, default=60.0)
    parser.add_argument("--machines", type=positive_int, default=3)
    parser.add_argument(
        "--pace", type=positive_float, default=1.0, help="interval factor (0.3: faster)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            fleet = DemoFleet(workdir, machines=args.machines, pace=args.pace, seed=args.seed)
        except ValueError as exc:  # e.g. more machines than the demo can name
            parser.error(str(exc))
        stack.enter_context(fleet)
        assert fleet.service is not None
        with contextlib.suppress(KeyboardInterrupt):
            time.sleep(args.seconds)
        _print_totals(fleet.service)
        if fleet.webhook is not None:
            print(
                f"{len(fleet.webhook.deliveries)} alerts delivered to {SINK}, each signature "
                f"verified ({fleet.webhook.journal})"
            )
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_totals(service: FleetService) -> None:
    totals = service.totals(Dimension.PROFILE, Period.TODAY)
    print(
        f"{'machine/profile':<26}{'calls':>7}{'api-equivalent':>16}{'metered':>12}{'included':>12}"
    )
    for key, t in sorted(totals.items(), key=lambda kv: kv[0] or ""):
        print(
            f"{key or '?':<26}{t.calls:>7}{t.api_equivalent:>16.2f}{t.metered:>12.2f}"
            f"{t.subscription_included:>12.2f}"
        )
    for item in service.recent_feed(FEED_LINES):
        when = datetime.fromtimestamp(item.ts).strftime("%H:%M:%S")
        print(f"{when} {item.kind:<8} {item.machine:<8} {item.text}")

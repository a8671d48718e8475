"""`fleet-hub`: the ops workstation's command.

The hub (receiver, store, ledger, TUI) is built in the fleet and dashboard issues; until then
this entry point exists so the distribution's two console scripts are stable, and it says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet-hub", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    args = parser.parse_args(argv)
    if args.version:
        try:
            print(version("fleetmeter"))
        except PackageNotFoundError:
            print("unknown (not installed)")
        return 0
    print(
        "fleet-hub: the hub is not built yet in this version; "
        "use `node-agent scan` for a local cost report.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())

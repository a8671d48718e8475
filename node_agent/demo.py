"""`make scan-demo`: generate a sample fleet's logs and scan them the way an operator would.

Writes a few machines' worth of real-format Claude Code, Codex, Gemini CLI, OpenCode and Cursor
logs (the simulator in `node_agent.simulate`), a node config per machine that marks some homes as
subscriptions, then runs `node-agent scan` per machine and over the whole fleet. The fleet's days
end with yesterday: a simulated day runs to midnight, and no log may come from the future.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from node_agent import cli
from node_agent.simulate.fleet import generate_fleet

# Home folder names the simulator writes on each machine → (agent, billing, plan).
PROFILES = {
    "claude": ("claude-code", "api", None),
    "claude-max2": ("claude-code", "subscription", "max_20x"),
    "codex": ("codex", "subscription", "plus"),
    "gemini": ("gemini", "api", None),
    "opencode": ("opencode", "api", None),
    "cursor": ("cursor", "api", None),
}


def write_node_config(machine_dir: Path, config_path: Path) -> None:
    lines = [f'node = "{machine_dir.name}"', ""]
    for home in sorted(machine_dir.iterdir()):
        if home.name not in PROFILES:
            continue
        agent, billing, plan = PROFILES[home.name]
        lines += [
            "[[profiles]]",
            f'name = "{machine_dir.name}-{home.name}"',
            f'agent = "{agent}"',
            f'home = "{home}"',
            f'billing = "{billing}"',
        ]
        if plan:
            lines.append(f'plan = "{plan}"')
        lines.append("")
    config_path.write_text("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node_agent.demo", description=__doc__)
    parser.add_argument("--machines", type=int, default=4)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="write the fleet here and keep it")
    args = parser.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="fleetmeter-demo-"))
    try:
        fleet = work / "fleet"
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        print(f"Generating {args.machines} machines x {args.days} days of agent logs in {fleet}")
        generate_fleet(
            fleet,
            seed=7,
            machines=args.machines,
            start=today - timedelta(days=args.days),
            days=args.days,
        )
        status = 0
        for machine_dir in sorted(p for p in fleet.iterdir() if p.is_dir()):
            config = work / f"{machine_dir.name}.toml"
            write_node_config(machine_dir, config)
            print(f"\n=== {machine_dir.name}: node-agent scan --by agent,profile {machine_dir}")
            status |= cli.main(
                ["scan", "--config", str(config), "--by", "agent,profile", str(machine_dir)]
            )
        first = sorted(p for p in fleet.iterdir() if p.is_dir())[0]
        print(f"\n=== {first.name} by day and model: node-agent scan --by day,model {first}")
        status |= cli.main(
            ["scan", "--config", str(work / f"{first.name}.toml"), "--by", "day,model", str(first)]
        )
        return status
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"\nkept the fleet in {work}")


if __name__ == "__main__":
    sys.exit(main())

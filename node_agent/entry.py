"""The `node-agent` program: the calls an agent makes synchronously (`hook`, `statusline`)
skip the full command line's imports (a third of a second), and so does a `scan` whose kept
answer still holds (`scan_answer`); everything else goes to the full command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def fast_command(args: Sequence[str]) -> int | None:
    """Run `hook EVENT` or `statusline` (not `statusline install`); None for anything else."""
    if args and args[0] == "hook":
        from node_agent.agent_gates import run_hook

        return run_hook(args[1:])
    if (
        args
        and args[0] == "statusline"
        and (len(args) == 1 or args[1] not in ("install", "remove"))
    ):
        from node_agent.agent_gates import run_statusline

        return run_statusline(args[1:])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    done = fast_command(args)
    if done is not None:
        return done
    if args[:1] == ["scan"]:
        from node_agent.scan_answer import serve

        if serve(args):
            return 0
    from node_agent.cli import main as full

    return full(args)


if __name__ == "__main__":
    sys.exit(main())

"""What a full scan's kept answer depends on (`scan_answer`), for the scan's command line: the
paths named, the homes read, the price tables, the config files and zone rules looked for, the
default homes when none was named, and the code loaded.

Stat'ing them (~600 transcripts, ~200 folders, ~130 code files in a big Claude home: ~7 ms) is
done while the scan's helpers read (`gather`, called by `build_report` once they are forked),
not in the serial end of the scan: only the code loaded since is stat'ed there (`found`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from node_agent import scan_answer
from node_agent.scan_answer import Dependency, Signature
from shared.config import default_config_paths


class AnswerDeps:
    """The dependencies of the answer of a scan given `args`, started at `started_ns`."""

    def __init__(self, args: argparse.Namespace, started_ns: int) -> None:
        self._args = args
        self._started_ns = started_ns
        self._found: dict[str, Signature] = {}
        self._gathered = False
        self._keepable = True

    def gather(self, homes: Sequence[Path]) -> None:
        """Stat everything but the code loaded from now on (once; after the scan's start)."""
        if self._gathered:
            return
        self._gathered = True
        trees, paths = self._trees_and_paths(homes)
        self._keepable = scan_answer.gathered(
            trees, paths + scan_answer.code_paths(), self._started_ns, self._found
        )

    def found(self, homes: Sequence[Path]) -> list[Dependency] | None:
        """All of them, the code loaded since `gather` added; None when no answer may be
        kept (`scan_answer.gathered`)."""
        self.gather(homes)  # (not yet when the scan had nothing to read)
        if not self._keepable:
            return None
        if not scan_answer.gathered([], scan_answer.code_paths(), self._started_ns, self._found):
            return None
        return scan_answer.ordered(self._found)

    def _trees_and_paths(self, homes: Sequence[Path]) -> tuple[list[str], list[str]]:
        from pricing._installed import prices_dir

        args = self._args
        given = [p.expanduser() for p in args.paths]
        trees = [str(p) for p in [*given, *homes, prices_dir(), _shipped_tables()]]
        paths = [str(p) for p in ([args.config] if args.config else default_config_paths())]
        if args.tz != "UTC":  # the zone's rules, where zoneinfo looks for them
            from zoneinfo import TZPATH

            paths += [os.path.join(folder, args.tz) for folder in TZPATH]
        if not args.paths:  # the default homes looked for, there or not
            from node_agent.sources.registry import all_homes

            # Whole trees: whether a folder is a home can depend on what lies deep in it
            # (Gemini's tmp/*/chats, OpenCode's storage/message), which its own stat does not
            # show.
            defaults = [home for homes in all_homes() for home in homes.default_homes()]
            trees += [str(home) for home in defaults if home.is_dir()]
            paths += [str(home) for home in defaults]
        return trees, paths


def _shipped_tables() -> Path:
    import pricing

    return Path(pricing.__file__).resolve().parent / "tables"

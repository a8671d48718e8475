"""One-shot read of agent homes: which agent each path belongs to, every file in order, events out.

Used by `node-agent scan`. One source instance per agent is shared by every home of that agent,
so dedupe works across homes (a session copied between config dirs still counts once).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from node_agent.sources.base import Collector, FileKind, ParseProblem, Source, SourceFile
from node_agent.sources.registry import all_sources
from node_agent.tailer import CorruptStreamError, iter_plain_lines, iter_zst_lines
from shared.config import Billing, NodeConfig, Profile
from shared.events import Agent


@dataclass(frozen=True, slots=True)
class Target:
    """A home (or a single file) to read, with the profile it belongs to if one is configured."""

    path: Path
    agent: Agent
    profile: Profile | None = None

    @property
    def billing(self) -> Billing:
        # With no profile, a local scan treats a log dir as metered API use.
        return self.profile.billing if self.profile else Billing.API


@dataclass(slots=True)
class TargetResult:
    target: Target
    collector: Collector = field(default_factory=Collector)
    files: int = 0
    bytes: int = 0


@dataclass(slots=True)
class ScanResult:
    results: list[TargetResult]
    problems: list[ParseProblem] = field(default_factory=list)  # about paths themselves

    @property
    def files(self) -> int:
        return sum(r.files for r in self.results)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.results)


class UnknownPathError(ValueError):
    """A path given to scan that is no agent's home."""


def resolve_targets(
    paths: Sequence[Path], config: NodeConfig, sources: Sequence[Source]
) -> tuple[list[Target], list[ParseProblem]]:
    """Map each path to the agents whose home it is; with no path, configured profiles and defaults.

    A path that is a parent of several homes (a machine's directory holding `claude/`, `codex/`,
    …) is expanded one level. A path that exists but belongs to no agent is an error for that path
    only: it is reported and the other paths are still read.
    """
    targets: list[Target] = []
    problems: list[ParseProblem] = []
    if not paths:
        for profile in config.profiles:
            targets.append(Target(profile.home, profile.agent, profile))
        configured = {t.path.expanduser().resolve() for t in targets}
        for source in sources:
            for home in source.default_homes():
                if home.exists() and home.resolve() not in configured and source.is_home(home):
                    targets.append(Target(home, source.agent, config.profile_for(home)))
        return _unique(targets), problems
    for raw in paths:
        path = raw.expanduser()
        if not path.exists():
            problems.append(ParseProblem(str(path), 0, "no such file or directory"))
            continue
        found = _targets_at(path, config, sources)
        if not found and path.is_dir():
            for child in sorted(path.iterdir()):
                found.extend(_targets_at(child, config, sources))
        if not found:
            problems.append(
                ParseProblem(
                    str(path),
                    0,
                    "not a Claude Code, Codex, Gemini CLI, OpenCode home or a Cursor usage CSV",
                )
            )
        targets.extend(found)
    return _unique(targets), problems


def _targets_at(path: Path, config: NodeConfig, sources: Sequence[Source]) -> list[Target]:
    return [
        Target(path, source.agent, config.profile_for(path))
        for source in sources
        if source.is_home(path)
    ]


def _unique(targets: Iterable[Target]) -> list[Target]:
    seen: set[tuple[Path, Agent]] = set()
    out: list[Target] = []
    for target in targets:
        key = (target.path.expanduser().resolve(), target.agent)
        if key not in seen:
            seen.add(key)
            out.append(target)
    return out


def scan(
    paths: Sequence[Path], config: NodeConfig, sources: Sequence[Source] | None = None
) -> ScanResult:
    sources = list(sources) if sources is not None else all_sources()
    by_agent = {source.agent: source for source in sources}
    targets, problems = resolve_targets(paths, config, sources)
    results = [TargetResult(target) for target in targets]
    for result in results:
        read_target(by_agent[result.target.agent], result)
    return ScanResult(results, problems)


def read_target(source: Source, result: TargetResult) -> None:
    for file in sorted(source.discover(result.target.path), key=lambda f: (f.order, f.path)):
        size = read_file(source, file, result.collector)
        if size is not None:
            result.files += 1
            result.bytes += size


def read_file(source: Source, file: SourceFile, sink: Collector) -> int | None:
    """Feed one file to its source; returns its size, or None when it could not be opened."""
    try:
        size = os.stat(file.path).st_size
    except OSError as exc:
        sink.problem(ParseProblem(str(file.path), 0, f"cannot stat: {exc.strerror}"))
        return None
    if file.kind is FileKind.WHOLE:
        source.read_whole(file.path, sink)
        return size

    def torn_tail(_lineno: int, _line: bytes) -> None:
        sink.skip("incomplete last line (still being written)")

    read = iter_zst_lines if file.kind is FileKind.JSONL_ZST else iter_plain_lines
    test = source.line_test()
    feed = source.feed_line if test is None else source.feed_kept_line
    try:
        for lineno, line in read(file.path, torn_tail, test):
            feed(file.path, lineno, line, sink)
    except (OSError, CorruptStreamError) as exc:
        # Lines before the damage were read; say what stopped the rest.
        sink.problem(ParseProblem(str(file.path), 0, f"cannot read further: {exc}"))
    source.flush(sink)
    return size

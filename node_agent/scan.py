"""One-shot read of agent homes: which agent each path belongs to, every file in order, events out.

Used by `node-agent scan`. One source instance per agent is shared by every home of that agent,
so dedupe works across homes (a session copied between config dirs still counts once).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

from node_agent.sources.base import Collector, FileKind, ParseProblem, Source, SourceFile
from node_agent.sources.homes import Homes
from node_agent.sources.registry import all_sources
from node_agent.tailer import CorruptStreamError, iter_plain_lines, iter_zst_lines
from shared.config import Billing, NodeConfig, Profile
from shared.events import Agent


class Target(msgspec.Struct, frozen=True):
    """A home (or a single file) to read, with the profile it belongs to if one is configured.
    `within`: only the files at or below this file or folder of the home (a path given to scan
    inside a home is read as part of its home, so it is attributed as in a scan of the home)."""

    path: Path
    agent: Agent
    profile: Profile | None = None
    within: Path | None = None

    @property
    def billing(self) -> Billing:
        # With no profile, a local scan treats a log dir as metered API use.
        return self.profile.billing if self.profile else Billing.API

    @property
    def given(self) -> Path:
        """The path as the user named it."""
        return self.within or self.path

    def files(self, source: Source) -> list[SourceFile]:
        if self.within is None:
            return source.discover(self.path)
        return source.discover_under(self.path, self.within)


class TargetResult(msgspec.Struct):
    target: Target
    collector: Collector = msgspec.field(default_factory=Collector)
    files: int = 0
    bytes: int = 0


class ScanResult(msgspec.Struct):
    results: list[TargetResult]
    problems: list[ParseProblem] = msgspec.field(default_factory=list)  # about paths themselves

    @property
    def files(self) -> int:
        return sum(r.files for r in self.results)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.results)


class UnknownPathError(ValueError):
    """A path given to scan that is no agent's home."""


def resolve_targets(
    paths: Sequence[Path], config: NodeConfig, sources: Sequence[Homes]
) -> tuple[list[Target], list[ParseProblem]]:
    """Map each path to the agents whose home it is; with no path, configured profiles and defaults.

    A path that is a parent of several homes (a machine's directory holding `claude/`, `codex/`,
    …) is expanded one level. A file or folder inside a home is read as part of that home. A path
    that exists but is none of these is an error for that path only: it is reported and the other
    paths are still read.
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
        found = _targets_for(path, config, sources)
        if not found:
            problems.append(ParseProblem(str(path), 0, not_a_home(sources)))
        targets.extend(found)
    return _unique(targets), problems


def not_a_home(sources: Sequence[Homes]) -> str:
    kinds = ", ".join(source.home_kind for source in sources)
    return (
        "no agent's logs: a PATH may be an agent home, a file or folder inside one, or a folder "
        f"holding homes; homes are {kinds}"
    )


def _targets_for(path: Path, config: NodeConfig, sources: Sequence[Homes]) -> list[Target]:
    """A home itself; else the homes one level down; else the part of the home `path` is in;
    else loose files one level down, or `path` itself, that a source reads alone (a copied
    rollout). Homes one level down come before the home around: that one may be a guess (any
    folder called projects/ looks like part of a Claude home)."""
    children = sorted(path.iterdir()) if path.is_dir() else []
    for candidates in (
        [path] if path.is_dir() else [],
        [child for child in children if child.is_dir()],
        None,
        [child for child in children if not child.is_dir()] or [path],
    ):
        if candidates is None:
            found = _targets_inside(path, config, sources)
        else:
            found = [t for c in candidates for t in _targets_at(c, config, sources)]
        if found:
            return found
    return []


def _targets_at(path: Path, config: NodeConfig, sources: Sequence[Homes]) -> list[Target]:
    return [
        Target(path, source.agent, config.profile_for(path))
        for source in sources
        if source.is_home(path)
    ]


def _targets_inside(path: Path, config: NodeConfig, sources: Sequence[Homes]) -> list[Target]:
    """`path` as part of the innermost home that holds it (several agents' if they share it)."""
    homes = [(home, source) for source in sources if (home := source.home_of(path)) is not None]
    if not homes:
        return []
    depth = max(len(home.parts) for home, _ in homes)
    return [
        Target(home, source.agent, config.profile_for(path), within=path)
        for home, source in homes
        if len(home.parts) == depth
    ]


def _unique(targets: Iterable[Target]) -> list[Target]:
    seen: set[tuple[Path, Agent, Path | None]] = set()
    out: list[Target] = []
    for target in targets:
        within = target.within.resolve() if target.within else None
        key = (target.path.expanduser().resolve(), target.agent, within)
        if key not in seen:
            seen.add(key)
            out.append(target)
    return out


def nothing_to_read(target: Target, source: Homes) -> ParseProblem:
    """Why a given path yielded no file: what it is, what was looked for, what it holds."""
    where = (
        f"inside {source.home_kind} at {target.path}"
        if target.within is not None
        else source.home_kind
    )
    if target.given.is_file():
        what = f"it is none of the {source.usage_files} read there"
    elif not target.given.is_dir():  # (said to be empty, which a pipe or a device is not)
        what = "it is neither a regular file nor a folder (a pipe or a device: not read)"
    elif held := _count_files(target.given):
        what = f"none of its {held} file(s) is one of the {source.usage_files} read there"
    else:
        what = f"it is empty (no {source.usage_files})"
    return ParseProblem(str(target.given), 0, f"{where}, but {what}")


def _count_files(path: Path) -> int:
    if path.is_file():
        return 1
    return sum(len(files) for _dir, _dirs, files in os.walk(path))


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
    for file in sorted(result.target.files(source), key=lambda f: (f.order, f.path)):
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
        for lineno, line in read(file.path, torn_tail, test, source.line_numberer()):
            feed(file.path, lineno, line, sink)
    except (OSError, CorruptStreamError) as exc:
        # Lines before the damage were read; say what stopped the rest.
        sink.problem(ParseProblem(str(file.path), 0, f"cannot read further: {exc}"))
    source.flush(sink)
    return size

"""Claude Code: JSONL transcripts under `<config dir>/projects/`.

Rules (research/log-formats.md §1 and §6, ccusage's dedupe as the reference):

- One API response is logged as one line per content block, all sharing `message.id` and
  `requestId` and each repeating `usage`; `output_tokens` grows across them. So per key
  (`message.id`, `requestId`) only the largest snapshot counts. The key is global across files,
  because resumed and forked sessions copy lines (same ids) into other session files.
- Without `requestId` (some gateways) the key is `message.id` scoped by `sessionId`, since
  gateways reuse message ids across sessions. Without `message.id` a line is never deduped.
- Sidechain replays (ccusage #913): a line that shares only `message.id` with a known call, where
  either side is a sidechain, is the same call; the non-sidechain copy wins. A sidechain copy that
  was already emitted is then retracted (re-emitted with `duplicate_of`). "Sidechain" here means
  any subagent line (`isSidechain`, `agentId`, or a subagent file): a superset of ccusage's
  `isSidechain` test, since a message id names one response whoever replays it. Two main-thread
  copies under different request ids stay two calls, as in ccusage.
- Cache writes: the 5m/1h split is what the API bills, so when it disagrees with
  `cache_creation_input_tokens` the split is used and a ParseProblem is reported (once per file).
  Without a split the total goes to the 5m tier with `cache_write_unsplit`.
- `<synthetic>` lines are local (errors, canned replies), never billed; the rate-limit ones among
  them become `LimitEvent`s.

Event ids and revisions (the REVISION contract of `shared.events`):

- `claude:<message.id>:<requestId>`; `claude:<message.id>:session=<sessionId>` without
  requestId; `claude:line:<path below projects/>:<uuid or #lineno>` without message.id;
  `claude:limit:<uuid>` for a limit hit.
- revision = 2 × (input + output + cache write + cache read) + (1 if the line has `speed`), so a
  larger snapshot always has a higher revision and ties go to the line with `speed`, whatever
  order files are read in. A retraction has revision `RETRACTED + <last emitted revision>`,
  above any snapshot's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, Final

import msgspec

from node_agent.sources._claude_limits import is_limit_text, machine_zone, parse_limit_text
from node_agent.sources._claude_line import (
    SYNTHETIC_MODEL,
    FileFacts,
    ToolUses,
    UsageLine,
    checked_usage,
    record_of,
    typed_record,
    typed_usage,
)
from node_agent.sources._values import iso_time as _timestamp
from node_agent.sources._values import text as _str
from node_agent.sources.base import FileKind, ParseProblem, Sink, Source, SourceFile
from node_agent.sources.homes import ClaudeHomes
from shared.events import LimitEvent, LimitKind, Role, Tokens, UsageEvent

# Above any snapshot revision (2 × tokens of one call stays far below 2**48).
RETRACTED: Final = 1 << 48

ORDER_MAIN: Final = 0
ORDER_SUBAGENT: Final = 1
ORDER_WORKFLOW: Final = 2

# Cheap byte-level prefilters: most bytes of a transcript are user and tool-result lines.
_USAGE_MARK: Final = b'"usage"'
_USER_MARK: Final = b'"type":"user"'  # unescaped quotes: only JSON structure matches
_HEAD: Final = 512
_ERROR_MARK: Final = b'"isApiErrorMessage"'


def number_kept_lines(block: bytes, end: int, lineno: int, out: list[tuple[int, bytes]]) -> int:
    """`tailer._number(block, end, lineno, out, ClaudeSource().ignores)` with the test written
    into the loop: it runs on every line of a transcript (~62,000 per 200 MB), and a call per
    line cost more than the test. (A property test holds the two alike.)"""
    find = block.find
    rfind = block.rfind
    pos = 0
    while True:
        nl = find(b"\n", pos, end)
        stop = end if nl < 0 else nl
        lineno += 1
        if stop > pos and block[stop - 1] == 13:  # CR
            stop -= 1
        if stop > pos and (
            block[stop - 1] != 0x7D  # not '}': torn or garbage, for the reader to tell
            or (
                find(_USER_MARK, pos, pos + _HEAD if pos + _HEAD < stop else stop) < 0
                and (rfind(_USAGE_MARK, pos, stop) >= 0 or find(_ERROR_MARK, pos, stop) >= 0)
            )
        ):
            out.append((lineno, block[pos:stop]))
        if nl < 0:
            return lineno
        pos = nl + 1


class Run(msgspec.Struct, array_like=True, gc=False):
    """Consecutive usage lines of one file with the same event id (the streaming snapshots of
    one response): all the dedupe needs of them, so a file's reading can be kept and merged."""

    best: UsageLine  # the first line with the highest revision
    revisions: list[int]  # of every line, in order
    side: bool  # the first line is a sidechain/subagent line


@dataclass(slots=True, eq=False)
class _Key:
    """One dedupe key (message.id + requestId, or session-scoped message.id)."""

    event_id: str
    side: bool  # the copy that created the key is a sidechain/subagent line
    revision: int = -1  # highest revision emitted; -1 = nothing emitted yet
    replay: bool = False  # a losing copy of a call: its lines are skipped
    last: UsageEvent | None = None  # kept for sidechain keys only, to be able to retract them


@dataclass(slots=True, eq=False)
class _Pending:
    """The best line of a call whose event is not built yet (a later snapshot may supersede it)."""

    key: _Key
    loser: _Key | None
    path: Path
    line: UsageLine


@dataclass(slots=True, eq=False)
class _Call:
    """The copies of one model call that share a message.id across request ids."""

    winner: _Key


def _classify(
    root: Path, folder: Path, name: str, regular: bool | None = None
) -> SourceFile | None:
    """The transcript `folder/name` of the projects dir `root`, with its reading order; None
    for a file that holds no usage. `regular`: whether it is a regular file, when the caller
    knows (a directory listing does, without a stat)."""
    if not name.endswith(".jsonl") or not folder.is_relative_to(root):
        return None
    return _classify_in(folder, folder.relative_to(root).parts, name, regular)


def _classify_in(
    folder: Path, rel_dir: tuple[str, ...], name: str, regular: bool | None
) -> SourceFile | None:
    """`_classify` of a file in `folder`, which lies `rel_dir` below the projects dir."""
    if not name.endswith(".jsonl"):
        return None
    if not (regular if regular is not None else (folder / name).is_file()):
        # A FIFO blocked the reader for good; a link to /dev/zero filled memory until killed.
        return None
    if "workflows" in rel_dir:
        if name == "journal.jsonl":  # workflow bookkeeping, no usage
            return None
        order = ORDER_WORKFLOW
    elif len(rel_dir) <= 1 and not name.startswith("agent-"):
        order = ORDER_MAIN  # projects/<slug>/<session>.jsonl
    else:
        order = ORDER_SUBAGENT
    return SourceFile(folder / name, FileKind.JSONL, order)


def _kind(entry: os.DirEntry[str]) -> tuple[bool, bool]:
    """(a folder to walk into, a regular file) as os.walk tells them: links to folders are not
    walked into, and an entry whose type cannot be told is neither."""
    try:
        if entry.is_dir():
            return not entry.is_symlink(), False
        return False, entry.is_file()
    except OSError:
        return False, False


class ClaudeSource(ClaudeHomes, Source):
    def __init__(self, local_tz: tzinfo | None = None) -> None:
        # Zone of reset times that name none (Claude Code prints them in the machine's zone);
        # a parameter so tests do not depend on the machine.
        self._local_tz = local_tz
        self._keys: dict[str, _Key] = {}
        self._calls: dict[str, list[_Call]] = {}
        self._files: dict[Path, FileFacts] = {}
        self._pending: _Pending | None = None

    @property
    def local_tz(self) -> tzinfo:
        # Looked up at the first limit line: most reads meet none (and zoneinfo costs start-up).
        if self._local_tz is None:
            self._local_tz = machine_zone()
        return self._local_tz

    # -- homes and files ------------------------------------------------------------------

    def discover(self, home: Path) -> list[SourceFile]:
        root = self._projects_dir(home)
        return self._walk(root, root) if root.is_dir() else []

    def discover_under(self, home: Path, under: Path) -> list[SourceFile]:
        # Walks only `under`: the projects dir of a wrongly guessed home may be a code tree.
        root = self._projects_dir(home)
        if under.is_dir():
            return self._walk(root, under)
        found = _classify(root, under.parent, under.name)
        return [found] if found is not None else []

    @staticmethod
    def _projects_dir(home: Path) -> Path:
        if home.name == "projects" and not (home / "projects").is_dir():
            return home
        return home / "projects"

    @staticmethod
    def _walk(root: Path, start: Path) -> list[SourceFile]:
        # As os.walk (folders it cannot list are passed over, links to folders not followed),
        # but the listing's own file types spare a stat per file.
        found: list[SourceFile] = []
        if not start.is_relative_to(root):
            return found
        # Each folder with its parts below root: worked out once per folder, not per file.
        folders = [(start, start.relative_to(root).parts)]
        while folders:
            folder, rel_dir = folders.pop()
            try:
                with os.scandir(folder) as entries:
                    listed = [(entry.name, *_kind(entry)) for entry in entries]
            except OSError:
                continue
            for name, is_dir, is_file in listed:
                if is_dir:
                    folders.append((folder / name, (*rel_dir, name)))
                elif (file := _classify_in(folder, rel_dir, name, is_file)) is not None:
                    found.append(file)
        found.sort(key=lambda f: (f.order, str(f.path)))
        return found

    # -- lines ----------------------------------------------------------------------------

    def ignores(self, data: bytes, start: int, end: int) -> bool:
        if end <= start or data[end - 1] != 0x7D:  # not '}': torn or garbage, for feed_line
            return False
        if data.find(_USER_MARK, start, min(start + _HEAD, end)) >= 0:
            # Most bytes are user/tool-result lines; their top-level type comes before the big
            # message, so the head says enough. (Their toolUseResult.usage is never spend.)
            return True
        # Summary, snapshot and system lines carry no usage. Searched from the end: an
        # assistant line's usage follows its content, most of its bytes.
        return data.rfind(_USAGE_MARK, start, end) < 0 and data.find(_ERROR_MARK, start, end) < 0

    def feed_line(self, path: Path, lineno: int, line: bytes, sink: Sink) -> None:
        if not self.ignores(line, 0, len(line)):
            self.feed_kept_line(path, lineno, line, sink)

    def feed_kept_line(self, path: Path, lineno: int, line: bytes, sink: Sink) -> None:
        usage = self.read_line(self.facts(path), lineno, line, sink)
        if usage is not None:
            self.take(Run(usage, [usage.revision], usage.is_sub), path, sink)

    def read_line(
        self,
        facts: FileFacts,
        lineno: int,
        line: bytes,
        sink: Sink,
        defer: ToolUses | None = None,
    ) -> UsageLine | None:
        """The usage line on `line`, if any; limit lines, skips and problems go to `sink`.
        `defer`: takes its tool uses, leaving its `tool_calls` to the caller (`with_tools`).
        Without `wants_tool_calls`, tool uses are not read at all (`tool_calls` None)."""
        tools = self.wants_tool_calls
        typed = typed_record(line, tools)
        if typed is not None:
            usage = typed_usage(typed, facts, lineno, sink, defer)
            if usage is not False:
                return usage
        return self.checked_line(facts, lineno, line, sink, defer)

    def checked_line(
        self,
        facts: FileFacts,
        lineno: int,
        line: bytes,
        sink: Sink,
        defer: ToolUses | None = None,
    ) -> UsageLine | None:
        """`read_line` through the checked path alone: for a line the typed path declined."""
        tools = self.wants_tool_calls
        path = facts.path
        rec = record_of(path, lineno, line, sink)
        if rec is None:
            return None
        msg = rec.get("message")
        if not isinstance(msg, dict):
            return None
        if rec.get("isApiErrorMessage") is True and self._is_limit_line(rec, msg):
            self._limit(facts, lineno, rec, msg, sink)
            return None
        found = msg.get("usage")
        if not isinstance(found, dict) or rec.get("type") == "user":
            return None  # toolUseResult.usage on user lines is a context size, never spend
        if msg.get("model") == SYNTHETIC_MODEL:
            sink.skip("synthetic")
            return None
        if defer is not None:
            defer.clear()  # of the typed path, had it got as far
        return checked_usage(rec, msg, found, facts, lineno, sink, defer, tools)

    def take(self, run: Run, path: Path, sink: Sink) -> None:
        """The dedupe of a run of `path`'s usage lines: as if its lines came one by one."""
        line = run.best
        if line.group is None:
            sink.usage(self._event(line, path))  # no message.id: nothing to dedupe on
            return
        key = self._keys.get(line.event_id)
        loser: _Key | None = None
        if key is None:
            key = _Key(line.event_id, run.side)
            self._keys[line.event_id] = key
            loser = self._join(key, self._calls.setdefault(line.group, []))
        if key.replay:
            for _ in run.revisions:
                sink.skip("replayed")
            return
        top = key.revision
        for revision in run.revisions:
            if revision <= top:
                sink.skip("snapshot")  # an earlier or equal streaming snapshot of a call
            else:
                top = revision
        if top == key.revision:
            return
        key.revision = top
        pending = _Pending(key, loser, path, line)
        held = self._pending
        if held is not None and held.key is not key:
            self.flush(sink)
        elif held is not None and pending.loser is None:
            pending.loser = held.loser  # a displaced sidechain copy, found by an earlier snapshot
        # The streaming snapshots of one response are consecutive lines: hold the latest and
        # build its event once, when the next call starts or the caller flushes.
        self._pending = pending

    def flush(self, sink: Sink) -> None:
        held, self._pending = self._pending, None
        if held is None:
            return
        event = self._event(held.line, held.path)
        key, loser = held.key, held.loser
        if key.side:
            key.last = event
        sink.usage(event)
        if loser is not None and loser.last is not None:
            # The sidechain copy was counted before its main copy turned up: take it back.
            loser.revision = RETRACTED + loser.revision
            sink.usage(
                msgspec.structs.replace(
                    loser.last, revision=loser.revision, duplicate_of=event.event_id
                )
            )
            loser.last = None

    def _event(self, line: UsageLine, path: Path) -> UsageEvent:
        return UsageEvent(
            event_id=line.event_id,
            ts=line.ts,
            agent=self.agent,
            model=line.model,
            tokens=Tokens(*line.tokens),
            session_id=line.session,
            revision=line.revision,
            role=Role.SUBAGENT if line.is_sub else Role.MAIN,
            parent_session_id=line.session if line.is_sub else None,
            subagent_id=line.agent_id,
            project=line.project,
            git_branch=line.git_branch,
            service_tier=line.service_tier,
            speed=line.speed,
            inference_geo=line.inference_geo,
            cache_write_unsplit=line.unsplit,
            reported_cost_usd=line.reported_cost,
            agent_version=line.version,
            origin=f"{path}:{line.lineno}",
            tool_calls=line.tool_calls,
            entrypoint=line.entrypoint,
        )

    @staticmethod
    def _join(key: _Key, calls: list[_Call]) -> _Key | None:
        """Place a new key among the calls of its message.id (marking it a replay if it is
        one); returns the sidechain key it displaces, if any."""
        if key.side:
            if calls:
                # Any known copy (main or sidechain) of this message already stands for the call.
                key.replay = True
            else:
                calls.append(_Call(key))
            return None
        side_call = next((c for c in calls if c.winner.side), None)
        if side_call is None:
            # Two non-sidechain copies under different request ids are distinct calls (as ccusage).
            calls.append(_Call(key))
            return None
        loser = side_call.winner
        side_call.winner = key
        loser.replay = True
        return loser

    # -- limits ---------------------------------------------------------------------------

    @staticmethod
    def _is_limit_line(rec: dict[str, Any], msg: dict[str, Any]) -> bool:
        if rec.get("error") == "rate_limit" or rec.get("apiErrorStatus") == 429:
            return True
        return is_limit_text(_text(msg))

    def _limit(
        self, facts: FileFacts, lineno: int, rec: dict[str, Any], msg: dict[str, Any], sink: Sink
    ) -> None:
        path = facts.path
        ts = _timestamp(rec.get("timestamp"))
        if ts is None:
            sink.problem(ParseProblem(str(path), lineno, "limit line without a valid timestamp"))
            return
        text = _text(msg)
        info = parse_limit_text(text, ts, self.local_tz)
        if info.problem:
            sink.problem(ParseProblem(str(path), lineno, info.problem))
        uid = _str(rec.get("uuid")) or f"{facts.rel}#{lineno}"
        sink.limit(
            LimitEvent(
                event_id=f"claude:limit:{uid}",
                ts=ts,
                agent=self.agent,
                kind=LimitKind.RATE_LIMIT_HIT,
                window=info.window,
                window_minutes=info.window_minutes,
                resets_at=info.resets_at,
                message=text or None,
                session_id=_str(rec.get("sessionId")) or facts.stem,
                origin=f"{path}:{lineno}",
            )
        )

    # -- per file -------------------------------------------------------------------------

    def facts(self, path: Path) -> FileFacts:
        facts = self._files.get(path)
        if facts is None:
            facts = self._files[path] = FileFacts(path)
        return facts


# -- helpers ------------------------------------------------------------------------------


def _text(msg: dict[str, Any]) -> str:
    content = msg.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                return str(block["text"])
    return ""

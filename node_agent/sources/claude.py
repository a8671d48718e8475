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

import hashlib
import json
import os
from dataclasses import dataclass, replace
from datetime import tzinfo
from pathlib import Path
from typing import Any, ClassVar, Final

from node_agent.sources._claude_limits import is_limit_text, machine_zone, parse_limit_text
from node_agent.sources._values import iso_time as _timestamp
from node_agent.sources._values import json_object, token_count
from node_agent.sources._values import text as _str
from node_agent.sources.base import FileKind, ParseProblem, Sink, Source, SourceFile
from shared.events import MAX_TOKENS, Agent, LimitEvent, LimitKind, Role, Tokens, UsageEvent

# Above any snapshot revision (2 × tokens of one call stays far below 2**48).
RETRACTED: Final = 1 << 48

ORDER_MAIN: Final = 0
ORDER_SUBAGENT: Final = 1
ORDER_WORKFLOW: Final = 2

SYNTHETIC_MODEL: Final = "<synthetic>"

# Cheap byte-level prefilters: most bytes of a transcript are user and tool-result lines.
_USAGE_MARK: Final = b'"usage"'
_USER_MARK: Final = b'"type":"user"'  # unescaped quotes: only JSON structure matches
_HEAD: Final = 512
_ERROR_MARK: Final = b'"isApiErrorMessage"'


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
    """A usage line whose event is not built yet (a later snapshot may supersede it)."""

    key: _Key | None
    loser: _Key | None
    path: Path
    lineno: int
    rec: dict[str, Any]
    msg: dict[str, Any]
    usage: dict[str, Any]
    ts: float
    tokens: Tokens
    unsplit: bool
    revision: int
    session: str
    is_sub: bool
    agent_id: str | None
    info: _FileInfo
    event_id: str


@dataclass(slots=True, eq=False)
class _Call:
    """The copies of one model call that share a message.id across request ids."""

    winner: _Key


@dataclass(slots=True)
class _FileInfo:
    subagent: bool  # by layout: under subagents/ or named agent-*.jsonl
    file_agent_id: str | None  # the <id> of agent-<id>.jsonl
    rel: str  # path from the projects dir, for line-based event ids
    stem: str
    split_mismatch_reported: bool = False


def _classify(root: Path, folder: Path, name: str) -> SourceFile | None:
    """The transcript `folder/name` of the projects dir `root`, with its reading order; None
    for a file that holds no usage."""
    if not name.endswith(".jsonl") or not folder.is_relative_to(root):
        return None
    if not (folder / name).is_file():
        # A FIFO blocked the reader for good; a link to /dev/zero filled memory until killed.
        return None
    rel_dir = folder.relative_to(root).parts
    if "workflows" in rel_dir:
        if name == "journal.jsonl":  # workflow bookkeeping, no usage
            return None
        order = ORDER_WORKFLOW
    elif len(rel_dir) <= 1 and not name.startswith("agent-"):
        order = ORDER_MAIN  # projects/<slug>/<session>.jsonl
    else:
        order = ORDER_SUBAGENT
    return SourceFile(folder / name, FileKind.JSONL, order)


class ClaudeSource(Source):
    agent: ClassVar[Agent] = Agent.CLAUDE_CODE
    home_kind: ClassVar[str] = "a Claude Code config dir (~/.claude, $CLAUDE_CONFIG_DIR)"
    usage_files: ClassVar[str] = "session transcripts (projects/<project>/<session>.jsonl)"

    def __init__(self, local_tz: tzinfo | None = None) -> None:
        # Zone of reset times that name none (Claude Code prints them in the machine's zone);
        # a parameter so tests do not depend on the machine.
        self._local_tz = local_tz
        self._keys: dict[str, _Key] = {}
        self._calls: dict[str, list[_Call]] = {}
        self._files: dict[Path, _FileInfo] = {}
        self._pending: _Pending | None = None

    @property
    def local_tz(self) -> tzinfo:
        # Looked up at the first limit line: most reads meet none (and zoneinfo costs start-up).
        if self._local_tz is None:
            self._local_tz = machine_zone()
        return self._local_tz

    # -- homes and files ------------------------------------------------------------------

    def default_homes(self) -> list[Path]:
        env = os.environ.get("CLAUDE_CONFIG_DIR", "")
        homes = [Path(p.strip()).expanduser() for p in env.split(",") if p.strip()]
        if homes:
            return homes
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return [Path.home() / ".claude", Path(xdg) / "claude"]

    def is_home(self, path: Path) -> bool:
        if path.is_dir():
            return path.name == "projects" or (path / "projects").is_dir()
        return path.suffix == ".jsonl" and "projects" in path.parent.parts

    def discover(self, home: Path) -> list[SourceFile]:
        root = self._projects_dir(home)
        return self._walk(root, root) if root.is_dir() else []

    def home_of(self, path: Path) -> Path | None:
        # The config dir above the nearest projects/: any other folder may be called projects.
        return next((p.parent for p in path.parents if p.name == "projects"), None)

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
        found: list[SourceFile] = []
        for dirpath, dirnames, filenames in os.walk(start):  # does not follow dir symlinks
            dirnames.sort()
            for name in filenames:
                file = _classify(root, Path(dirpath), name)
                if file is not None:
                    found.append(file)
        found.sort(key=lambda f: (f.order, str(f.path)))
        return found

    def partition(self, path: Path) -> str:
        # One session: its transcript and its subagent files (which may replay it). Forks and
        # resumes copy calls between sessions; the report re-reads those sessions together.
        parts = path.parts
        if "projects" not in parts:
            return ""
        below = parts[len(parts) - parts[::-1].index("projects") :]
        if len(below) == 2 and below[1].endswith(".jsonl") and not below[1].startswith("agent-"):
            return f"{below[0]}/{below[1][: -len('.jsonl')]}"
        return "/".join(below[:2]) if len(below) > 2 else below[0]

    def dedupe_key(self, event: UsageEvent) -> str:
        # Streaming snapshots, fork copies and sidechain replays all share the message.id
        # (scoped by session where there is no requestId): the `group` of `_usage`.
        rest = event.event_id.removeprefix("claude:")
        if rest.startswith("line:"):
            return event.event_id  # no message.id: never deduped
        msg_id, _, request = rest.partition(":")
        return (
            f"{msg_id}@{request.removeprefix('session=')}"
            if request.startswith("session=")
            else msg_id
        )

    # -- lines ----------------------------------------------------------------------------

    def ignores(self, data: bytes, start: int, end: int) -> bool:
        if end <= start or data[end - 1] != 0x7D:  # not '}': torn or garbage, for feed_line
            return False
        if data.find(_USER_MARK, start, min(start + _HEAD, end)) >= 0:
            # Most bytes are user/tool-result lines; their top-level type comes before the big
            # message, so the head says enough. (Their toolUseResult.usage is never spend.)
            return True
        # Summary, snapshot and system lines carry no usage.
        return data.find(_USAGE_MARK, start, end) < 0 and data.find(_ERROR_MARK, start, end) < 0

    def feed_line(self, path: Path, lineno: int, line: bytes, sink: Sink) -> None:
        if not self.ignores(line, 0, len(line)):
            self.feed_kept_line(path, lineno, line, sink)

    def feed_kept_line(self, path: Path, lineno: int, line: bytes, sink: Sink) -> None:
        if not line.rstrip().endswith(b"}"):
            # Before parsing: catches torn lines that the usage prefilter would hide.
            if line.strip():
                sink.problem(
                    ParseProblem(
                        str(path), lineno, "not a complete JSON object (torn or garbage line)"
                    )
                )
            return
        rec = json_object(path, lineno, line, sink)
        if rec is None:
            return
        msg = rec.get("message")
        if not isinstance(msg, dict):
            return
        if rec.get("isApiErrorMessage") is True and self._is_limit_line(rec, msg):
            self._limit(path, lineno, rec, msg, sink)
            return
        usage = msg.get("usage")
        if not isinstance(usage, dict) or rec.get("type") == "user":
            return  # toolUseResult.usage on user lines is a context size, never spend
        if msg.get("model") == SYNTHETIC_MODEL:
            sink.skip("synthetic")
            return
        self._usage(path, lineno, rec, msg, usage, sink)

    def _usage(
        self,
        path: Path,
        lineno: int,
        rec: dict[str, Any],
        msg: dict[str, Any],
        usage: dict[str, Any],
        sink: Sink,
    ) -> None:
        ts = _timestamp(rec.get("timestamp"))
        if ts is None:
            sink.problem(ParseProblem(str(path), lineno, "usage line without a valid timestamp"))
            return
        info = self._file(path)
        tokens, unsplit, bad, mismatch = _tokens(usage)
        if bad:
            sink.problem(
                ParseProblem(
                    str(path), lineno, f"non-numeric or out-of-range usage field(s): {bad}"
                )
            )
        if mismatch and not info.split_mismatch_reported:
            info.split_mismatch_reported = True
            sink.problem(
                ParseProblem(
                    str(path),
                    lineno,
                    f"{mismatch}; trusting the split"
                    " (further mismatches in this file not reported)",
                )
            )

        session = _str(rec.get("sessionId")) or info.stem
        forked = rec.get("forkedFrom")
        if isinstance(forked, dict) and (origin_session := _str(forked.get("sessionId"))):
            # A fork copies earlier calls into a new session file; the call was made (and
            # billed) in the session it was copied from, whichever file is read first.
            session = origin_session
        agent_id = _str(rec.get("agentId"))
        sidechain = rec.get("isSidechain") is True
        is_sub = sidechain or agent_id is not None or info.subagent
        size = tokens.input + tokens.output + tokens.cache_read
        size += tokens.cache_write_5m + tokens.cache_write_1h
        revision = 2 * size + (1 if usage.get("speed") is not None else 0)

        msg_id = _str(msg.get("id"))
        request_id = _str(rec.get("requestId"))
        if msg_id is None:
            uid = _str(rec.get("uuid")) or f"#{lineno}"
            event_id = f"claude:line:{info.rel}:{uid}"
        elif request_id is not None:
            event_id = f"claude:{msg_id}:{request_id}"
        else:
            event_id = f"claude:{msg_id}:session={session}"

        key: _Key | None = None
        loser: _Key | None = None
        if msg_id is not None:
            key = self._keys.get(event_id)
            if key is None:
                key = _Key(event_id, is_sub)
                self._keys[event_id] = key
                # Calls sharing a message.id; session-scoped like the key without requestId.
                group = msg_id if request_id is not None else f"{msg_id}@{session}"
                loser = self._join(key, self._calls.setdefault(group, []))
            if key.replay:
                sink.skip("replayed")
                return
            if revision <= key.revision:
                sink.skip("snapshot")  # an earlier or equal streaming snapshot of an emitted call
                return

        pending = _Pending(
            key, loser, path, lineno, rec, msg, usage, ts, tokens, unsplit, revision, session,
            is_sub, agent_id, info, event_id,
        )  # fmt: skip
        if key is None:
            sink.usage(self._event(pending))  # no message.id: nothing to dedupe on
            return
        key.revision = revision
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
        if held is None or held.key is None:
            return
        event = self._event(held)
        key, loser = held.key, held.loser
        if key.side:
            key.last = event
        sink.usage(event)
        if loser is not None and loser.last is not None:
            # The sidechain copy was counted before its main copy turned up: take it back.
            loser.revision = RETRACTED + loser.revision
            sink.usage(replace(loser.last, revision=loser.revision, duplicate_of=event.event_id))
            loser.last = None

    def _event(self, p: _Pending) -> UsageEvent:
        rec, msg, usage = p.rec, p.msg, p.usage
        return UsageEvent(
            event_id=p.event_id,
            ts=p.ts,
            agent=self.agent,
            model=_str(msg.get("model")) or "unknown",
            tokens=p.tokens,
            session_id=p.session,
            revision=p.revision,
            role=Role.SUBAGENT if p.is_sub else Role.MAIN,
            parent_session_id=p.session if p.is_sub else None,
            subagent_id=(p.agent_id or p.info.file_agent_id) if p.is_sub else None,
            project=_str(rec.get("cwd")),
            git_branch=_str(rec.get("gitBranch")),
            service_tier=_str(usage.get("service_tier")),
            speed=_str(usage.get("speed")),
            inference_geo=_str(usage.get("inference_geo")),
            cache_write_unsplit=p.unsplit,
            reported_cost_usd=_decimal_str(rec.get("costUSD")),
            agent_version=_str(rec.get("version")),
            origin=f"{p.path}:{p.lineno}",
            tool_calls=_tool_calls(msg),
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
        self, path: Path, lineno: int, rec: dict[str, Any], msg: dict[str, Any], sink: Sink
    ) -> None:
        ts = _timestamp(rec.get("timestamp"))
        if ts is None:
            sink.problem(ParseProblem(str(path), lineno, "limit line without a valid timestamp"))
            return
        text = _text(msg)
        info = parse_limit_text(text, ts, self.local_tz)
        if info.problem:
            sink.problem(ParseProblem(str(path), lineno, info.problem))
        uid = _str(rec.get("uuid")) or f"{self._file(path).rel}#{lineno}"
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
                session_id=_str(rec.get("sessionId")) or self._file(path).stem,
                origin=f"{path}:{lineno}",
            )
        )

    # -- per file -------------------------------------------------------------------------

    def _file(self, path: Path) -> _FileInfo:
        info = self._files.get(path)
        if info is None:
            parts = path.parts
            # Only the part below projects/ decides the layout (a user dir may be called anything).
            idx = len(parts) - 1 - parts[::-1].index("projects") if "projects" in parts else -1
            below = parts[idx + 1 :] if idx >= 0 else parts[-1:]
            name = path.name
            file_agent = name[len("agent-") : -len(".jsonl")] if name.startswith("agent-") else None
            info = _FileInfo(
                subagent=file_agent is not None or "subagents" in below[:-1],
                file_agent_id=file_agent or None,
                rel="/".join(below),
                stem=path.stem,
            )
            self._files[path] = info
        return info


# -- helpers ------------------------------------------------------------------------------


def _tool_calls(msg: dict[str, Any]) -> str | None:
    """The message's tool uses as "name:hash" (the hub's retry-loop signature; see
    `UsageEvent.tool_calls`): the input is hashed, never sent."""
    content = msg.get("content")
    if not isinstance(content, list):
        return None
    parts = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_use":
            name = _str(block.get("name")) or "?"
            blob = json.dumps(block.get("input"), sort_keys=True, default=str).encode()
            parts.append(f"{name}:{hashlib.sha256(blob).hexdigest()[:12]}")
    return ",".join(parts) or None


def _decimal_str(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return repr(value)  # shortest round-trip form of what was logged, e.g. "0.0123"


def _count(usage: dict[str, Any], name: str, bad: list[str]) -> int:
    value = usage.get(name)
    if value is None:
        return 0
    number = token_count(value)
    if number is not None:
        return number
    bad.append(name)
    return 0


def _tokens(usage: dict[str, Any]) -> tuple[Tokens, bool, list[str], str | None]:
    """Disjoint buckets, whether the cache write lacked its 5m/1h split, bad field names, and how
    the split disagrees with `cache_creation_input_tokens` (None when it does not)."""
    # Fast path for the shape every current line has (plain non-negative ints, a full split):
    # this runs for every streaming snapshot of a cold scan. Anything else takes the checked path.
    get = usage.get
    inp, out = get("input_tokens"), get("output_tokens")
    read, total = get("cache_read_input_tokens"), get("cache_creation_input_tokens")
    split, server = get("cache_creation"), get("server_tool_use")
    web = 0
    if type(server) is dict:
        web = server.get("web_search_requests", 0)
    if (
        type(inp) is int
        and type(out) is int
        and type(read) is int
        and type(total) is int
        and type(split) is dict
        and type(web) is int
        and (server is None or type(server) is dict)
        and min(inp, out, read, total, web) >= 0
        and max(inp, out, read, total, web) <= MAX_TOKENS
    ):
        w5 = split.get("ephemeral_5m_input_tokens")
        w1 = split.get("ephemeral_1h_input_tokens")
        if type(w5) is int and type(w1) is int and 0 <= w5 <= MAX_TOKENS and 0 <= w1 <= MAX_TOKENS:
            mismatch = None if w5 + w1 == total else _mismatch(w5, w1, total)
            return Tokens(inp, out, read, w5, w1, 0, web), False, [], mismatch
    tokens, unsplit, bad = _checked_tokens(usage)
    return tokens, unsplit, bad, _split_mismatch(usage)


def _checked_tokens(usage: dict[str, Any]) -> tuple[Tokens, bool, list[str]]:
    bad: list[str] = []
    creation_total = _count(usage, "cache_creation_input_tokens", bad)
    split = usage.get("cache_creation")
    unsplit = False
    if isinstance(split, dict) and (
        "ephemeral_5m_input_tokens" in split or "ephemeral_1h_input_tokens" in split
    ):
        # The split is what the API bills by tier, so it wins over a disagreeing total.
        w5 = _count(split, "ephemeral_5m_input_tokens", bad)
        w1 = _count(split, "ephemeral_1h_input_tokens", bad)
    else:
        # Older lines: total only. Put it in the 5m tier and let pricing mark it estimated.
        w5, w1 = creation_total, 0
        unsplit = creation_total > 0
    web = 0
    server = usage.get("server_tool_use")
    if isinstance(server, dict):
        web = _count(server, "web_search_requests", bad)
    tokens = Tokens(
        input=_count(usage, "input_tokens", bad),
        output=_count(usage, "output_tokens", bad),
        cache_read=_count(usage, "cache_read_input_tokens", bad),
        cache_write_5m=w5,
        cache_write_1h=w1,
        reasoning=0,  # thinking is billed inside output_tokens; Claude logs no separate count
        web_search_requests=web,
    )
    return tokens, unsplit, bad


def _split_mismatch(usage: dict[str, Any]) -> str | None:
    split = usage.get("cache_creation")
    total = usage.get("cache_creation_input_tokens")
    if not isinstance(split, dict) or not isinstance(total, int):
        return None
    w5 = split.get("ephemeral_5m_input_tokens", 0)
    w1 = split.get("ephemeral_1h_input_tokens", 0)
    if not isinstance(w5, int) or not isinstance(w1, int):
        return None
    if "ephemeral_5m_input_tokens" not in split and "ephemeral_1h_input_tokens" not in split:
        return None
    if w5 + w1 == total:
        return None
    return _mismatch(w5, w1, total)


def _mismatch(w5: int, w1: int, total: int) -> str:
    return (
        f"cache_creation split 5m={w5} + 1h={w1} differs from cache_creation_input_tokens={total}"
    )


def _text(msg: dict[str, Any]) -> str:
    content = msg.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                return str(block["text"])
    return ""

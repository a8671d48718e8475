"""One Claude Code usage line, read into a `UsageLine`: everything its event needs, nothing else.

Two paths give the same result. The typed path decodes a line with msgspec into Structs of the
few fields a usage line needs: unknown fields (the message content, most of a line's bytes) are
skipped in C and no dict is built. Any line those types reject (a field of an unexpected type,
a count out of range, a missing cache split, a limit line) takes the checked path: orjson to
dicts, every value checked as logs drift. The typed path only takes lines where both agree,
with one known exception: a number too large for a double (1e999) in a field the typed path
skips unread makes orjson refuse the whole line, while the typed path reads its usage. No agent
writes such a number, and looking for one costs more than the decoding (a regex over the line).
A reading without tool calls (a scan that only sums) skips the message content the same way, so
the same exception holds there for a tool use's input.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Final, Literal, overload

import msgspec
import orjson

from node_agent.sources._values import iso_time as _timestamp
from node_agent.sources._values import json_object, token_count
from node_agent.sources._values import text as _str
from node_agent.sources.base import ParseProblem, Sink
from shared.events import MAX_TOKENS, Tokens

SYNTHETIC_MODEL: Final = "<synthetic>"

# What the checked path accepts as a count; anything else sends a line there.
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
# orjson reads integers within 64 bits as ints and larger ones as floats (a different repr);
# msgspec bounds stop at int64, so the rare larger ones take the checked path.
_Int64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]


class _Split(msgspec.Struct, gc=False):
    ephemeral_5m_input_tokens: _Count | None = None
    ephemeral_1h_input_tokens: _Count | None = None


class _ServerTools(msgspec.Struct, gc=False):
    web_search_requests: _Count = 0


class _Usage(msgspec.Struct, gc=False):
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    cache_read_input_tokens: _Count | None = None
    cache_creation_input_tokens: _Count | None = None
    cache_creation: _Split | None = None
    server_tool_use: _ServerTools | None = None
    service_tier: str | None = None
    speed: str | None = None
    inference_geo: str | None = None


class _Block(msgspec.Struct, gc=False):
    """A content block: only a tool use's name and input are read (its text is skipped)."""

    type: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw()  # empty: absent


class _BareMessage(msgspec.Struct, gc=False):
    """A message without its content: for a reading that needs no tool calls (its content is
    then skipped in C like any unknown field, tool-use inputs neither decoded nor hashed)."""

    id: str | None = None
    model: str | None = None
    usage: _Usage | None = None


class _Message(_BareMessage, gc=False):
    content: str | list[_Block] | None = None


class _Fork(msgspec.Struct, gc=False):
    sessionId: str | None = None  # noqa: N815 (the log's own name)


class _BareRecord(msgspec.Struct, gc=False):
    type: str | None = None
    message: _BareMessage | None = None
    isApiErrorMessage: bool | None = None  # noqa: N815
    timestamp: str | None = None
    sessionId: str | None = None  # noqa: N815
    forkedFrom: _Fork | None = None  # noqa: N815
    agentId: str | None = None  # noqa: N815
    isSidechain: bool | None = None  # noqa: N815
    requestId: str | None = None  # noqa: N815
    uuid: str | None = None
    cwd: str | None = None
    gitBranch: str | None = None  # noqa: N815
    version: str | None = None
    costUSD: _Int64 | float | None = None  # noqa: N815
    entrypoint: str | None = None


class _Record(_BareRecord, gc=False):
    message: _Message | None = None


_decode = msgspec.json.Decoder(_Record).decode
_decode_bare = msgspec.json.Decoder(_BareRecord).decode
_fromisoformat = datetime.fromisoformat


class UsageLine(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A usage line as its event needs it. Stored in the scan index, hence compact."""

    lineno: int
    event_id: str
    # The message.id copies of one call share (None: no message.id, never deduped).
    group: str | None
    revision: int
    ts: float
    model: str
    tokens: tuple[int, int, int, int, int, int, int]  # the fields of `Tokens`, in order
    session: str
    is_sub: bool
    agent_id: str | None
    project: str | None
    git_branch: str | None
    service_tier: str | None
    speed: str | None
    inference_geo: str | None
    unsplit: bool
    reported_cost: str | None
    version: str | None
    tool_calls: str | None  # see `UsageEvent.tool_calls`
    entrypoint: str | None  # see `UsageEvent.entrypoint`


class FileFacts:
    """What a usage line's reading needs to know about its file."""

    __slots__ = ("path", "rel", "stem", "subagent", "file_agent_id", "split_mismatch_reported")

    def __init__(self, path: Path) -> None:
        parts = path.parts
        # Only the part below projects/ decides the layout (a user dir may be called anything).
        idx = len(parts) - 1 - parts[::-1].index("projects") if "projects" in parts else -1
        below = parts[idx + 1 :] if idx >= 0 else parts[-1:]
        name = path.name
        file_agent = name[len("agent-") : -len(".jsonl")] if name.startswith("agent-") else None
        self.path = path
        self.subagent = file_agent is not None or "subagents" in below[:-1]
        self.file_agent_id = file_agent or None
        self.rel = "/".join(below)  # path from the projects dir, for line-based event ids
        self.stem = path.stem
        self.split_mismatch_reported = False


def typed_record(line: bytes, tools: bool = True) -> _BareRecord | None:
    """The line through the typed path, or None when the checked path must read it. Without
    `tools`, its message content (and so its tool uses) is skipped unread."""
    try:
        rec = (_decode if tools else _decode_bare)(line)
    except (msgspec.DecodeError, RecursionError):
        return None
    if not line.isascii():
        try:
            line.decode()  # orjson refuses invalid UTF-8 anywhere, msgspec not in skipped text
        except UnicodeDecodeError:
            return None
    return rec


@overload
def typed_usage(
    rec: _BareRecord,
    facts: FileFacts,
    lineno: int,
    sink: Sink,
    defer: ToolUses | None = None,
    best: None = None,
) -> UsageLine | None | Literal[False]: ...


@overload
def typed_usage(
    rec: _BareRecord,
    facts: FileFacts,
    lineno: int,
    sink: Sink,
    defer: ToolUses | None,
    best: UsageLine | None,
) -> UsageLine | int | None | Literal[False]: ...


def typed_usage(
    rec: _BareRecord,
    facts: FileFacts,
    lineno: int,
    sink: Sink,
    defer: ToolUses | None = None,
    best: UsageLine | None = None,
) -> UsageLine | int | None | Literal[False]:
    """The usage line of a typed record; None when it holds none (after telling `sink` why, as
    the checked path would); False when it is one for the checked path. With `defer`, its tool
    uses go there and its `tool_calls` is left None. With `best` (the best line so far of the
    run this line may go on), a later snapshot of that call that does not beat it gives only
    its revision, an int: a reader keeps nothing else of it, and about half of a transcript's
    usage lines are such snapshots (a reply's content blocks repeat its usage).

    Run for every usage line of a scan, so written flat: `_line` and `iso_time` inlined."""
    msg = rec.message
    if msg is None:
        return None
    if rec.isApiErrorMessage is True:
        return False  # a possible limit line: its text is needed
    usage = msg.usage
    if usage is None or rec.type == "user":
        return None
    model = msg.model
    if model == SYNTHETIC_MODEL:
        sink.skip("synthetic")
        return None
    stamp = rec.timestamp
    if not stamp:
        return False  # the checked path words the problem
    try:
        parsed = _fromisoformat(stamp)
    except ValueError:
        return False
    # Types and ranges are checked: an absent or null count is 0, as on the checked path.
    inp, out = usage.input_tokens or 0, usage.output_tokens or 0
    read, total = usage.cache_read_input_tokens or 0, usage.cache_creation_input_tokens
    split = usage.cache_creation
    if split is None:
        # Older lines: total only. Put it in the 5m tier and let pricing mark it estimated.
        w5, w1, unsplit = total or 0, 0, bool(total)
    else:
        split_5m, split_1h = split.ephemeral_5m_input_tokens, split.ephemeral_1h_input_tokens
        if split_5m is None or split_1h is None:
            return False  # half a split, or nulls in it
        # The split is what the API bills by tier, so it wins over a disagreeing total.
        w5, w1, unsplit = split_5m, split_1h, False
        if total is not None and w5 + w1 != total:
            _mismatch_problem(facts, lineno, _mismatch(w5, w1, total), sink)
    content = msg.content if type(msg) is _Message else None  # None: a bare record's
    tool_calls: str | None = None
    if type(content) is list:
        uses = _typed_tool_uses(content)
        if uses is False:
            return False  # an input orjson refuses: the checked path words it
        if uses:
            if defer is not None:
                defer.extend(uses)
            else:
                tool_calls = tool_calls_of(uses)
    fork = rec.forkedFrom
    session = (fork.sessionId if fork is not None else None) or rec.sessionId or facts.stem
    speed = usage.speed
    revision = 2 * (inp + out + read + w5 + w1) + (1 if speed is not None else 0)
    msg_id = msg.id
    group: str | None
    if not msg_id:
        event_id = f"claude:line:{facts.rel}:{rec.uuid or f'#{lineno}'}"
        group = None
    elif request_id := rec.requestId:
        event_id = f"claude:{msg_id}:{request_id}"
        group = msg_id
    else:
        event_id = f"claude:{msg_id}:session={session}"
        group = f"{msg_id}@{session}"  # gateways reuse message ids across sessions
    if (
        best is not None
        and group is not None
        and revision <= best.revision
        and best.event_id == event_id
    ):
        return revision
    server = usage.server_tool_use
    agent_id = rec.agentId or None
    is_sub = rec.isSidechain is True or agent_id is not None or facts.subagent
    cost = rec.costUSD
    return UsageLine(
        lineno,
        event_id,
        group,
        revision,
        (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp(),
        model or "unknown",
        (inp, out, read, w5, w1, 0, server.web_search_requests if server else 0),
        session,
        is_sub,
        (agent_id or facts.file_agent_id) if is_sub else None,
        rec.cwd or None,
        rec.gitBranch or None,
        usage.service_tier or None,
        speed or None,
        usage.inference_geo or None,
        unsplit,
        None if cost is None else repr(cost),
        rec.version or None,
        tool_calls,
        rec.entrypoint or None,
    )


def checked_usage(
    rec: dict[str, Any],
    msg: dict[str, Any],
    usage: dict[str, Any],
    facts: FileFacts,
    lineno: int,
    sink: Sink,
    defer: ToolUses | None = None,
    tools: bool = True,
) -> UsageLine | None:
    """The usage line of a record read as dicts, every value checked; None (after reporting
    the problem) when it cannot be one. `defer`: as for `typed_usage`; without `tools`, its
    tool uses are not read (`tool_calls` None)."""
    ts = _timestamp(rec.get("timestamp"))
    path = str(facts.path)
    if ts is None:
        sink.problem(ParseProblem(path, lineno, "usage line without a valid timestamp"))
        return None
    tokens, unsplit, bad, mismatch = _tokens(usage)
    if bad:
        sink.problem(
            ParseProblem(path, lineno, f"non-numeric or out-of-range usage field(s): {bad}")
        )
    if mismatch:
        _mismatch_problem(facts, lineno, mismatch, sink)
    session = _str(rec.get("sessionId")) or facts.stem
    forked = rec.get("forkedFrom")
    if isinstance(forked, dict) and (origin_session := _str(forked.get("sessionId"))):
        # A fork copies earlier calls into a new session file; the call was made (and
        # billed) in the session it was copied from, whichever file is read first.
        session = origin_session
    agent_id = _str(rec.get("agentId"))
    size = tokens.input + tokens.output + tokens.cache_read
    size += tokens.cache_write_5m + tokens.cache_write_1h
    return _line(
        facts,
        lineno,
        msg_id=_str(msg.get("id")),
        request_id=_str(rec.get("requestId")),
        uid=_str(rec.get("uuid")),
        revision=2 * size + (1 if usage.get("speed") is not None else 0),
        ts=ts,
        model=_str(msg.get("model")) or "unknown",
        tokens=(
            tokens.input,
            tokens.output,
            tokens.cache_read,
            tokens.cache_write_5m,
            tokens.cache_write_1h,
            tokens.reasoning,
            tokens.web_search_requests,
        ),
        session=session,
        is_sub=rec.get("isSidechain") is True or agent_id is not None or facts.subagent,
        agent_id=agent_id,
        extra=(
            _str(rec.get("cwd")),
            _str(rec.get("gitBranch")),
            _str(usage.get("service_tier")),
            _str(usage.get("speed")),
            _str(usage.get("inference_geo")),
            unsplit,
            _decimal_str(rec.get("costUSD")),
            _str(rec.get("version")),
            _checked_tool_calls(msg.get("content"), defer) if tools else None,
            _str(rec.get("entrypoint")),
        ),
    )


_Extra = tuple[
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    bool,
    str | None,
    str | None,
    str | None,
    str | None,
]


def _line(
    facts: FileFacts,
    lineno: int,
    *,
    msg_id: str | None,
    request_id: str | None,
    uid: str | None,
    revision: int,
    ts: float,
    model: str,
    tokens: tuple[int, int, int, int, int, int, int],
    session: str,
    is_sub: bool,
    agent_id: str | None,
    extra: _Extra,
) -> UsageLine:
    """The ids of a usage line (see the module doc of `claude`) with its values."""
    group: str | None
    if msg_id is None:
        event_id = f"claude:line:{facts.rel}:{uid or f'#{lineno}'}"
        group = None
    elif request_id is not None:
        event_id = f"claude:{msg_id}:{request_id}"
        group = msg_id
    else:
        event_id = f"claude:{msg_id}:session={session}"
        group = f"{msg_id}@{session}"  # gateways reuse message ids across sessions
    return UsageLine(
        lineno,
        event_id,
        group,
        revision,
        ts,
        model,
        tokens,
        session,
        is_sub,
        (agent_id or facts.file_agent_id) if is_sub else None,
        *extra,
    )


def _mismatch_problem(facts: FileFacts, lineno: int, mismatch: str, sink: Sink) -> None:
    if facts.split_mismatch_reported:
        return
    facts.split_mismatch_reported = True
    sink.problem(
        ParseProblem(
            str(facts.path),
            lineno,
            f"{mismatch}; trusting the split (further mismatches in this file not reported)",
        )
    )


def record_of(path: Path, lineno: int, line: bytes, sink: Sink) -> dict[str, Any] | None:
    """The checked path's record: None (after reporting it) for a line that is no JSON object."""
    if not line.rstrip().endswith(b"}"):
        # Before parsing: catches torn lines that the usage prefilter would hide.
        if line.strip():
            sink.problem(
                ParseProblem(str(path), lineno, "not a complete JSON object (torn or garbage line)")
            )
        return None
    return json_object(path, lineno, line, sink)


# -- tool uses -----------------------------------------------------------------------------


# A line's tool uses as (name, input), for `tool_calls`; a reader that keeps only some lines
# (the largest snapshot of each call) passes a list to take them instead of their signature.
ToolUses = list[tuple[str, object]]


def _typed_tool_uses(blocks: list[_Block]) -> ToolUses | Literal[False]:
    """The tool uses of typed content blocks as (name, input); False when an input is not
    JSON orjson reads (the checked path then refuses the line)."""
    uses: ToolUses = []
    for block in blocks:
        if block.type == "tool_use":
            raw = block.input
            try:
                value = orjson.loads(memoryview(raw)) if len(raw) else None
            except orjson.JSONDecodeError:
                return False
            uses.append((block.name or "?", value))
    return uses


def _checked_tool_calls(content: object, defer: ToolUses | None) -> str | None:
    if not isinstance(content, list):
        return None
    uses: ToolUses = [
        (_str(block.get("name")) or "?", block.get("input"))
        for block in content
        if isinstance(block, dict) and block.get("type") == "tool_use"
    ]
    return _tool_calls(uses, defer)


def _tool_calls(uses: ToolUses, defer: ToolUses | None) -> str | None:
    if defer is not None:
        defer.extend(uses)
        return None
    return tool_calls_of(uses)


def tool_calls_of(uses: ToolUses) -> str | None:
    """`UsageEvent.tool_calls` of a line's tool uses."""
    return ",".join(_signature(name, value) for name, value in uses) or None


def _signature(name: str, tool_input: object) -> str:
    """A tool use as "name:hash of its input" (`UsageEvent.tool_calls`): the hub sees the same
    call repeated without the input leaving the machine."""
    blob = _input_json()(tool_input).encode()
    return f"{name}:{_sha256()(blob).hexdigest()[:12]}"


@cache
def _input_json() -> Callable[[object], str]:
    """`json.dumps(value, sort_keys=True, default=str)`, with its encoder made once."""
    import json

    return json.JSONEncoder(sort_keys=True, default=str).encode


@cache
def _sha256() -> Callable[[bytes], Any]:
    # Imported at the first tool use: hashlib loads OpenSSL (~12 ms) first.
    import hashlib

    return hashlib.sha256


# -- the checked path's values -------------------------------------------------------------


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

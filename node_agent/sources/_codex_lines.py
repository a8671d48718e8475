"""The line level of Codex rollouts: which lines can matter, and the values read from them.

Two paths read a line and give the same values. The typed path decodes it with msgspec into
Structs of the few fields the rules read: the rest of a line (messages, tool output) is skipped
in C and no dict is built. Any line those types reject (a field of an unexpected type, a count
out of range or not an integer, a float ordinal) takes the checked path: orjson to dicts, every
value checked as logs drift. Both hand the rules plain values (`Usage` tuples, strings, floats),
so what follows the reading is one code.

The typed path only takes lines where both agree, with the exception the Claude reader has too:
a number too large for a double (1e999) in a field the typed path skips unread makes orjson
refuse the whole line, while the typed path reads it. No agent writes such a number.
"""

# (No `from __future__ import annotations`: msgspec compiles string annotations when it builds
# the decoder, which tripled its cost, ~0.3 ms of every scan.)

import re
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Final

import msgspec
import orjson

from node_agent.sources._values import text as _text
from node_agent.sources._values import token_count
from shared.events import MAX_TOKENS, Tokens

# Byte-level prefilter on the line head. Serde writes `{"timestamp":..,"type":<kind>,
# "payload":{"type":<event>,..` so both kinds sit in the first bytes; response_item and
# compacted lines (nearly all the bytes) and chatty event_msgs are never JSON-parsed.
_HEAD: Final = 512
_TYPE_KEY: Final = b'"type":"'
_PARSE_KINDS: Final = frozenset({b"session_meta", b"turn_context", b"token_usage_record"})
_SKIP_KINDS: Final = frozenset({b"compacted", b"world_state"})
# response items are skipped but for the model's tool calls (the hub's retry-loop signature)
_TOOL_ITEMS: Final = frozenset({b"function_call", b"custom_tool_call", b"local_shell_call"})
_PARSE_EVENTS: Final = frozenset(
    {b"token_count", b"task_complete", b"error", b"task_started", b"thread_settings_applied"}
)


def wanted(data: bytes, start: int = 0, stop: int | None = None) -> bool:
    """False only for lines (`data[start:stop]`) that cannot matter; anything unrecognised is
    parsed. Searches in place: most lines are never copied out of the read buffer."""
    head_end = start + _HEAD if stop is None else min(start + _HEAD, stop)
    find = data.find
    i = find(_TYPE_KEY, start, head_end)
    if i < 0:
        return True
    begin = i + len(_TYPE_KEY)
    end = find(b'"', begin, head_end)
    if end < 0:
        return True
    kind = data[begin:end]
    if kind in _PARSE_KINDS:
        return True
    if kind in _SKIP_KINDS:
        return False
    if kind not in (b"event_msg", b"response_item"):
        return True
    j = find(_TYPE_KEY, end, head_end)
    if j < 0:
        return kind == b"event_msg"
    begin = j + len(_TYPE_KEY)
    end = find(b'"', begin, head_end)
    if kind == b"response_item":
        return end >= 0 and data[begin:end] in _TOOL_ITEMS
    return end < 0 or data[begin:end] in _PARSE_EVENTS


# The head nearly every line has, as Codex (serde) writes it: the kind and the payload's type
# at known places, so one anchored match in C reads both (or finds a kind always parsed: the
# kind group is then None). `wanted` reads them the same from such a head (the timestamp holds
# no quote); any other head goes to `wanted`.
_STANDARD_HEAD: Final = re.compile(
    rb'\{"timestamp":"[^"]*","type":"(?:'
    rb'(response_item|event_msg)","payload":\{"type":"([^"]*)"'
    rb"|(?:" + b"|".join(re.escape(kind) for kind in sorted(_PARSE_KINDS)) + rb')")'
).match


def ignored(data: bytes, start: int, end: int) -> bool:
    """`CodexSource.ignores`: the line `data[start:end]` is complete (it ends in '}': a torn
    line is reported, never ignored) and not `wanted`. Every line of a scan comes here."""
    if end <= start or data[end - 1] != 0x7D:
        return False
    head = _STANDARD_HEAD(data, start, min(start + _HEAD, end))
    if head is None:
        return not wanted(data, start, end)
    kind, event = head.groups()
    if kind is None:  # one of _PARSE_KINDS
        return False
    if kind == b"response_item":
        return event not in _TOOL_ITEMS
    return event not in _PARSE_EVENTS


def number_kept_lines(block: bytes, end: int, lineno: int, out: list[tuple[int, bytes]]) -> int:
    """`tailer._number(block, end, lineno, out, ignored)` with `ignored` written into the loop:
    it runs on every line of a rollout, and a call per line cost ~10% of the reading (a
    property test holds the two alike)."""
    find = block.find
    head = _STANDARD_HEAD
    pos = 0
    while True:
        nl = find(b"\n", pos, end)
        stop = end if nl < 0 else nl
        lineno += 1
        if stop > pos and block[stop - 1] == 13:  # CR
            stop -= 1
        if stop > pos:
            if block[stop - 1] != 0x7D:  # not '}': torn or garbage, for the reader to tell
                out.append((lineno, block[pos:stop]))
            else:
                match = head(block, pos, pos + _HEAD if pos + _HEAD < stop else stop)
                if match is None:
                    if wanted(block, pos, stop):
                        out.append((lineno, block[pos:stop]))
                else:
                    kind, event = match.groups()
                    if kind is None or (
                        event in _TOOL_ITEMS if kind == b"response_item" else event in _PARSE_EVENTS
                    ):
                        out.append((lineno, block[pos:stop]))
        if nl < 0:
            return lineno
        pos = nl + 1


# tuple.__new__ itself: `Usage(...)` runs a Python __new__ (~1 µs a call)
_new_tuple: Final = tuple.__new__


class Usage(tuple[int, int, int, int, int, int]):
    """One Codex `TokenUsage` object, as logged (subsets not yet split out): input, cached,
    cache_write, output, reasoning, total. A plain tuple type, unpacked where read: a
    NamedTuple's definition execs generated code (~0.2 ms of every start)."""

    __slots__ = ()

    def __new__(
        cls, inp: int, cached: int, cache_write: int, out: int, reasoning: int, total: int
    ) -> "Usage":
        return _new_tuple(cls, (inp, cached, cache_write, out, reasoning, total))

    def __getnewargs__(self) -> tuple[int, int, int, int, int, int]:
        inp, cached, write, out, reasoning, total = self
        return (inp, cached, write, out, reasoning, total)

    @classmethod
    def parse(cls, value: object) -> "Usage | None":
        """The checked path's reading of a usage object (None: not one)."""
        raw = value if isinstance(value, dict) else None
        if raw is None:
            return None
        # Fast path for the shape current rollouts write (non-negative ints): every token_count.
        get = raw.get
        inp, cached, out = get("input_tokens"), get("cached_input_tokens"), get("output_tokens")
        reasoning, total = get("reasoning_output_tokens"), get("total_tokens")
        write = get("cache_write_input_tokens", 0)
        if (
            type(inp) is int
            and type(cached) is int
            and type(out) is int
            and type(reasoning) is int
            and type(total) is int
            and type(write) is int
            and min(inp, cached, out, reasoning, total, write) >= 0
            and max(inp, cached, out, reasoning, total, write) <= MAX_TOKENS
        ):
            return cls(inp, cached, write, out, reasoning, total)
        nums = [
            token_count(raw.get(k))
            for k in (
                "input_tokens",
                "cached_input_tokens",
                "cache_write_input_tokens",
                "output_tokens",
                "reasoning_output_tokens",
                "total_tokens",
            )
        ]
        if all(n is None for n in nums):
            return None
        inp, cached, cache_write, out, reasoning, total = (max(n or 0, 0) for n in nums)
        if nums[5] is None:
            total = inp + out  # reasoning is inside output: never add it again (ccusage #1460)
        return cls(inp, cached, cache_write, out, reasoning, total)

    # The methods below run for every usage row: they unpack the tuple, as a NamedTuple's
    # field names are properties (a call each).

    def key(self) -> tuple[int, int, int, int, int]:
        # cache writes are left out: older token_count totals lack the field while records have it
        inp, cached, _, out, reasoning, total = self
        return (inp, cached, out, reasoning, total)

    def call_key(self) -> tuple[int, int, int, int]:
        inp, cached, _, out, reasoning, _ = self
        return (inp, cached, out, reasoning)

    def is_fill(self) -> bool:
        """Upstream `fill_to_context_window`: only total_tokens set. Not a model call."""
        inp, cached, _, out, reasoning, total = self
        return total > 0 and not (inp or cached or out or reasoning)

    def is_zero(self) -> bool:
        inp, cached, write, out, reasoning, _ = self
        return not (inp or cached or write or out or reasoning)

    def covers(self, other: "Usage") -> bool:
        inp, cached, write, out, reasoning, total = self
        o_inp, o_cached, o_write, o_out, o_reasoning, o_total = other
        return (
            inp >= o_inp
            and cached >= o_cached
            and write >= o_write
            and out >= o_out
            and reasoning >= o_reasoning
            and total >= o_total
        )

    def minus(self, other: "Usage") -> "Usage":
        inp, cached, write, out, reasoning, total = self
        o_inp, o_cached, o_write, o_out, o_reasoning, o_total = other
        return _new_tuple(
            Usage,
            (
                inp - o_inp,
                cached - o_cached,
                write - o_write,
                out - o_out,
                reasoning - o_reasoning,
                total - o_total,
            ),
        )

    def plus(self, other: "Usage") -> "Usage":
        inp, cached, write, out, reasoning, total = self
        o_inp, o_cached, o_write, o_out, o_reasoning, o_total = other
        return Usage(
            inp + o_inp,
            cached + o_cached,
            write + o_write,
            out + o_out,
            reasoning + o_reasoning,
            total + o_total,
        )

    def tokens(self) -> Tokens:
        inp, cached, write, out, reasoning, _ = self
        # (conditionals, not min(): a builtin call each, for every call read)
        cached = cached if cached < inp else inp
        rest = inp - cached
        write = write if write < rest else rest
        reasoning = reasoning if reasoning < out else out
        return Tokens(rest - write, out - reasoning, cached, write, 0, reasoning)


# --- the typed path ---------------------------------------------------------------------------

# What the checked path's fast path takes as a count; anything else sends a line there.
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
# orjson reads integers within 64 bits as ints and larger ones as floats; msgspec bounds stop
# at int64, so the rare larger ones take the checked path.
_Int64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]


class TypedUsage(msgspec.Struct, gc=False):
    """A usage object of the shape current builds write: the checked path's fast path."""

    input_tokens: _Count
    cached_input_tokens: _Count
    output_tokens: _Count
    reasoning_output_tokens: _Count
    total_tokens: _Count
    cache_write_input_tokens: _Count = 0

    def usage(self) -> Usage:
        return _new_tuple(
            Usage,
            (
                self.input_tokens,
                self.cached_input_tokens,
                self.cache_write_input_tokens,
                self.output_tokens,
                self.reasoning_output_tokens,
                self.total_tokens,
            ),
        )


class TypedInfo(msgspec.Struct, gc=False):
    total_token_usage: TypedUsage | None = None
    last_token_usage: TypedUsage | None = None
    model: str | None = None


class TypedAttribution(msgspec.Struct, gc=False):
    model: str | None = None
    service_tier: str | None = None
    model_provider: str | None = None


class TypedPayload(msgspec.Struct, gc=False):
    """The fields of every payload kind the typed path reads, in one type (a field name means
    the same in each kind that has it). Raw fields are kept as their JSON text, decoded only
    when needed: a tool call's arguments (hashed), rate limits (a scan does not read them)."""

    type: str | None = None
    # token_count
    info: TypedInfo | None = None
    rate_limits: msgspec.Raw = msgspec.Raw()  # empty: absent
    model: str | None = None
    # turn_context, task_started
    turn_id: str | None = None
    started_at: float | None = None
    cwd: str | None = None
    # token_usage_record
    thread_id: str | None = None
    usage: TypedUsage | None = None
    thread_token_usage: TypedUsage | None = None
    response_id: str | None = None
    completed_at_ms: _Int64 | None = None
    attribution: TypedAttribution | None = None
    service_tier: str | None = None
    model_provider: str | None = None
    # response_item (tool calls)
    name: str | None = None
    arguments: msgspec.Raw = msgspec.Raw()
    input: msgspec.Raw = msgspec.Raw()
    action: msgspec.Raw = msgspec.Raw()


class TypedLine(msgspec.Struct, gc=False):
    timestamp: str | None = None
    type: str | None = None
    ordinal: _Int64 | None = None
    payload: TypedPayload | None = None


_decode = msgspec.json.Decoder(TypedLine).decode

# The kinds the typed path reads; the others (session_meta, a few lines a rollout, and anything
# unknown) go the checked way.
TYPED_KINDS: Final = frozenset({"event_msg", "response_item", "turn_context", "token_usage_record"})


def typed_line(data: bytes) -> TypedLine | None:
    """The line through the typed path, or None when the checked path must read it."""
    try:
        line = _decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    if not data.isascii():
        try:
            data.decode()  # orjson refuses invalid UTF-8 anywhere, msgspec not in skipped text
        except UnicodeDecodeError:
            return None
    return line


def raw_value(raw: msgspec.Raw) -> object:
    """The value of a Raw field (None when absent). Raises orjson.JSONDecodeError for a value
    orjson refuses (then the whole line is the checked path's)."""
    return orjson.loads(memoryview(raw)) if len(raw) else None


def typed_tool_arguments(payload: TypedPayload) -> object:
    """`arguments`, else `input`, else `action` (the first one present, null included): what
    the checked path's `payload.get("arguments", payload.get("input", ...))` reads."""
    for raw in (payload.arguments, payload.input, payload.action):
        if len(raw):
            return orjson.loads(memoryview(raw))
    return None


def checked_tool_arguments(payload: dict[str, Any]) -> object:
    return payload.get("arguments", payload.get("input", payload.get("action")))


def tool_call(name: str | None, kind: str | None, arguments: object) -> str:
    """A response item's tool call as "name:hash" (the hub's retry-loop signature, as Claude
    Code's tool uses): 12 hex digits of SHA-256 of its arguments, which are never sent."""
    label = name or kind or "?"
    blob = (
        arguments
        if isinstance(arguments, str)
        else orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)
    )
    data = blob.encode() if isinstance(blob, str) else blob
    return f"{label}:{_sha256()(data).hexdigest()[:12]}"


def checked_tool_call(payload: dict[str, Any]) -> str:
    return tool_call(
        _text(payload.get("name")), _text(payload.get("type")), checked_tool_arguments(payload)
    )


@cache
def _sha256() -> Callable[[bytes], Any]:
    # Imported at the first tool call: hashlib loads OpenSSL (~2-12 ms) first.
    import hashlib

    return hashlib.sha256

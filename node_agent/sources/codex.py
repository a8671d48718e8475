"""Codex CLI: JSONL rollouts under `$CODEX_HOME/sessions/` and `archived_sessions/`.

Rules (research/log-formats.md §2 and §6, with ccusage, tokscale and openai/codex as evidence).

Per-call usage
- `token_usage_record` (newer builds) is one record per completed Responses API response.
- Otherwise usage comes from `event_msg`/`token_count` as the delta of the cumulative
  `info.total_token_usage`. Rows whose cumulative vector was already seen in this file are
  skipped: rate-limit refreshes repeat an unchanged total, and out-of-order snapshots repeat an
  older one. On a decrease (reset/compaction) the row falls back to `last_token_usage`; so does
  the first row of a file, whose total may include earlier pages or a parent's history.
  `info: null` rows carry only rate limits. Synthetic context-window fills (upstream
  `fill_to_context_window`: a total of the window size with zero input/output) are skipped and
  do not move the baseline.
- Token buckets: `cached_input_tokens` and `cache_write_input_tokens` sit inside
  `input_tokens`, `reasoning_output_tokens` inside `output_tokens`; they are split into the
  disjoint `Tokens` buckets (cache writes in `cache_write_5m`: OpenAI has one write rate).

Event ids and revisions (the REVISION contract of `shared.events`)
- A call is identified by its thread and the thread's cumulative usage after it:
  `codex:<thread>:cum:<in>-<cached>-<out>-<reasoning>-<total>`, from `total_token_usage` for a
  token_count row (revision 0) and from `thread_token_usage` for a record (revision 2), so the
  record of a response supersedes the token_count of the same response. A record without
  thread totals is `codex:<thread>:resp:<response_id>` (else `:at:<completed_at_ms>:<usage>`).
  Limit events: `codex:<thread>:quota:<limit_id>:<window minutes>:<line timestamp>` and
  `codex:<thread>:limit-hit:<line timestamp>`.
- Both kinds are also paired within a file by per-call usage: if they did not get the same id,
  the token_count is skipped (record first) or retracted with `duplicate_of` at revision 1
  (token_count first). A record's id never depends on pairing, so every copy of it agrees.
- The ids depend only on file content, so re-reading a file, its `.zst` twin or its archived
  copy yields the same ids.

Fork and subagent replays
A forked or spawned thread's rollout starts with its own `session_meta`, usually the parent's
`session_meta`, then a copy of the parent's history, `token_count`s included, re-stamped at fork
time (sometimes thousands of rows, spanning several seconds; some builds keep the original
timestamps). Sibling forks copy it again. ccusage matched parent prefixes or same-second bursts
(#1349, #1370, #1460, PR #1457); tokscale and agentsview PR #657 gate on UUIDv7 turn ids;
openai/codex writes `ordinal` + `subagent_history_start_ordinal` on paginated rollouts. The rule
here needs no other file, so it holds when the parent's rollout is absent or read later:
1. Explicit: when the file's own `session_meta` gives `subagent_history_start_ordinal` (or
   `history_base.end_ordinal_exclusive`), a line with an `ordinal` below it is copied history,
   at or above it is the thread's own. Nothing else is consulted for such lines.
2. Otherwise a copied region starts at the own `session_meta` when it names a parent
   (`forked_from_id`, `parent_thread_id`, `source.subagent.thread_spawn.parent_thread_id`) and at
   any later `session_meta` of another thread. It ends at the first line proven to be the
   thread's own: a `turn_context`/`task_started` whose `turn_id` is a UUIDv7 minted at or after
   the thread's creation (its own UUIDv7 id, else the meta timestamp), a `task_started` whose
   `started_at` is not before it, or a `token_usage_record` of this thread. Copied turns were
   minted before the fork, so they never end it.
   A thread whose own id is a UUIDv7 is presumed to be from such a build: its region is
   structural from the start, so a copy burst with no copied turn_context in it is skipped
   whole; a turn_context without a turn id disproves that and hands over to rule 3.
3. Builds without such turn ids fall back to timing: inside the region a token row is a copy
   while it is within 2.5 s of the thread's creation or within 1 s of the previous copied row
   (the copy is written in one burst), or older than the creation (kept original timestamps).
4. Copied rows never count in the child; their totals become the child's baseline (the child
   inherits the parent's counters) and enter the seen set, so a stray copy after the region
   is still recognised. Copied rate limits and limit hits are the parent's and are dropped.
5. A copied `token_usage_record` names its thread: it is emitted as that thread's call
   (same content id) at revision 1, so the parent's own record (revision 2) wins when its
   file is read, and the call still counts once when the parent's file is gone. Copied legacy
   token_counts cannot be attributed that way (nested copies do not say which ancestor wrote
   each row, and a partial copy loses the per-call size), so with the parent's file absent
   the parent's pre-fork token_count usage is not recovered: under-count, never double count.

Modules: `_codex_lines` reads a line (typed msgspec decoding, or orjson dicts for what the types
refuse), `_codex_rules` applies the rules above to what it read, `_codex_meta` reads
`session_meta`, `_codex_limits` quota readings and limit hits. A cost report reads neither quota
readings nor tool calls (`wants_quota_readings`, `wants_tool_calls`): a tool call's line is still
decoded (its time and its faults count) but its arguments are left unread, like other skipped
fields (see `_codex_lines` on what that may let through).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from re import Pattern
from typing import TYPE_CHECKING, Final

import orjson

from node_agent.sources import _codex_rules as rules
from node_agent.sources._codex_limits import usage_limit_message
from node_agent.sources._codex_lines import (
    TYPED_KINDS,
    TypedAttribution,
    TypedPayload,
    Usage,
    checked_tool_call,
    ignored,
    number_kept_lines,
    raw_value,
    tool_call,
    typed_line,
    typed_tool_arguments,
    wanted,
)
from node_agent.sources._codex_meta import obj, parse_ts
from node_agent.sources._codex_rules import EARLY_FALLBACK_MODEL, UNKNOWN_MODEL, FileState
from node_agent.sources._values import count as _int
from node_agent.sources._values import iso_time
from node_agent.sources._values import number as _num
from node_agent.sources._values import text as _text
from node_agent.sources.base import FileKind, ParseProblem, Sink, Source, SourceFile
from node_agent.sources.homes import CodexHomes

if TYPE_CHECKING:
    from node_agent.tailer import Numberer

__all__ = ["EARLY_FALLBACK_MODEL", "UNKNOWN_MODEL", "CodexSource"]

# The events the typed path leaves to the checked one (a few a rollout: their shapes vary more).
_CHECKED_EVENTS: Final = frozenset({"task_complete", "error", "thread_settings_applied"})
_NO_ATTRIBUTION: Final = TypedAttribution()


@cache
def _rollout_name() -> Pattern[str]:
    import re  # compiled at the first rollout, not at every start

    return re.compile(
        r"rollout-.*?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    )


class CodexSource(CodexHomes, Source):
    def __init__(self, *, typed: bool = True) -> None:
        """`typed=False` reads every line the checked way: the reference the typed path is
        tested against."""
        self._files: dict[str, FileState] = {}
        self._typed = typed
        self._last: tuple[Path, FileState] | None = None  # the file being read (most lines)

    # --- layout -------------------------------------------------------------------------------

    def discover(self, home: Path) -> list[SourceFile]:
        # One file per rollout name: sessions/ before archived_sessions/ (`codex archive` moves
        # files; both may exist meanwhile), plain before .zst (Codex rematerialises a plain copy
        # before appending to a compressed rollout).
        if home.is_file():
            if not self.is_home(home):
                return []
            kind = FileKind.JSONL_ZST if home.name.endswith(".zst") else FileKind.JSONL
            return [SourceFile(home, kind)]
        best: dict[str, tuple[tuple[int, int, str], Path]] = {}
        for tree, sub in enumerate(("sessions", "archived_sessions")):
            root = home / sub
            if not root.is_dir():
                continue
            for path in root.rglob("rollout-*.jsonl*"):
                name = path.name
                if name.endswith(".jsonl.zst"):
                    base, zipped = name[: -len(".zst")], 1
                elif name.endswith(".jsonl"):
                    base, zipped = name, 0
                else:
                    continue
                if not path.is_file():
                    continue
                rank = (tree, zipped, str(path))
                if base not in best or rank < best[base][0]:
                    best[base] = (rank, path)
        files = [
            SourceFile(p, FileKind.JSONL_ZST if p.name.endswith(".zst") else FileKind.JSONL)
            for _, p in best.values()
        ]
        return sorted(files, key=lambda f: str(f.path))

    def partition(self, path: Path) -> str:
        # One rollout (its plain, .zst and archived copies together). A child's copy of its
        # parent's records shares their event ids, so the report re-reads such pairs together.
        return path.name.removesuffix(".zst")

    def reset_file(self, path: Path) -> None:
        self._files.pop(str(path), None)
        self._last = None

    # --- lines --------------------------------------------------------------------------------

    def ignores(self, data: bytes, start: int, end: int) -> bool:
        return ignored(data, start, end)

    def line_test(self) -> Callable[[bytes, int, int], bool]:
        return ignored  # itself: one call per line rather than two

    def line_numberer(self) -> Numberer:
        return number_kept_lines

    def feed_line(self, path: Path, lineno: int, line: bytes, sink: Sink) -> None:
        data = line.strip()
        if data and wanted(data):
            self._parse(path, lineno, data, sink)
        elif data and not data.endswith(b"}"):
            # Not parsed, but a torn line must still be reported (research §6 item 13).
            sink.problem(ParseProblem(str(path), lineno, "truncated JSON line"))

    def feed_kept_line(self, path: Path, lineno: int, line: bytes, sink: Sink) -> None:
        # `ignores` keeps wanted lines and every line not ending in '}': a line that ends in
        # '}' (and has nothing for strip() to shift) is a wanted one; the rest go the long way.
        if line.endswith(b"}") and not line[:1].isspace():
            self._parse(path, lineno, line, sink)
        else:
            self.feed_line(path, lineno, line, sink)

    def _parse(self, path: Path, lineno: int, data: bytes, sink: Sink) -> None:
        """One line the typed way; what the types refuse, and the rare kinds they leave out,
        the checked way."""
        line = typed_line(data) if self._typed else None
        if line is None or line.type not in TYPED_KINDS:
            self._parse_checked(path, lineno, data, sink)
            return
        payload = line.payload
        if payload is None:
            return
        kind = line.type
        raw_ts = line.timestamp
        ts = iso_time(raw_ts) if raw_ts is not None else None
        if kind == "response_item":
            if not self.wants_tool_calls:
                # A quarter of the lines a scan parses. Of such a line only its time outlives
                # it (`FileState.begin`: the time of a later line that has none).
                if ts is not None:
                    self._file(path).last_ts = ts
                return
            try:  # (what may still make orjson refuse the line: before anything is changed)
                arguments = typed_tool_arguments(payload)
            except orjson.JSONDecodeError:
                self._parse_checked(path, lineno, data, sink)
                return
            st = self._file(path)
            st.begin(lineno, ts, raw_ts, line.ordinal)
            if not st.region:  # copied history's tool calls are not this thread's
                st.tools.append(tool_call(payload.name, payload.type, arguments))
            return
        if kind == "event_msg":
            event = payload.type
            if event in _CHECKED_EVENTS:
                self._parse_checked(path, lineno, data, sink)
                return
            quota = self.wants_quota_readings and ts is not None
            limits = None
            if quota and event == "token_count":
                try:
                    limits = raw_value(payload.rate_limits)
                except orjson.JSONDecodeError:
                    self._parse_checked(path, lineno, data, sink)
                    return
            st = self._file(path)
            st.begin(lineno, ts, raw_ts, line.ordinal)
            if event == "token_count":
                info = payload.info
                total = last = None
                model = payload.model or None
                if info is not None:
                    total = info.total_token_usage.usage() if info.total_token_usage else None
                    last = info.last_token_usage.usage() if info.last_token_usage else None
                    model = model or info.model or None
                rules.on_token_count(st, info is not None, total, last, model, limits, quota, sink)
            elif event == "task_started":
                rules.turn_signal(st, payload.turn_id or None, payload.started_at)
            return
        st = self._file(path)
        st.begin(lineno, ts, raw_ts, line.ordinal)
        if kind == "turn_context":
            rules.on_turn(
                st,
                payload.turn_id or None,
                payload.started_at,
                payload.model or None,
                payload.cwd or None,
            )
        else:  # token_usage_record (TYPED_KINDS)
            self._typed_record(st, payload, sink)

    def _typed_record(self, st: FileState, payload: TypedPayload, sink: Sink) -> None:
        usage = payload.usage.usage() if payload.usage is not None else None
        thread = payload.thread_token_usage
        who = payload.attribution
        if who is None:
            who = _NO_ATTRIBUTION
        completed = payload.completed_at_ms
        rules.on_record(
            st,
            payload.thread_id or None,
            usage,
            thread.usage() if thread is not None else None,
            payload.response_id or None,
            completed,
            completed,
            (
                who.model or payload.model or None,
                who.service_tier or payload.service_tier or None,
                who.model_provider or payload.model_provider or None,
            ),
            sink,
        )

    def _parse_checked(self, path: Path, lineno: int, data: bytes, sink: Sink) -> None:
        try:
            parsed: object = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            sink.problem(ParseProblem(str(path), lineno, f"unparseable JSON: {exc}"))
            return
        line = obj(parsed)
        if line is None:
            sink.problem(ParseProblem(str(path), lineno, "not a JSON object"))
            return
        payload = obj(line.get("payload"))
        if payload is None:
            return
        st = self._file(path)
        raw_ts = line.get("timestamp")
        st.begin(
            lineno,
            parse_ts(raw_ts),
            raw_ts if isinstance(raw_ts, str) else None,
            _int(line.get("ordinal")),
        )
        kind = line.get("type")
        if kind == "response_item":
            if self.wants_tool_calls and not st.region:  # copied history's are not this thread's
                st.tools.append(checked_tool_call(payload))
        elif kind == "session_meta":
            rules.on_meta(st, payload, line)
        elif kind == "turn_context":
            rules.on_turn(
                st,
                _text(payload.get("turn_id")),
                _num(payload.get("started_at")),
                _text(payload.get("model")),
                _text(payload.get("cwd")),
            )
        elif kind == "token_usage_record":
            self._checked_record(st, payload, sink)
        elif kind == "event_msg":
            event = payload.get("type")
            if event == "token_count":
                self._checked_token_count(st, payload, sink)
            elif event in ("task_complete", "error"):
                rules.on_limit_error(st, usage_limit_message(payload), sink)
            elif event == "task_started":
                rules.turn_signal(
                    st, _text(payload.get("turn_id")), _num(payload.get("started_at"))
                )
            elif event == "thread_settings_applied":
                rules.on_settings(st, payload)

    def _checked_token_count(
        self, st: FileState, payload: Mapping[str, object], sink: Sink
    ) -> None:
        info = obj(payload.get("info"))
        total = last = None
        model = None
        if info is not None:
            total = Usage.parse(info.get("total_token_usage"))
            last = Usage.parse(info.get("last_token_usage"))
            model = _text(payload.get("model")) or _text(info.get("model"))
        quota = self.wants_quota_readings and st.ts is not None
        limits = payload.get("rate_limits") if quota else None
        rules.on_token_count(st, info is not None, total, last, model, limits, quota, sink)

    def _checked_record(self, st: FileState, payload: Mapping[str, object], sink: Sink) -> None:
        who = obj(payload.get("attribution")) or {}
        completed = payload.get("completed_at_ms")
        rules.on_record(
            st,
            _text(payload.get("thread_id")),
            Usage.parse(payload.get("usage")),
            Usage.parse(payload.get("thread_token_usage")),
            _text(payload.get("response_id")),
            _int(completed),
            _num(completed),
            (
                _text(who.get("model")) or _text(payload.get("model")),
                _text(who.get("service_tier")) or _text(payload.get("service_tier")),
                _text(who.get("model_provider")) or _text(payload.get("model_provider")),
            ),
            sink,
        )

    def _file(self, path: Path) -> FileState:
        last = self._last
        if last is not None and last[0] is path:
            return last[1]
        key = str(path)
        st = self._files.get(key)
        if st is None:
            match = _rollout_name().search(path.name)
            name_thread = match.group(1).lower() if match else None
            stem = path.name.removesuffix(".zst").removesuffix(".jsonl")
            st = FileState(path=key, thread=name_thread or stem, name_thread=name_thread)
            self._files[key] = st
        self._last = (path, st)
        return st

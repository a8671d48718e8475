"""Gemini CLI chat recordings: `~/.gemini/tmp/<project>/chats/`.

Two eras share one directory (research/log-formats.md §3):
- JSONL (v0.39+): `session-<ts>-<id8>.jsonl`, appended; line 1 is the session metadata, then
  message records, `{"$set": …}` metadata updates and `{"$rewindTo": id}` markers. A message is
  appended again, with the same `id`, every time it changes: the last record wins.
  Subagents write `chats/<parent sessionId>/<sessionId>.jsonl` with metadata `kind: "subagent"`.
- legacy whole-file `session-*.json` (one `ConversationRecord` with `messages: [...]`), rewritten
  in place. Resuming one migrates it into `<same name>.jsonl` and leaves the `.json` behind, so
  the same message ids appear in both files.

Event id `gemini:<sessionId>:<message id>`. Revisions order the two eras: a legacy record gets
the file's mtime in ms (a later rewrite of the live legacy file supersedes an earlier one), a
JSONL record gets `_JSONL_REVISION_BASE + line number`, above every legacy revision, so the
migrated copy and the records re-emitted after it win, and within a file the last line wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import orjson

from node_agent.sources._values import iso_time as _parse_ts
from node_agent.sources._values import json_object, token_count
from node_agent.sources.base import FileKind, ParseProblem, Sink, Source, SourceFile
from node_agent.sources.homes import GeminiHomes
from node_agent.sources.homes import chats_dir as _chats_dir
from node_agent.sources.homes import is_chat_file as _is_chat_file
from shared.events import Agent, Role, Tokens, UsageEvent

# Above any legacy revision (an mtime in ms stays below 2**44 until the year 2527).
_JSONL_REVISION_BASE = 1 << 44
_HEAD_LIMIT = 1 << 20  # the metadata line is small; never read more than this to find it


class _Place(msgspec.Struct, frozen=True):
    """Where a record sits, for problems: line 0 plus a prefix inside a whole file."""

    path: str
    line: int
    prefix: str = ""

    def problem(self, reason: str) -> ParseProblem:
        return ParseProblem(self.path, self.line, f"{self.prefix}{reason}")


class _Session(msgspec.Struct):
    session_id: str
    role: Role
    parent_session_id: str | None
    project: str | None


def gemini_tokens(raw: Any) -> Tokens | None:
    """Normalise a `tokens` summary into disjoint buckets; None when it is not a usage record.

    `input` (promptTokenCount) normally includes `cached`, `thoughts` are extra to `output`,
    `tool` (toolUsePromptTokenCount) is billed as input. ccusage's check decides whether the
    input really contains the cache: total == input+output+thoughts+tool means it does.
    Raises ValueError for a present but malformed summary.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("tokens is not an object")
    counts: dict[str, int] = {}
    for key in ("input", "output", "cached", "thoughts", "tool", "total"):
        value = raw.get(key)
        if value is None:
            continue
        number = token_count(value)
        if number is None:
            raise ValueError(f"tokens.{key} is not a count: {value!r}")
        counts[key] = number
    prompt = counts.get("input", 0)
    output = counts.get("output", 0)
    cached = counts.get("cached", 0)
    thoughts = counts.get("thoughts", 0)
    tool = counts.get("tool", 0)
    total = counts.get("total")
    # Without a total the check cannot run: fall back to the API's documented meaning
    # (cached ⊂ prompt). A cache larger than the prompt cannot be inside it.
    includes_cached = total is None or total == prompt + output + thoughts + tool
    if cached > prompt:
        includes_cached = False
    uncached = prompt - cached if includes_cached else prompt
    return Tokens(input=uncached + tool, output=output, cache_read=cached, reasoning=thoughts)


class GeminiSource(GeminiHomes, Source):
    def __init__(self) -> None:
        self._sessions: dict[Path, _Session] = {}  # per JSONL file, from its metadata line
        self._warned_no_meta: set[Path] = set()
        # Last emitted (revision, content, file) per event id: a record that a file re-emits
        # unchanged (tool-call updates) is not sent again. A copy in another file (the
        # migrated JSONL) is, so the outcome does not depend on the order files are read in.
        self._emitted: dict[str, tuple[int, int, str]] = {}
        self._registries: dict[Path, tuple[int, dict[str, str]]] = {}

    # -- where ---------------------------------------------------------------------------

    def discover(self, home: Path) -> list[SourceFile]:
        if home.is_file():
            return [_source_file(home)] if _is_chat_file(home) else []
        files: list[SourceFile] = []
        for chats in sorted((home / "tmp").glob("*/chats")):
            if not chats.is_dir():
                continue
            for entry in sorted(chats.iterdir()):
                if entry.is_file() and entry.name.startswith("session-"):
                    if entry.suffix in (".json", ".jsonl"):
                        files.append(_source_file(entry))
                elif entry.is_dir():  # subagents of one parent session
                    for sub in sorted(entry.iterdir()):
                        if sub.is_file() and sub.suffix in (".json", ".jsonl"):
                            files.append(_source_file(sub, order=1))
        return sorted(files, key=lambda f: (f.order, f.path))

    # -- JSONL era -----------------------------------------------------------------------

    def feed_line(self, path: Path, lineno: int, line: bytes, sink: Sink) -> None:
        if not line.strip():
            return
        record = json_object(path, lineno, line, sink)
        if record is None:
            return
        if "$rewindTo" in record:
            # Rewinding edits the conversation, not the bill: rewound calls were paid for.
            return
        if isinstance(record.get("id"), str):
            session = self._session_for(path, sink, lineno)
            self._message(
                record,
                session,
                _JSONL_REVISION_BASE + lineno,
                f"{path}:{lineno}",
                _Place(str(path), lineno),
                sink,
            )
            return
        if "$set" in record:
            # Metadata updates (lastUpdated, summary, even a full `messages` copy after
            # history sync) carry no call that was not recorded as its own message line.
            return
        if isinstance(record.get("sessionId"), str) and path not in self._sessions:
            self._sessions[path] = self._session_from_meta(path, record)

    def reset_file(self, path: Path) -> None:
        self._sessions.pop(path, None)
        self._warned_no_meta.discard(path)

    # -- legacy whole-file JSON ----------------------------------------------------------

    def read_whole(self, path: Path, sink: Sink) -> None:
        try:
            mtime_ms = path.stat().st_mtime_ns // 1_000_000  # before reading: never too new
            data = path.read_bytes()
        except OSError as exc:
            sink.problem(ParseProblem(str(path), 0, f"cannot read: {exc}"))
            return
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            sink.problem(ParseProblem(str(path), 0, f"invalid JSON: {exc}"))
            return
        if not isinstance(record, dict) or not isinstance(record.get("sessionId"), str):
            sink.problem(ParseProblem(str(path), 0, "not a Gemini conversation record"))
            return
        messages = record.get("messages")
        if not isinstance(messages, list):
            sink.problem(ParseProblem(str(path), 0, "conversation has no messages list"))
            return
        session = self._session_from_meta(path, record)
        for index, message in enumerate(messages):
            where = f"messages[{index}]"
            if not isinstance(message, dict) or not isinstance(message.get("id"), str):
                sink.problem(ParseProblem(str(path), 0, f"{where}: not a message record"))
                continue
            self._message(
                message,
                session,
                mtime_ms,
                f"{path}#{message['id']}",
                _Place(str(path), 0, f"{where}: "),
                sink,
            )

    # -- shared --------------------------------------------------------------------------

    def _message(
        self,
        record: dict[str, Any],
        session: _Session,
        revision: int,
        origin: str,
        place: _Place,
        sink: Sink,
    ) -> None:
        if record.get("type") != "gemini":
            return  # user / info / error / warning: no model call
        try:
            tokens = gemini_tokens(record.get("tokens"))
        except ValueError as exc:
            sink.problem(place.problem(str(exc)))
            return
        if tokens is None:
            return  # usage is attached by a later record of the same id
        if tokens.is_zero():
            sink.skip("gemini: message with zero tokens")
            return
        ts = _parse_ts(record.get("timestamp"))
        if ts is None:
            sink.problem(place.problem(f"bad timestamp {record.get('timestamp')!r}"))
            return
        model = record.get("model")
        model = model if isinstance(model, str) and model else "unknown"
        event_id = f"gemini:{session.session_id}:{record['id']}"
        fingerprint = hash((ts, model, tokens))
        last = self._emitted.get(event_id)
        if last is not None and (
            revision <= last[0] or (fingerprint == last[1] and place.path == last[2])
        ):
            return
        self._emitted[event_id] = (revision, fingerprint, place.path)
        subagent = session.role is Role.SUBAGENT
        sink.usage(
            UsageEvent(
                event_id=event_id,
                ts=ts,
                agent=Agent.GEMINI,
                model=model,
                tokens=tokens,
                session_id=session.session_id,
                revision=revision,
                role=session.role,
                parent_session_id=session.parent_session_id,
                subagent_id=session.session_id if subagent else None,
                project=session.project,
                origin=origin,
            )
        )

    def _session_for(self, path: Path, sink: Sink, lineno: int) -> _Session:
        session = self._sessions.get(path)
        if session is not None:
            return session
        # The tailer may resume past line 1 (daemon restart): read the metadata line itself.
        head = _read_head(path)
        if head is not None:
            session = self._session_from_meta(path, head)
        else:
            if path not in self._warned_no_meta:
                self._warned_no_meta.add(path)
                reason = "no session metadata line; using the file name as session id"
                sink.problem(ParseProblem(str(path), lineno, reason))
            session = self._session_from_meta(path, {"sessionId": path.stem})
        self._sessions[path] = session
        return session

    def _session_from_meta(self, path: Path, meta: dict[str, Any]) -> _Session:
        session_id = str(meta["sessionId"])
        chats = _chats_dir(path)
        nested = chats is not None and path.parent != chats
        kind = meta.get("kind")
        # `kind` decides; files without it (older writers) are placed by their directory.
        subagent = kind == "subagent" or (kind is None and nested)
        parent = path.parent.name if subagent and nested else None
        project_hash = meta.get("projectHash")
        project = self._project(chats.parent if chats is not None else None, project_hash)
        return _Session(
            session_id=session_id,
            role=Role.SUBAGENT if subagent else Role.MAIN,
            parent_session_id=parent,
            project=project,
        )

    def _project(self, project_dir: Path | None, project_hash: Any) -> str | None:
        """The project's path when Gemini's registry knows it, else the project dir name."""
        if project_dir is None:
            return None
        name = project_dir.name
        registry = self._registry(project_dir.parent.parent / "projects.json")
        for root, slug in registry.items():
            if slug == name:
                return root
        try:
            # The marker Gemini writes into every slug dir holds the project's path.
            marker = (project_dir / ".project_root").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            marker = ""
        if marker:
            return marker
        # Before slugs (Feb 2026) the dir, like projectHash, was sha256(project root).
        import hashlib  # here, not at the top: rarely needed, and it costs start-up time

        hashes = {name}
        if isinstance(project_hash, str):
            hashes.add(project_hash)
        for root in registry:
            if hashlib.sha256(root.encode()).hexdigest() in hashes:
                return root
        return name

    def _registry(self, path: Path) -> dict[str, str]:
        """`projects.json` as {abs path: slug}, re-read when it changes."""
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return {}
        cached = self._registries.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        mapping: dict[str, str] = {}
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            data = None
        projects = data.get("projects") if isinstance(data, dict) else None
        if isinstance(projects, dict):
            mapping = {k: v for k, v in projects.items() if isinstance(v, str)}
        self._registries[path] = (mtime, mapping)
        return mapping


def _source_file(path: Path, order: int = 0) -> SourceFile:
    kind = FileKind.JSONL if path.suffix == ".jsonl" else FileKind.WHOLE
    return SourceFile(path, kind, order)


def _read_head(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as f:
            first = f.readline(_HEAD_LIMIT)
    except OSError:
        return None
    try:
        record = orjson.loads(first)
    except orjson.JSONDecodeError:
        return None
    if isinstance(record, dict) and isinstance(record.get("sessionId"), str):
        return record
    return None

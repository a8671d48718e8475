"""Gemini CLI source on real chat files written the way research/log-formats.md §3 shows."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from node_agent.sources.base import FileKind, Source, SourceFile
from node_agent.sources.gemini import GeminiSource, gemini_tokens
from shared.events import Agent, Role, Tokens
from tests.recording import Recorder

SID = "5f0c2d1e-8a7b-4c3d-9e2f-1a0b9c8d7e6f"
META: dict[str, Any] = {
    "sessionId": SID,
    "projectHash": "3b9fc41a",
    "startTime": "2026-09-11T09:00:02.114Z",
    "lastUpdated": "2026-09-11T09:00:02.114Z",
    "kind": "main",
}
USER: dict[str, Any] = {
    "id": "a1b2c3d4-0000-4a1b-8c9d-112233445566",
    "timestamp": "2026-09-11T09:00:05.000Z",
    "type": "user",
    "content": [{"text": "fix the tests"}],
}
# The illustrative line of §3.5: total = input + output + thoughts + tool, so input holds cached.
REPLY: dict[str, Any] = {
    "id": "b2c3d4e5-0000-4a1b-8c9d-112233445566",
    "timestamp": "2026-09-11T09:00:20.530Z",
    "type": "gemini",
    "content": [{"text": "Done — see diff."}],
    "thoughts": [],
    "model": "gemini-2.5-pro",
    "tokens": {
        "input": 18442,
        "output": 356,
        "cached": 12001,
        "thoughts": 904,
        "tool": 0,
        "total": 19702,
    },
}
REPLY_TOKENS = Tokens(input=6441, output=356, cache_read=12001, reasoning=904)


def msg(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, bytes) else orjson.dumps(r) for r in records]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def write_json(path: Path, record: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    return path


def feed(source: Source, file: SourceFile, sink: Recorder, start: int = 1) -> None:
    """What a scan does: JSONL line by line (1-based numbers), whole files at once."""
    if file.kind is FileKind.JSONL:
        for lineno, line in enumerate(file.path.read_bytes().split(b"\n"), 1):
            if lineno >= start and line:
                source.feed_line(file.path, lineno, line, sink)
    else:
        source.read_whole(file.path, sink)


def scan(home: Path, reverse: bool = False) -> Recorder:
    source = GeminiSource()
    sink = Recorder()
    files = sorted(source.discover(home), key=lambda f: (f.order, f.path), reverse=reverse)
    for file in files:
        feed(source, file, sink)
    return sink


def chats(home: Path, project: str = "acme-api") -> Path:
    return home / "tmp" / project / "chats"


def iso_ts(text: str) -> float:
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()


# -- tokens ---------------------------------------------------------------------------------


def test_input_includes_cached_when_total_adds_up() -> None:
    assert gemini_tokens(REPLY["tokens"]) == REPLY_TOKENS


def test_cached_is_separate_when_total_counts_it_on_top() -> None:
    # total = input + output + thoughts + tool + cached: the prompt did not contain the cache.
    raw = {"input": 1000, "output": 50, "cached": 400, "thoughts": 10, "tool": 0, "total": 1460}
    assert gemini_tokens(raw) == Tokens(input=1000, output=50, cache_read=400, reasoning=10)


def test_tool_prompt_tokens_are_billed_as_input() -> None:
    raw = {"input": 1000, "output": 50, "cached": 400, "thoughts": 0, "tool": 30, "total": 1080}
    assert gemini_tokens(raw) == Tokens(input=630, output=50, cache_read=400)


def test_without_total_the_documented_meaning_applies() -> None:
    assert gemini_tokens({"input": 100, "output": 5, "cached": 60}) == Tokens(
        input=40, output=5, cache_read=60
    )


def test_malformed_tokens_raise_and_null_means_no_usage() -> None:
    assert gemini_tokens(None) is None
    with pytest.raises(ValueError, match="tokens.output"):
        gemini_tokens({"input": 1, "output": "many", "cached": 0, "total": 1})


# -- JSONL ----------------------------------------------------------------------------------


def test_illustrative_session(tmp_path: Path) -> None:
    f = write_jsonl(
        chats(tmp_path) / "session-2026-09-11T09-00-5f0c2d1e.jsonl",
        [META, USER, REPLY, {"$set": {"lastUpdated": "2026-09-11T09:00:20.531Z"}}],
    )
    sink = scan(tmp_path)
    assert sink.problems == []
    [event] = sink.events.values()
    assert event.event_id == f"gemini:{SID}:{REPLY['id']}"
    assert event.agent is Agent.GEMINI
    assert event.tokens == REPLY_TOKENS
    assert event.model == "gemini-2.5-pro"
    assert event.session_id == SID
    assert event.role is Role.MAIN
    assert event.parent_session_id is None
    assert event.project == "acme-api"  # no registry: the project dir's name
    assert event.ts == pytest.approx(iso_ts("2026-09-11T09:00:20.530+00:00"))
    assert event.origin == f"{f}:3"


def test_re_emitted_message_last_record_wins(tmp_path: Path) -> None:
    streaming = msg(REPLY, tokens=None)
    with_tools = msg(REPLY, toolCalls=[{"id": "t1", "name": "edit", "status": "success"}])
    corrected = msg(REPLY, tokens={**REPLY["tokens"], "output": 400, "total": 19746})
    write_jsonl(
        chats(tmp_path) / "session-2026-09-11T09-00-5f0c2d1e.jsonl",
        [META, USER, streaming, REPLY, with_tools, corrected],
    )
    sink = scan(tmp_path)
    [event] = sink.events.values()
    assert event.tokens.output == 400
    assert event.origin.endswith(":6")
    # The tokens-less record emits nothing; the tool-call update changes nothing and is not
    # sent again; the last one supersedes with a higher revision.
    assert [e.origin.rsplit(":", 1)[1] for e in sink.sent] == ["4", "6"]
    assert sink.sent[1].revision > sink.sent[0].revision


def test_rewind_does_not_erase_billed_calls(tmp_path: Path) -> None:
    first = msg(REPLY, id="m1")
    second = msg(REPLY, id="m2", timestamp="2026-09-11T09:01:00.000Z")
    after = msg(REPLY, id="m3", timestamp="2026-09-11T09:02:00.000Z")
    write_jsonl(
        chats(tmp_path) / "session-2026-09-11T09-00-5f0c2d1e.jsonl",
        [META, USER, first, second, {"$rewindTo": "m1"}, after],
    )
    sink = scan(tmp_path)
    assert sorted(e.event_id.rsplit(":", 1)[1] for e in sink.events.values()) == [
        "m1",
        "m2",
        "m3",
    ]
    assert sum((e.tokens for e in sink.events.values()), Tokens()) == Tokens(
        input=3 * 6441, output=3 * 356, cache_read=3 * 12001, reasoning=3 * 904
    )


def test_heuristic_applied_per_message_in_a_file(tmp_path: Path) -> None:
    separate = msg(
        REPLY,
        id="sep",
        tokens={"input": 1000, "output": 50, "cached": 400, "thoughts": 10, "total": 1460},
    )
    write_jsonl(chats(tmp_path) / "session-x-5f0c2d1e.jsonl", [META, REPLY, separate])
    events = scan(tmp_path).events
    assert events[f"gemini:{SID}:{REPLY['id']}"].tokens.input == 6441
    assert events[f"gemini:{SID}:sep"].tokens.input == 1000


def test_only_gemini_messages_with_tokens_are_calls(tmp_path: Path) -> None:
    info = {"id": "i1", "timestamp": "2026-09-11T09:00:30.000Z", "type": "info", "content": "x"}
    no_tokens = msg(REPLY, id="nt", tokens=None)
    zero = msg(
        REPLY, id="z", tokens={"input": 0, "output": 0, "cached": 0, "thoughts": 0, "total": 0}
    )
    write_jsonl(chats(tmp_path) / "session-x-5f0c2d1e.jsonl", [META, USER, info, no_tokens, zero])
    sink = scan(tmp_path)
    assert sink.events == {}
    assert sink.problems == []


def test_bad_lines_are_reported_with_their_number_and_the_rest_is_read(tmp_path: Path) -> None:
    bad_ts = msg(REPLY, id="badts", timestamp="yesterday")
    bad_tokens = msg(REPLY, id="badtok", tokens={"input": "lots", "output": 1, "total": 1})
    f = write_jsonl(
        chats(tmp_path) / "session-x-5f0c2d1e.jsonl",
        [META, b'{"id": "torn', b"[1, 2]", bad_ts, bad_tokens, REPLY],
    )
    sink = scan(tmp_path)
    assert list(sink.events) == [f"gemini:{SID}:{REPLY['id']}"]
    assert [(p.path, p.line) for p in sink.problems] == [
        (str(f), 2),
        (str(f), 3),
        (str(f), 4),
        (str(f), 5),
    ]
    assert "timestamp" in sink.problems[2].reason
    assert "tokens.input" in sink.problems[3].reason


def test_resumed_tail_reads_the_session_from_the_metadata_line(tmp_path: Path) -> None:
    f = write_jsonl(chats(tmp_path) / "session-x-5f0c2d1e.jsonl", [META, USER, REPLY])
    source = GeminiSource()
    sink = Recorder()
    feed(source, SourceFile(f, FileKind.JSONL), sink, start=3)  # daemon restarted at line 3
    [event] = sink.events.values()
    assert event.session_id == SID
    assert sink.problems == []


def test_file_without_metadata_falls_back_to_its_name_once(tmp_path: Path) -> None:
    f = write_jsonl(
        chats(tmp_path) / "session-x-5f0c2d1e.jsonl", [USER, REPLY, msg(REPLY, id="two")]
    )
    sink = scan(tmp_path)
    assert {e.session_id for e in sink.events.values()} == {f.stem}
    assert len(sink.problems) == 1 and "metadata" in sink.problems[0].reason


# -- subagents and projects -----------------------------------------------------------------


def test_subagent_chat(tmp_path: Path) -> None:
    child = "9d8c7b6a-1111-4222-8333-444455556666"
    write_jsonl(chats(tmp_path) / "session-2026-09-11T09-00-5f0c2d1e.jsonl", [META, REPLY])
    write_jsonl(
        chats(tmp_path) / SID / f"{child}.jsonl",
        [
            {
                "sessionId": child,
                "projectHash": "3b9fc41a",
                "startTime": "2026-09-11T09:00:10.000Z",
                "lastUpdated": "2026-09-11T09:00:10.000Z",
                "kind": "subagent",
                "directories": ["/home/dev/acme-api"],
            },
            msg(REPLY, id="sub-1", model="gemini-2.5-flash"),
        ],
    )
    events = scan(tmp_path).events
    sub = events[f"gemini:{child}:sub-1"]
    assert sub.role is Role.SUBAGENT
    assert sub.session_id == child
    assert sub.parent_session_id == SID
    assert sub.subagent_id == child
    assert sub.model == "gemini-2.5-flash"
    assert events[f"gemini:{SID}:{REPLY['id']}"].role is Role.MAIN


def test_project_path_from_the_registry_and_from_old_hash_dirs(tmp_path: Path) -> None:
    root = "/home/dev/acme-api"
    old_root = "/home/dev/legacy-tool"
    old_dir = hashlib.sha256(old_root.encode()).hexdigest()
    write_json(tmp_path / "projects.json", {"projects": {root: "acme-api", old_root: "legacy"}})
    write_jsonl(chats(tmp_path, "acme-api") / "session-a-5f0c2d1e.jsonl", [META, REPLY])
    other = {**META, "sessionId": "other"}
    write_jsonl(chats(tmp_path, old_dir) / "session-b-othe.jsonl", [other, REPLY])
    marker_meta = {**META, "sessionId": "marked"}
    write_jsonl(chats(tmp_path, "tool-2") / "session-c-mark.jsonl", [marker_meta, REPLY])
    (tmp_path / "tmp" / "tool-2" / ".project_root").write_text("/srv/tool\n")
    events = scan(tmp_path).events
    assert events[f"gemini:{SID}:{REPLY['id']}"].project == root
    assert events[f"gemini:other:{REPLY['id']}"].project == old_root
    assert events[f"gemini:marked:{REPLY['id']}"].project == "/srv/tool"


# -- legacy whole-file JSON -----------------------------------------------------------------


def legacy_record(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {**META, "messages": messages}


def test_legacy_json_and_its_migrated_jsonl_count_once(tmp_path: Path) -> None:
    one = msg(REPLY, id="m1")
    two = msg(REPLY, id="m2", timestamp="2026-09-11T09:05:00.000Z")
    three = msg(REPLY, id="m3", timestamp="2026-09-12T10:00:00.000Z")
    name = "session-2026-09-11T09-00-5f0c2d1e"
    write_json(chats(tmp_path) / f"{name}.json", legacy_record([USER, one, two]))
    # Resuming migrates: metadata and every message copied, then the new turn appended.
    write_jsonl(chats(tmp_path) / f"{name}.jsonl", [META, USER, one, two, USER, three])
    for reverse in (False, True):  # converges whatever order the files are read in
        sink = scan(tmp_path, reverse=reverse)
        assert sorted(sink.events) == [f"gemini:{SID}:m{i}" for i in (1, 2, 3)]
        total = sum((e.tokens for e in sink.events.values()), Tokens())
        assert total == Tokens(
            input=3 * 6441, output=3 * 356, cache_read=3 * 12001, reasoning=3 * 904
        )
        # the migrated copy outranks the legacy snapshot
        assert all(".jsonl:" in e.origin for e in sink.events.values())


def test_legacy_json_alone_and_its_rewrites(tmp_path: Path) -> None:
    f = write_json(chats(tmp_path) / "session-old-5f0c2d1e.json", legacy_record([USER, REPLY]))
    source = GeminiSource()
    sink = Recorder()
    discovered = source.discover(tmp_path)
    assert discovered == [SourceFile(f, FileKind.WHOLE)]
    source.read_whole(f, sink)
    [first] = sink.events.values()
    assert first.tokens == REPLY_TOKENS
    assert first.origin == f"{f}#{REPLY['id']}"
    # An old CLI rewrites the file in place: the newer snapshot supersedes the older.
    updated = msg(REPLY, tokens={**REPLY["tokens"], "output": 999, "total": 20345})
    write_json(f, legacy_record([USER, updated]))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 5_000_000))
    source.read_whole(f, sink)
    [second] = sink.events.values()
    assert second.tokens.output == 999
    assert second.revision > first.revision


def test_broken_legacy_json_is_one_problem(tmp_path: Path) -> None:
    f = chats(tmp_path) / "session-bad-5f0c2d1e.json"
    f.parent.mkdir(parents=True)
    f.write_text('{"sessionId": "x", "messages": [')
    sink = Recorder()
    GeminiSource().read_whole(f, sink)
    assert sink.events == {}
    assert [(p.path, p.line) for p in sink.problems] == [(str(f), 0)]
    sink2 = Recorder()
    GeminiSource().read_whole(tmp_path / "missing.json", sink2)
    assert len(sink2.problems) == 1 and "cannot read" in sink2.problems[0].reason


# -- homes ----------------------------------------------------------------------------------


def test_homes_and_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_CLI_HOME", str(tmp_path / "alt"))
    homes = GeminiSource().default_homes()
    assert homes[0] == tmp_path / "alt" / ".gemini"
    assert homes[-1] == Path.home() / ".gemini"

    home = tmp_path / ".gemini"
    main = write_jsonl(chats(home) / "session-a-5f0c2d1e.jsonl", [META])
    legacy = write_json(chats(home) / "session-a-5f0c2d1e.json", legacy_record([]))
    sub = write_jsonl(chats(home) / SID / "child.jsonl", [META])
    (chats(home) / "session-a-5f0c2d1e.jsonl.unreadable-1789").write_text("junk")
    source = GeminiSource()
    assert source.is_home(home)
    assert not source.is_home(tmp_path)  # no tmp/ dir
    project_level = tmp_path / "repo" / ".gemini"
    project_level.mkdir(parents=True)
    (project_level / "settings.json").write_text("{}")
    assert not source.is_home(project_level)
    assert source.discover(home) == [
        SourceFile(legacy, FileKind.WHOLE),
        SourceFile(main, FileKind.JSONL),
        SourceFile(sub, FileKind.JSONL, 1),
    ]
    assert source.is_home(main)
    assert source.discover(main) == [SourceFile(main, FileKind.JSONL)]

"""Claude Code source: hand-written lines shaped like research/log-formats.md §1.6, on real files.

Every scenario writes a real `projects/` tree, discovers it and reads it line by line, as a scan
does. `Recorder` keeps every emission in order, so tests can check what was sent, not only the
converged set.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import orjson
import pytest

from node_agent.sources.base import Collector, FileKind, ParseProblem, SourceFile
from node_agent.sources.claude import RETRACTED, ClaudeSource
from node_agent.tailer import iter_plain_lines
from shared.events import Agent, LimitKind, LimitWindow, Role, Tokens, UsageEvent

SESSION = "7b1d2c9e-5a41-4f0e-9d3a-1f2e3d4c5b6a"
OTHER_SESSION = "0f3a9b5c-1111-4c2d-8e7f-aaaaaaaaaaaa"
SLUG = "-home-dev-my-app"  # lossy: the cwd below has an underscore
CWD = "/home/dev/my_app"
BERLIN = ZoneInfo("Europe/Berlin")


class Recorder(Collector):
    """A Collector that also keeps the order of emissions."""

    sent: list[UsageEvent] = msgspec.field(default_factory=list)

    def usage(self, event: UsageEvent) -> None:
        self.sent.append(event)
        super().usage(event)


_uuid_counter = itertools.count(1)


def assistant(
    msg_id: str | None,
    req_id: str | None = "req_011CZa1b2c3d4e5f",
    *,
    output: int | str = 187,  # a str to test bad values
    input_tokens: int = 4,
    cache_read: int = 48811,
    w5: int = 0,
    w1: int = 2210,
    creation_total: int | None = None,
    split: bool = True,
    speed: str | None = "standard",
    sidechain: bool = False,
    agent_id: str | None = None,
    session: str = SESSION,
    ts: str = "2026-09-03T14:02:11.482Z",
    model: str = "claude-sonnet-4-5-20250929",
    block: dict[str, Any] | None = None,
    stop_reason: str | None = "tool_use",
    uuid: str | None = None,
    **top: Any,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": (w5 + w1) if creation_total is None else creation_total,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        "service_tier": "standard",
        "inference_geo": "",
        "iterations": [],
    }
    if split:
        usage["cache_creation"] = {"ephemeral_1h_input_tokens": w1, "ephemeral_5m_input_tokens": w5}
    if speed is not None:
        usage["speed"] = speed
    rec: dict[str, Any] = {
        "parentUuid": "4c1e0000-0000-4000-8000-000000000000",
        "isSidechain": sidechain,
        "userType": "external",
        "cwd": CWD,
        "sessionId": session,
        "version": "2.1.140",
        "gitBranch": "feat/billing",
        "type": "assistant",
        "uuid": uuid or f"e0a1{next(_uuid_counter):08d}-0000-4000-8000-000000000000",
        "timestamp": ts,
        "message": {
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block or {"type": "text", "text": "ok"}],
            "stop_reason": stop_reason,
            "usage": usage,
        },
    }
    if msg_id is not None:
        rec["message"]["id"] = msg_id
    if req_id is not None:
        rec["requestId"] = req_id
    if agent_id is not None:
        rec["agentId"] = agent_id
    rec.update(top)
    return rec


def user_line(text: str = "hello", **top: Any) -> dict[str, Any]:
    rec = {
        "type": "user",
        "sessionId": SESSION,
        "cwd": CWD,
        "uuid": f"u{next(_uuid_counter)}",
        "timestamp": "2026-09-03T14:02:00.000Z",
        "message": {"role": "user", "content": text},
    }
    rec.update(top)
    return rec


def limit_line(text: str, *, ts: str = "2026-09-03T16:40:02.115Z", **top: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "type": "assistant",
        "uuid": f"5e2b{next(_uuid_counter)}",
        "timestamp": ts,
        "sessionId": SESSION,
        "version": "2.1.140",
        "cwd": CWD,
        "requestId": "req_011CZb0000000000",
        "message": {
            "id": "0b6f0000-1111-2222-3333-444444444444",
            "model": "<synthetic>",
            "role": "assistant",
            "type": "message",
            "stop_reason": "stop_sequence",
            "usage": {
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "service_tier": None,
                "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
                "speed": None,
            },
            "content": [{"type": "text", "text": text}],
        },
        "error": "rate_limit",
        "isApiErrorMessage": True,
        "apiErrorStatus": 429,
    }
    rec.update(top)
    return rec


def write(path: Path, records: Iterable[dict[str, Any] | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        for rec in records:
            fh.write((rec if isinstance(rec, bytes) else orjson.dumps(rec)) + b"\n")
    return path


def feed(source: ClaudeSource, files: Iterable[Path], sink: Recorder) -> Recorder:
    for path in files:
        for lineno, line in iter_plain_lines(path):
            source.feed_line(path, lineno, line, sink)
        source.flush(sink)  # as the scanner does after each file
    return sink


def scan(home: Path, source: ClaudeSource | None = None) -> Recorder:
    source = source or ClaudeSource(local_tz=BERLIN)
    return feed(source, [f.path for f in source.discover(home)], Recorder())


def main_file(home: Path, session: str = SESSION) -> Path:
    return home / "projects" / SLUG / f"{session}.jsonl"


def only(sink: Recorder) -> UsageEvent:
    counted = sink.events.counted_usage()
    assert len(counted) == 1, counted
    return counted[0]


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- streaming snapshots ---------------------------------------------------------------------


SNAPSHOTS = [
    assistant("msg_01Stream", output=10, block={"type": "thinking", "thinking": "…"}),
    assistant("msg_01Stream", output=120, block={"type": "text", "text": "Reading it."}),
    assistant(
        "msg_01Stream",
        output=187,
        block={"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {}},
        ts="2026-09-03T14:02:13.000Z",
    ),
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_streaming_snapshots_keep_the_largest(tmp_path: Path, order: tuple[int, ...]) -> None:
    path = write(main_file(tmp_path), [SNAPSHOTS[i] for i in order])
    sink = scan(tmp_path)
    event = only(sink)
    assert event.event_id == "claude:msg_01Stream:req_011CZa1b2c3d4e5f"
    assert event.tokens == Tokens(input=4, output=187, cache_read=48811, cache_write_1h=2210)
    assert event.origin == f"{path}:{order.index(2) + 1}"
    assert event.ts == utc("2026-09-03T14:02:13")
    # Consecutive snapshots of one response are held back: the event is built and sent once,
    # and the snapshots that did not supersede the one held are counted as skipped.
    assert len(sink.sent) == 1
    assert sink.skipped["snapshot"] == sum(
        1 for k, i in enumerate(order) if any(j > i for j in order[:k])
    )


def test_event_attribution(tmp_path: Path) -> None:
    rec = assistant("msg_01Attr", costUSD=0.0123, speed="fast")
    rec["message"]["usage"]["server_tool_use"]["web_search_requests"] = 2
    rec["message"]["usage"]["inference_geo"] = "us"
    path = write(main_file(tmp_path), [user_line(), rec])
    event = only(scan(tmp_path))
    assert event.agent is Agent.CLAUDE_CODE
    assert event.model == "claude-sonnet-4-5-20250929"
    assert event.session_id == SESSION
    assert event.role is Role.MAIN
    assert event.parent_session_id is None and event.subagent_id is None
    assert event.project == CWD  # from cwd, never from the lossy dir name
    assert event.git_branch == "feat/billing"
    assert event.agent_version == "2.1.140"
    assert event.service_tier == "standard"
    assert event.speed == "fast"
    assert event.inference_geo == "us"
    assert event.tokens.web_search_requests == 2
    assert event.tokens.reasoning == 0
    assert event.reported_cost_usd == "0.0123"
    assert event.cache_write_unsplit is False
    assert event.origin == f"{path}:2"
    assert event.ts == utc("2026-09-03T14:02:11.482")


def test_empty_git_branch_is_none(tmp_path: Path) -> None:
    write(main_file(tmp_path), [assistant("msg_01NoGit", gitBranch="")])
    assert only(scan(tmp_path)).git_branch is None


def test_tie_goes_to_the_line_with_speed(tmp_path: Path) -> None:
    write(
        main_file(tmp_path),
        [assistant("msg_01Tie", speed=None), assistant("msg_01Tie", speed="fast")],
    )
    sink = scan(tmp_path)
    assert only(sink).speed == "fast"
    assert len(sink.sent) == 1  # the speed line superseded the equal-sized one before sending


# -- cross-file copies -----------------------------------------------------------------------


def test_resumed_session_copy_is_counted_once(tmp_path: Path) -> None:
    original = [
        assistant("msg_01A", "req_A", output=50),
        assistant("msg_01B", "req_B", output=70),
    ]
    write(main_file(tmp_path), original)
    # The resumed session file repeats the history (same ids, new session and uuids), then goes on.
    copies = [
        assistant("msg_01A", "req_A", output=50, session=OTHER_SESSION),
        assistant("msg_01B", "req_B", output=70, session=OTHER_SESSION),
        assistant("msg_01C", "req_C", output=90, session=OTHER_SESSION),
    ]
    write(main_file(tmp_path, OTHER_SESSION), copies)
    sink = scan(tmp_path)
    counted = {e.event_id: e for e in sink.events.counted_usage()}
    assert sorted(counted) == [
        "claude:msg_01A:req_A",
        "claude:msg_01B:req_B",
        "claude:msg_01C:req_C",
    ]
    assert sum(e.tokens.output for e in counted.values()) == 50 + 70 + 90
    assert len(sink.sent) == 3
    assert sink.skipped["snapshot"] == 2


def test_forked_copy_is_attributed_to_the_session_it_came_from(tmp_path: Path) -> None:
    """Copied lines carry `forkedFrom`; the call belongs to the original session even when the
    fork's file is read first (its name sorts first here)."""
    fork_session = "00000000-fork-4000-8000-000000000000"
    write(
        main_file(tmp_path, fork_session),
        [
            assistant(
                "msg_01A",
                "req_A",
                output=50,
                session=fork_session,
                forkedFrom={"sessionId": SESSION, "messageUuid": "m-1"},
            ),
            assistant("msg_01C", "req_C", output=90, session=fork_session),
        ],
    )
    write(main_file(tmp_path), [assistant("msg_01A", "req_A", output=50)])
    sink = scan(tmp_path)
    sessions = {e.event_id: e.session_id for e in sink.events.counted_usage()}
    assert sessions == {"claude:msg_01A:req_A": SESSION, "claude:msg_01C:req_C": fork_session}


def test_any_file_order_converges(tmp_path: Path) -> None:
    """Re-reading in another order (another node restart) yields the same counted set."""
    sub = tmp_path / "projects" / SLUG / SESSION / "subagents" / "agent-a3f9c21.jsonl"
    write(
        main_file(tmp_path),
        [*SNAPSHOTS, assistant("msg_01Main", "req_M1", output=30)],
    )
    write(
        main_file(tmp_path, OTHER_SESSION),
        [SNAPSHOTS[0], SNAPSHOTS[2], assistant("msg_01Other", "req_O", session=OTHER_SESSION)],
    )
    write(
        sub,
        [
            assistant("msg_01Main", "req_S1", output=30, sidechain=True, agent_id="a3f9c21"),
            assistant("msg_01Sub", "req_S2", output=64, sidechain=True, agent_id="a3f9c21"),
        ],
    )
    files = [f.path for f in ClaudeSource().discover(tmp_path)]
    results = []
    for perm in itertools.permutations(files):
        sink = feed(ClaudeSource(local_tz=BERLIN), perm, Recorder())
        results.append(sorted((e.event_id, e.tokens) for e in sink.events.counted_usage()))
    assert all(r == results[0] for r in results)
    assert [eid for eid, _ in results[0]] == [
        "claude:msg_01Main:req_M1",
        "claude:msg_01Other:req_O",
        "claude:msg_01Stream:req_011CZa1b2c3d4e5f",
        "claude:msg_01Sub:req_S2",
    ]


# -- sidechain replays (ccusage #913) -------------------------------------------------------


def _replay_tree(home: Path) -> tuple[Path, Path]:
    main = write(main_file(home), [assistant("msg_01Parent", "req_parent", output=300)])
    side = write(
        home / "projects" / SLUG / SESSION / "subagents" / "agent-btw01.jsonl",
        [
            assistant(
                "msg_01Parent", "req_sidechain_replay", output=300, sidechain=True, agent_id="btw01"
            ),
            assistant(
                "msg_01Parent", "req_sidechain_replay", output=310, sidechain=True, agent_id="btw01"
            ),
        ],
    )
    return main, side


def test_sidechain_replay_after_main_is_skipped(tmp_path: Path) -> None:
    main, side = _replay_tree(tmp_path)
    sink = feed(ClaudeSource(), [main, side], Recorder())
    event = only(sink)
    assert event.event_id == "claude:msg_01Parent:req_parent"
    assert event.role is Role.MAIN
    assert [e.event_id for e in sink.sent] == ["claude:msg_01Parent:req_parent"]
    assert sink.skipped["replayed"] == 2


def test_sidechain_replay_before_main_is_retracted(tmp_path: Path) -> None:
    main, side = _replay_tree(tmp_path)
    sink = feed(ClaudeSource(), [side, main], Recorder())
    event = only(sink)
    assert event.event_id == "claude:msg_01Parent:req_parent"
    side_id = "claude:msg_01Parent:req_sidechain_replay"
    sent = [(e.event_id, e.revision, e.duplicate_of) for e in sink.sent]
    # side emitted (its largest snapshot), then main, then the retraction of side.
    assert [s[0] for s in sent] == [side_id, event.event_id, side_id]
    retraction = sink.sent[-1]
    assert isinstance(retraction, UsageEvent)
    assert retraction.duplicate_of == event.event_id
    assert retraction.revision > sink.sent[0].revision
    assert retraction.revision >= RETRACTED
    assert not retraction.counts
    assert sink.events.usage[side_id] is retraction  # the consumer keeps the retraction
    # A later snapshot of the retracted copy stays out.
    later = assistant("msg_01Parent", "req_sidechain_replay", output=999, sidechain=True)
    write(side, [later])
    source = ClaudeSource()
    sink2 = feed(source, [side, main, side], Recorder())
    assert [e.event_id for e in sink2.events.counted_usage()] == [event.event_id]
    assert sink2.skipped["replayed"] == 3


def test_two_sidechain_copies_without_main_count_once(tmp_path: Path) -> None:
    side = write(
        tmp_path / "projects" / SLUG / SESSION / "subagents" / "agent-x.jsonl",
        [
            assistant("msg_01Only", "req_1", sidechain=True, agent_id="x"),
            assistant("msg_01Only", "req_2", sidechain=True, agent_id="x"),
        ],
    )
    sink = feed(ClaudeSource(), [side], Recorder())
    assert only(sink).event_id == "claude:msg_01Only:req_1"
    assert sink.skipped["replayed"] == 1


def test_main_copies_under_two_request_ids_are_two_calls(tmp_path: Path) -> None:
    write(
        main_file(tmp_path),
        [assistant("msg_01Same", "req_1"), assistant("msg_01Same", "req_2")],
    )
    assert len(scan(tmp_path).events.counted_usage()) == 2


# -- subagent layouts of all eras ------------------------------------------------------------


def test_subagent_layouts_and_discovery_order(tmp_path: Path) -> None:
    projects = tmp_path / "projects" / SLUG
    # v1.x: sidechain lines inline in the parent file.
    main = write(
        main_file(tmp_path),
        [
            assistant("msg_01MainLine", "req_m"),
            assistant("msg_01Inline", "req_i", sidechain=True),
        ],
    )
    # v2.0.x: sibling file agent-<id>.jsonl (no agentId on the line here: taken from the name).
    sibling = write(
        projects / "agent-5d1e.jsonl", [assistant("msg_01Sib", "req_s", sidechain=True)]
    )
    # v2.1.2+: <session>/subagents/agent-<id>.jsonl with a meta file beside it.
    sub_dir = projects / SESSION / "subagents"
    nested = write(
        sub_dir / "agent-a3f9c21.jsonl",
        [assistant("msg_01Nested", "req_n", sidechain=True, agent_id="a3f9c21")],
    )
    (sub_dir / "agent-a3f9c21.meta.json").write_text('{"agentType":"general-purpose"}')
    # Workflow agents one level deeper, next to a journal that is not read.
    wf = write(
        sub_dir / "workflows" / "wf_sp01" / "agent-agsp0001.jsonl",
        [assistant("msg_01Wf", "req_w", sidechain=True, agent_id="agsp0001")],
    )
    write(sub_dir / "workflows" / "wf_sp01" / "journal.jsonl", [{"type": "journal"}])
    (projects / "sessions-index.json").write_text("{}")

    source = ClaudeSource()
    found = source.discover(tmp_path)
    assert [(f.path, f.order) for f in found] == [(main, 0), (nested, 1), (sibling, 1), (wf, 2)]
    assert all(f.kind is FileKind.JSONL for f in found)
    # The projects dir itself is a home too.
    assert source.discover(tmp_path / "projects") == found

    sink = scan(tmp_path)
    by_id = {e.event_id.split(":")[1]: e for e in sink.events.counted_usage()}
    assert by_id["msg_01MainLine"].role is Role.MAIN
    for msg, agent in [
        ("msg_01Inline", None),
        ("msg_01Sib", "5d1e"),
        ("msg_01Nested", "a3f9c21"),
        ("msg_01Wf", "agsp0001"),
    ]:
        event = by_id[msg]
        assert event.role is Role.SUBAGENT, msg
        assert event.subagent_id == agent, msg
        assert event.session_id == SESSION
        assert event.parent_session_id == SESSION


def test_subagent_file_line_without_sidechain_flag_is_subagent(tmp_path: Path) -> None:
    path = write(
        tmp_path / "projects" / SLUG / SESSION / "subagents" / "agent-b2.jsonl",
        [assistant("msg_01Flagless", "req_f")],
    )
    event = only(feed(ClaudeSource(), [path], Recorder()))
    assert event.role is Role.SUBAGENT and event.subagent_id == "b2"


# -- missing requestId -----------------------------------------------------------------------


def test_missing_request_id_dedupes_within_a_session_only(tmp_path: Path) -> None:
    write(
        main_file(tmp_path),
        [assistant("msg_gw1", None, output=5), assistant("msg_gw1", None, output=40)],
    )
    # A gateway reusing the same message id in another session: a different call.
    write(main_file(tmp_path, OTHER_SESSION), [assistant("msg_gw1", None, session=OTHER_SESSION)])
    sink = scan(tmp_path)
    counted = sorted(sink.events.counted_usage(), key=lambda e: e.event_id)
    assert [e.event_id for e in counted] == [
        f"claude:msg_gw1:session={OTHER_SESSION}",
        f"claude:msg_gw1:session={SESSION}",
    ]
    assert counted[1].tokens.output == 40


def test_replay_rule_without_request_id_stays_in_its_session(tmp_path: Path) -> None:
    write(main_file(tmp_path), [assistant("msg_gw2", None)])
    side = tmp_path / "projects" / SLUG / OTHER_SESSION / "subagents" / "agent-q.jsonl"
    write(side, [assistant("msg_gw2", None, sidechain=True, session=OTHER_SESSION)])
    # Same gateway message id, another session: not a replay of the first.
    assert len(scan(tmp_path).events.counted_usage()) == 2
    # In the same session it is the same (session-scoped) key: one call.
    write(side, [assistant("msg_gw2", None, sidechain=True)])
    sink = scan(tmp_path)
    assert len(sink.events.counted_usage()) == 2 and sink.skipped["snapshot"] == 1


def test_line_without_message_id_is_never_deduped(tmp_path: Path) -> None:
    a = assistant(None, None, uuid="aaaa-1")
    b = assistant(None, None, uuid="aaaa-2")
    path = write(main_file(tmp_path), [a, b])
    sink = scan(tmp_path)
    ids = sorted(e.event_id for e in sink.events.counted_usage())
    assert ids == [
        f"claude:line:{SLUG}/{SESSION}.jsonl:aaaa-1",
        f"claude:line:{SLUG}/{SESSION}.jsonl:aaaa-2",
    ]
    # Reading the file again gives the same ids: nothing new in the set.
    source = ClaudeSource()
    again = feed(source, [path, path], Recorder())
    assert len(again.events.counted_usage()) == 2


# -- cache writes ----------------------------------------------------------------------------


def test_unsplit_cache_write_goes_to_5m_and_is_flagged(tmp_path: Path) -> None:
    write(main_file(tmp_path), [assistant("msg_01Old", creation_total=5000, split=False)])
    event = only(scan(tmp_path))
    assert event.tokens.cache_write_5m == 5000 and event.tokens.cache_write_1h == 0
    assert event.cache_write_unsplit is True


def test_no_cache_write_is_not_flagged_unsplit(tmp_path: Path) -> None:
    write(main_file(tmp_path), [assistant("msg_01None", w1=0, split=False)])
    assert only(scan(tmp_path)).cache_write_unsplit is False


def test_split_disagreeing_with_total_trusts_the_split_and_reports(tmp_path: Path) -> None:
    path = write(
        main_file(tmp_path),
        [
            assistant("msg_01Mis", "r1", w5=100, w1=900, creation_total=1200),
            assistant("msg_01Mis2", "r2", w5=1, w1=1, creation_total=3),
        ],
    )
    sink = scan(tmp_path)
    event = sink.events.usage["claude:msg_01Mis:r1"]
    assert (event.tokens.cache_write_5m, event.tokens.cache_write_1h) == (100, 900)
    assert event.cache_write_unsplit is False
    assert len(sink.problems) == 1  # once per file
    assert str(sink.problems[0]).startswith(f"{path}:1: cache_creation split")


# -- skipped and broken lines ----------------------------------------------------------------


def test_synthetic_lines_are_skipped(tmp_path: Path) -> None:
    canned = assistant("msg_syn", model="<synthetic>", output=0, cache_read=0, w1=0)
    canned["message"]["content"] = [{"type": "text", "text": "No response requested."}]
    write(main_file(tmp_path), [canned])
    sink = scan(tmp_path)
    assert not sink.events.usage and not sink.events.limits
    assert sink.skipped["synthetic"] == 1


def test_tool_result_usage_on_user_lines_is_not_billed(tmp_path: Path) -> None:
    tool_result = user_line(
        toolUseResult={
            "status": "completed",
            "agentId": "a1",
            "totalTokens": 51000,
            "usage": {"input_tokens": 10, "output_tokens": 500},
        },
    )
    tool_result["message"]["usage"] = {"input_tokens": 10, "output_tokens": 500}
    write(main_file(tmp_path), [tool_result, {"type": "summary", "summary": "x"}])
    sink = scan(tmp_path)
    assert not sink.events.usage and not sink.problems


def test_garbage_and_torn_lines_are_reported_and_reading_goes_on(tmp_path: Path) -> None:
    good1 = orjson.dumps(assistant("msg_01G1", "r1"))
    good2 = orjson.dumps(assistant("msg_01G2", "r2"))
    whole = orjson.dumps(assistant("msg_01Torn", "r3"))
    torn_early = whole[:150]  # cut before the usage object
    torn_late = whole[:-40]  # cut inside it
    path = main_file(tmp_path)
    path.parent.mkdir(parents=True)
    lines = [
        good1,
        torn_early,  # 2
        b'{"type":"assistant","message":{"usage":{"input_tokens":1,}}}',  # 3: invalid JSON
        b'["usage", 1]',  # 4: JSON, not an object
        b"not json at all",  # 5
        b"",  # blank lines are not problems
        good2,
        torn_late,  # 8: unterminated last line of a file at rest
    ]
    path.write_bytes(b"\n".join(lines))
    sink = scan(tmp_path)
    assert sorted(e.event_id for e in sink.events.counted_usage()) == [
        "claude:msg_01G1:r1",
        "claude:msg_01G2:r2",
    ]
    assert all(isinstance(p, ParseProblem) and p.path == str(path) for p in sink.problems)
    assert [p.line for p in sink.problems] == [2, 3, 4, 5, 8]
    assert "invalid JSON" in sink.problems[1].reason
    assert str(sink.problems[0]).startswith(f"{path}:2: not a complete JSON object")


def test_bad_numbers_and_timestamps_are_reported(tmp_path: Path) -> None:
    bad_num = assistant("msg_01Num", "r1", output="many")
    bad_ts = assistant("msg_01Ts", "r2", ts="yesterday")
    path = write(main_file(tmp_path), [bad_num, bad_ts])
    sink = scan(tmp_path)
    assert only(sink).tokens.output == 0  # the rest of that call still counts
    assert [(p.line, p.reason.split(":")[0]) for p in sink.problems] == [
        (1, "non-numeric or out-of-range usage field(s)"),
        (2, "usage line without a valid timestamp"),
    ]
    assert all(p.path == str(path) for p in sink.problems)


# -- rate-limit hits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "extra", "window", "reset"),
    [
        (
            "You've hit your session limit · resets 9pm (Europe/Berlin)",
            {},
            LimitWindow.FIVE_HOUR,
            "2026-09-03T19:00:00",
        ),
        ("You've hit your limit · resets 6pm", {}, LimitWindow.UNKNOWN, "2026-09-04T16:00:00"),
        (
            "You've hit your weekly limit · resets Sep 17 at 10pm (Europe/Lisbon)",
            {},
            LimitWindow.WEEKLY,
            "2026-09-17T21:00:00",
        ),
        (
            "You're out of extra usage · resets 11:59pm (UTC)",
            {},
            LimitWindow.OTHER,
            "2026-09-03T23:59:00",
        ),
        ("5-hour limit reached ∙ resets 3pm", {}, LimitWindow.FIVE_HOUR, "2026-09-04T13:00:00"),
        (
            "Weekly limit reached · resets 10am (Asia/Seoul) · /upgrade for more",
            {},
            LimitWindow.WEEKLY,
            "2026-09-04T01:00:00",
        ),
        ("API Error: Rate limit reached", {}, LimitWindow.UNKNOWN, None),
        # Legacy lines: no error/apiErrorStatus fields, the epoch after the bar.
        (
            "Claude AI usage limit reached|1757012400",
            {"error": None, "apiErrorStatus": None},
            LimitWindow.UNKNOWN,
            "2025-09-04T19:00:00",
        ),
    ],
)
def test_rate_limit_lines(
    tmp_path: Path, text: str, extra: dict[str, Any], window: LimitWindow, reset: str | None
) -> None:
    rec = limit_line(text, uuid="5e2b-limit-1", **extra)
    path = write(main_file(tmp_path), [rec])
    sink = scan(tmp_path)  # machine zone: Berlin; the line is at 18:40 Berlin time
    assert not sink.events.usage
    assert sink.skipped["synthetic"] == 0
    assert list(sink.events.limits) == ["claude:limit:5e2b-limit-1"]
    event = sink.events.limits["claude:limit:5e2b-limit-1"]
    assert event.kind is LimitKind.RATE_LIMIT_HIT
    assert event.agent is Agent.CLAUDE_CODE
    assert event.window is window
    assert event.resets_at == (utc(reset) if reset else None)
    assert event.message == text
    assert event.session_id == SESSION
    assert event.ts == utc("2026-09-03T16:40:02.115")
    assert event.origin == f"{path}:1"
    assert not sink.problems


def test_other_api_errors_are_not_limits(tmp_path: Path) -> None:
    rec = limit_line("Not logged in · Please run /login", error="authentication_failed")
    del rec["apiErrorStatus"]
    write(main_file(tmp_path), [rec])
    sink = scan(tmp_path)
    assert not sink.events.limits and not sink.events.usage
    assert sink.skipped["synthetic"] == 1


def test_limit_zone_is_a_parameter(tmp_path: Path) -> None:
    write(main_file(tmp_path), [limit_line("You've hit your limit · resets 6pm", uuid="z1")])
    sink = scan(tmp_path, ClaudeSource(local_tz=ZoneInfo("America/New_York")))
    # 12:40 in New York: 6pm the same day, 22:00Z.
    assert sink.events.limits["claude:limit:z1"].resets_at == utc("2026-09-03T22:00:00")


def test_unknown_reset_zone_is_reported_with_its_place(tmp_path: Path) -> None:
    path = write(
        main_file(tmp_path), [limit_line("You've hit your limit · resets 6pm (Nowhere/X)")]
    )
    sink = scan(tmp_path)
    (event,) = sink.events.limits.values()
    assert event.resets_at is None
    assert [(p.path, p.line) for p in sink.problems] == [(str(path), 1)]


# -- homes -----------------------------------------------------------------------------------


def test_default_homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    assert ClaudeSource().default_homes() == [tmp_path / ".claude", tmp_path / ".config" / "claude"]
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", f"{tmp_path}/work, ~/personal ,")
    assert ClaudeSource().default_homes() == [tmp_path / "work", tmp_path / "personal"]


def test_is_home(tmp_path: Path) -> None:
    source = ClaudeSource()
    assert not source.is_home(tmp_path)
    (tmp_path / "projects").mkdir()
    assert source.is_home(tmp_path)
    assert source.is_home(tmp_path / "projects")
    assert not source.is_home(tmp_path / "nothing")


def test_missing_projects_dir_discovers_nothing(tmp_path: Path) -> None:
    assert ClaudeSource().discover(tmp_path / "absent") == []


def test_reset_file_keeps_dedupe_keys(tmp_path: Path) -> None:
    path = write(main_file(tmp_path), [assistant("msg_01Keep", "r")])
    source = ClaudeSource()
    sink = feed(source, [path], Recorder())
    source.reset_file(path)  # truncated and rewritten with the same history
    feed(source, [path], sink)
    assert len(sink.sent) == 1


def test_source_file_order_puts_mains_first(tmp_path: Path) -> None:
    write(tmp_path / "projects" / "-a" / "agent-1.jsonl", [assistant("m1", "r")])
    write(tmp_path / "projects" / "-z" / "s.jsonl", [assistant("m2", "r")])
    found = ClaudeSource().discover(tmp_path)
    assert [f.path.parent.name for f in found] == ["-z", "-a"]
    assert found == sorted(found, key=lambda f: (f.order, str(f.path)))
    assert isinstance(found[0], SourceFile)


def test_tool_uses_are_sent_as_name_and_input_hash_never_the_input(tmp_path: Path) -> None:
    bash = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "make"}}
    same = {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {"command": "make"}}
    other = {"type": "tool_use", "id": "toolu_3", "name": "Bash", "input": {"command": "ls"}}
    write(
        main_file(tmp_path),
        [
            assistant("msg_a", "req_a", block=bash),
            assistant("msg_b", "req_b", block=same),
            assistant("msg_c", "req_c", block=other),
            assistant("msg_d", "req_d"),  # text only
        ],
    )
    signatures = [e.tool_calls for e in sorted(scan(tmp_path).sent, key=lambda e: e.event_id)]
    assert signatures[0] == signatures[1] != signatures[2]  # same input, same signature
    assert signatures[3] is None
    assert signatures[0] is not None and signatures[0].startswith("Bash:")
    assert "make" not in signatures[0] and len(signatures[0]) == len("Bash:") + 12

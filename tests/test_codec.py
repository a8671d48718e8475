"""msgpack round trip of every event type, and clear errors for bad frames."""

from __future__ import annotations

import msgpack
import msgspec
import pytest

from shared.codec import DecodeError, pack, pack_batch, unpack, unpack_batch
from shared.events import (
    Agent,
    EventSet,
    LimitEvent,
    LimitKind,
    LimitWindow,
    ProfileEvent,
    ProfileState,
    Role,
    Tokens,
    UsageEvent,
)

USAGE = UsageEvent(
    event_id="claude:msg_01:req_01",
    ts=1789113600.482,
    agent=Agent.CLAUDE_CODE,
    model="claude-sonnet-4-5-20250929",
    tokens=Tokens(4, 187, 48811, 0, 2210, 0, 1),
    session_id="7b1d2c9e",
    revision=7,
    role=Role.SUBAGENT,
    parent_session_id="7b1d2c9e",
    subagent_id="a3f9c21",
    project="/home/dev/acme-api",
    git_branch="feat/billing",
    service_tier="standard",
    cache_write_unsplit=True,
    reported_cost_usd="0.0842",
    machine="spark01",
    profile="claude-max-a",
    origin="/x.jsonl:12",
)
LIMIT = LimitEvent(
    event_id="codex:t1:rl:1",
    ts=1789027929.73,
    agent=Agent.CODEX,
    kind=LimitKind.QUOTA_SNAPSHOT,
    window=LimitWindow.WEEKLY,
    window_minutes=10080,
    used_percent=41.0,
    resets_at=1789400000.0,
    plan_type="plus",
)
PROFILE = ProfileEvent(
    event_id="p1",
    ts=1789027929.0,
    machine="spark01",
    profile="codex-plus-b",
    agent=Agent.CODEX,
    state=ProfileState.RATE_LIMITED,
    until=1789400000.0,
    reason="weekly limit",
)


@pytest.mark.parametrize("event", [USAGE, LIMIT, PROFILE])
def test_round_trip(event: object) -> None:
    assert unpack(pack(event)) == event  # type: ignore[arg-type]


def test_batch_round_trip() -> None:
    assert unpack_batch(pack_batch([USAGE, LIMIT, PROFILE])) == [USAGE, LIMIT, PROFILE]


def test_defaults_are_not_sent() -> None:
    minimal = UsageEvent("e", 1.0, Agent.CODEX, "gpt-5", Tokens(1), "s")
    data = msgpack.unpackb(pack(minimal))
    assert set(data) == {
        "v",
        "t",
        "event_id",
        "ts",
        "agent",
        "model",
        "tokens",
        "session_id",
        "revision",
        "role",
        "machine",
        "origin",
    }
    assert unpack(pack(minimal)) == minimal


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\xc1", "not a msgpack event"),
        (msgpack.packb([1, 2]), "must be a map"),
        (msgpack.packb({"v": 99, "t": "u"}), "schema version 99"),
        (msgpack.packb({"v": 1, "t": "z"}), "unknown event type"),
        (
            msgpack.packb({"v": 1, "t": "u", "event_id": "e", "ts": 1.0}),
            "missing required field 'agent'",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "t": "u",
                    "event_id": "e",
                    "ts": 1.0,
                    "agent": "codex",
                    "model": "m",
                    "tokens": [1, 2],
                    "session_id": "s",
                }
            ),
            "tokens must be a list of 7",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "t": "u",
                    "event_id": "e",
                    "ts": "x",
                    "agent": "codex",
                    "model": "m",
                    "tokens": [0] * 7,
                    "session_id": "s",
                }
            ),
            "ts must be a number",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "t": "u",
                    "event_id": "e",
                    "ts": 1,
                    "agent": "vim",
                    "model": "m",
                    "tokens": [0] * 7,
                    "session_id": "s",
                }
            ),
            "bad value for 'agent'",
        ),
    ],
)
def test_bad_frames_name_the_problem(blob: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        unpack(blob)


def _usage_map(**changes: object) -> dict[str, object]:
    data = msgpack.unpackb(pack(USAGE))
    data.update(changes)
    return {k: v for k, v in data.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"event_id": 7}, "event_id must be a string"),
        ({"event_id": None}, "event_id must be a string"),  # required: never None
        ({"project": ["/a"]}, "project must be a string"),
        ({"revision": "7"}, "revision must be an integer"),
        ({"revision": True}, "revision must be an integer"),
        ({"cache_write_unsplit": 1}, "cache_write_unsplit must be true or false"),
        ({"ts": None}, "ts must be a number"),
        ({"role": ["main"]}, "bad value for 'role'"),
        ({"tokens": [1, 2, 3, 4, 5, 6, -1]}, "non-negative integers"),
        ({"tokens": [1, 2, 3, 4, 5, 6, 1.5]}, "non-negative integers"),
        ({"model": _DROP}, "missing required field 'model'"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        unpack(msgpack.packb(_usage_map(**changes)))


def test_decoding_takes_nil_for_optional_fields_and_skips_unknown_ones() -> None:
    data = _usage_map(project=None, resets_at=1.0, someday="a field of a newer node", ts=17)
    event = unpack(msgpack.packb(data))
    assert event == msgspec.structs.replace(USAGE, project=None, ts=17.0)
    assert type(event.ts) is float


def test_truncated_batch_is_rejected() -> None:
    blob = pack_batch([USAGE, LIMIT])
    with pytest.raises(DecodeError):
        unpack_batch(blob[:-5])


def test_event_set_keeps_highest_revision() -> None:
    events = EventSet()
    low = UsageEvent("e", 1.0, Agent.CLAUDE_CODE, "m", Tokens(output=10), "s", revision=10)
    high = UsageEvent("e", 1.0, Agent.CLAUDE_CODE, "m", Tokens(output=50), "s", revision=50)
    assert events.add(high)
    assert not events.add(low)
    assert not events.add(high)
    assert events.usage["e"].tokens.output == 50
    retract = UsageEvent(
        "e", 1.0, Agent.CLAUDE_CODE, "m", Tokens(), "s", revision=99, duplicate_of="other"
    )
    assert events.add(retract)
    assert events.counted_usage() == []


def test_tool_calls_travel_and_a_frame_without_them_decodes_as_none() -> None:
    signed = msgspec.structs.replace(USAGE, tool_calls="Bash:0123456789ab,Read:ba9876543210")
    assert unpack(pack(signed)) == signed
    older = msgpack.packb(_usage_map(tool_calls=_DROP))  # what a node before the field sends
    assert unpack(older).tool_calls is None
    with pytest.raises(DecodeError, match="tool_calls must be a string"):
        unpack(msgpack.packb(_usage_map(tool_calls=7)))

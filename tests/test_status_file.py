"""The profile heartbeat file: parsing, change detection, stable ids, and bad input."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from node_agent.status_file import StatusFileWatcher
from shared.config import Billing, Profile
from shared.events import Agent, ProfileEvent, ProfileState

PROFILES = (
    Profile("max-a", Agent.CLAUDE_CODE, Path("/h/a"), Billing.SUBSCRIPTION, "a@example.com"),
    Profile("max-b", Agent.CLAUDE_CODE, Path("/h/b"), Billing.SUBSCRIPTION, "b@example.com"),
)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def heartbeat(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 1,
        "updated_at": "2026-10-12T09:15:00+02:00",
        "active": {"claude-code": "max-b"},
        "switches": [
            {
                "at": "2026-10-12T09:14:58+02:00",
                "agent": "claude-code",
                "from": "max-a",
                "to": "max-b",
                "reason": "rate_limited",
            }
        ],
        "limited": {"max-a": {"until": "2026-10-12T14:00:00+02:00", "reason": "5h window"}},
    }
    doc.update(overrides)
    return doc


def publish(path: Path, doc: dict[str, Any] | str) -> None:
    """As a scheduler does it: write a temporary file, then rename it over the real one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.replace(tmp, path)


def watcher(path: Path) -> StatusFileWatcher:
    return StatusFileWatcher(path, "spark01", PROFILES)


def by_state(events: list[ProfileEvent]) -> dict[tuple[str, ProfileState], ProfileEvent]:
    return {(e.profile, e.state): e for e in events}


def test_switch_and_limit_become_profile_events(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    publish(path, heartbeat())
    events = watcher(path).poll()
    assert events is not None and len(events) == 3
    got = by_state(events)
    away = got[("max-a", ProfileState.SWITCHED_AWAY)]
    assert away.switched_to == "max-b" and away.reason == "rate_limited"
    assert away.ts == ts("2026-10-12T09:14:58+02:00") and away.account == "a@example.com"
    active = got[("max-b", ProfileState.ACTIVE)]
    assert active.ts == away.ts and active.agent is Agent.CLAUDE_CODE
    limited = got[("max-a", ProfileState.RATE_LIMITED)]
    assert limited.until == ts("2026-10-12T14:00:00+02:00") and limited.reason == "5h window"
    assert {e.machine for e in events} == {"spark01"}
    assert {e.origin for e in events} == {str(path)}


def test_ids_are_stable_across_reads_and_restarts(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    publish(path, heartbeat())
    first = watcher(path)
    ids = {e.event_id for e in first.poll() or []}
    assert first.poll() is None  # unchanged file: not even re-read
    # A heartbeat rewrite (new inode, new updated_at) with the same facts: nothing new.
    publish(path, heartbeat(updated_at="2026-10-12T09:16:00+02:00"))
    assert first.poll() == []
    # A daemon restart reads the same file: the same ids, whatever the spelling of the zone.
    doc = heartbeat()
    doc["switches"][0]["at"] = "2026-10-12T07:14:58Z"
    publish(path, doc)
    assert {e.event_id for e in watcher(path).poll() or []} == ids


def test_a_broken_file_keeps_the_last_good_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "profiles.json"
    publish(path, heartbeat())
    w = watcher(path)
    assert w.poll()
    good = w.state
    publish(path, '{"version": 1, "updated_at": ')
    with caplog.at_level(logging.WARNING):
        assert w.poll() is None
    assert str(w.error) == f"{path}: not valid JSON (line 1 column 30)"
    assert w.state is good and "keeping the last good state" in caplog.text
    # Fixed by the next write: reading goes on, and only the new switch is reported.
    doc = heartbeat(active={"claude-code": "max-a"})
    doc["switches"].append(
        {"at": "2026-10-12T15:00:00+02:00", "agent": "claude-code", "from": "max-b", "to": "max-a"}
    )
    publish(path, doc)
    events = w.poll()
    assert w.error is None and events is not None
    assert {(e.profile, e.state) for e in events} == {
        ("max-b", ProfileState.SWITCHED_AWAY),
        ("max-a", ProfileState.ACTIVE),
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1, 2], "must hold a JSON object"),
        ({"version": 2, "updated_at": "2026-10-12T09:15:00Z"}, "version: 2 is not supported"),
        ({"version": 1}, "updated_at: must be an ISO 8601 time with a zone"),
        ({"version": 1, "updated_at": "2026-10-12T09:15:00"}, "has no time zone"),
    ],
)
def test_unusable_files_are_named(tmp_path: Path, doc: Any, message: str) -> None:
    path = tmp_path / "profiles.json"
    publish(path, json.dumps(doc))
    w = watcher(path)
    assert w.poll() is None and w.state is None
    assert w.error is not None and w.error.startswith(f"{path}: ") and message in w.error


def test_a_bad_entry_is_skipped_and_the_rest_used(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    doc = heartbeat()
    doc["switches"].insert(0, {"at": "yesterday", "agent": "claude-code", "to": "max-a"})
    doc["switches"].append({"at": "2026-10-12T09:00:00Z", "agent": "vim", "to": "x"})
    doc["limited"]["max-b"] = {"reason": "no until"}
    publish(path, doc)
    w = watcher(path)
    events = w.poll() or []
    assert len(events) == 3  # the good switch and the good limit
    assert w.problems == (
        f"{path}: switches[0].at: 'yesterday' is not an ISO 8601 time",
        f"{path}: switches[2].agent: unknown agent 'vim' (one of claude-code, codex, gemini, "
        "opencode, cursor)",
        f"{path}: limited.max-b.until: must be an ISO 8601 time with a zone, not None",
    )


def test_active_only_scheduler_still_gives_a_timeline(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    publish(path, heartbeat(switches=[], limited={}, active={"claude-code": "max-a"}))
    w = watcher(path)
    (baseline,) = w.poll() or []
    assert (baseline.profile, baseline.state) == ("max-a", ProfileState.ACTIVE)
    assert baseline.ts == ts("2026-10-12T09:15:00+02:00")
    later = "2026-10-12T10:00:00+02:00"
    publish(
        path, heartbeat(switches=[], limited={}, active={"claude-code": "max-b"}, updated_at=later)
    )
    got = by_state(w.poll() or [])
    assert got[("max-a", ProfileState.SWITCHED_AWAY)].switched_to == "max-b"
    assert got[("max-b", ProfileState.ACTIVE)].ts == ts(later)
    # After a restart the current state is the baseline again, with the same id as before.
    assert [e.event_id for e in watcher(path).poll() or []] != [baseline.event_id]
    publish(path, heartbeat(switches=[], limited={}, active={"claude-code": "max-a"}))
    assert [e.event_id for e in watcher(path).poll() or []] == [baseline.event_id]


def test_limited_profile_needs_an_agent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "profiles.json"
    limited = {
        "ghost": {"until": "2026-10-12T14:00:00Z"},
        "pro-x": {"until": "2026-10-12T14:00:00Z", "agent": "codex", "since": "2026-10-12T09:00Z"},
    }
    publish(path, heartbeat(switches=[], active={}, limited=limited))
    with caplog.at_level(logging.WARNING):
        events = watcher(path).poll() or []
    assert [(e.profile, e.agent, e.ts) for e in events] == [
        ("pro-x", Agent.CODEX, ts("2026-10-12T09:00:00+00:00"))
    ]
    assert "limited.ghost: unknown profile; add 'agent'" in caplog.text


def test_missing_file_is_not_an_error(tmp_path: Path) -> None:
    w = watcher(tmp_path / "profiles.json")
    assert w.poll() is None and w.error is None and w.state is None
    publish(tmp_path / "profiles.json", heartbeat())
    assert w.poll()


def test_a_pipe_in_place_of_the_file_is_named_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO blocks until someone writes: the node's reader stopped for good."""
    path = tmp_path / "profiles.json"
    os.mkfifo(path)
    w = watcher(path)
    assert w.poll() is None and w.error == f"{path}: not a regular file" + (
        " (a scheduler writes a file, then renames)"
    )

"""Log lines no agent writes but a damaged disk or a hostile user can: a token count beyond 64
bits stopped `node-agent run` at every restart (msgpack cannot pack it) and broke `scan --json`.
Real processes: the installed scan, a real node against a real hub on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.ledger import Period
from hub.serve import Hub
from shared.events import MAX_TOKENS, Agent
from tests.fleet_harness import (
    HubSetup,
    ProfileSpec,
    processes,
    running_hub,
    start_node,
    wait_for,
    write_node,
)

BIN = Path(sys.executable).parent


def claude_line(n: int, input_tokens: object) -> str:
    return json.dumps(
        {
            "type": "assistant",
            "sessionId": "s-hostile",
            "cwd": "/work",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "requestId": f"req_{n}",
            "uuid": f"u{n}",
            "message": {
                "id": f"msg_{n}",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "usage": {"input_tokens": input_tokens, "output_tokens": 5},
            },
        }
    )


def hostile_home(root: Path) -> Path:
    """A Claude home whose one session holds counts out of range, then a good call."""
    session = root / "projects" / "p" / "s-hostile.jsonl"
    session.parent.mkdir(parents=True)
    lines = [claude_line(1, 2**70), claude_line(2, 2**64 - 1), claude_line(3, MAX_TOKENS + 1)]
    session.write_text("\n".join([*lines, claude_line(4, 100)]) + "\n")
    return root


def scan_json(*paths: Path) -> dict[str, Any]:
    """The installed `node-agent scan --json` of `paths`; a hang fails the test in 30 s."""
    proc = subprocess.run(
        [str(BIN / "node-agent"), "scan", "--json", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = orjson.loads(proc.stdout)
    return report


def test_scan_reports_a_count_beyond_any_call_as_a_problem(tmp_path: Path) -> None:
    report = scan_json(hostile_home(tmp_path / "claude"))
    assert report["total"]["calls"] == 4 and report["total"]["tokens"]["input"] == 100
    bad = [p["line"] for p in report["problems"] if "out-of-range" in p["reason"]]
    assert bad == [1, 2, 3]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[Hub, HubSetup]]:
    with running_hub(tmp_path) as running:
        yield running


def test_a_node_reads_on_past_a_count_beyond_64_bits(
    hub: tuple[Hub, HubSetup], tmp_path: Path
) -> None:
    running, setup = hub
    service = running.service
    assert service is not None
    home = hostile_home(tmp_path / "claude")
    config = write_node(tmp_path, "spark01", setup, [ProfileSpec("api", Agent.CLAUDE_CODE, home)])
    with processes() as started:
        node = start_node(config, tmp_path)
        started.append(node)
        wait_for(
            lambda: service.fleet(Period.TODAY).calls >= 1 or node.poll() is not None,
            30,
            "the good call at the hub",
        )
        assert node.poll() is None, (config.parent / "node.log").read_text()
    total = service.fleet(Period.TODAY)
    assert total.calls == 4 and total.input == 100


def test_scan_skips_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """A FIFO named like a transcript blocked the scan (and a node's reader) for good; a link to
    /dev/zero filled memory (9.5 GB in 20 s) until it was killed. Claude Code and OpenCode's
    JSON store (the other sources already read regular files only)."""
    home = tmp_path / "claude"
    session = home / "projects" / "p" / "s1.jsonl"
    session.parent.mkdir(parents=True)
    session.write_text(claude_line(1, 100) + "\n")
    messages = tmp_path / "opencode" / "storage" / "message" / "ses_1"
    messages.mkdir(parents=True)
    for folder, name in ((session.parent, "bad.jsonl"), (messages, "msg_bad.json")):
        os.mkfifo(folder / f"fifo-{name}")
        (folder / f"zero-{name}").symlink_to("/dev/zero")
    report = scan_json(home, tmp_path / "opencode")
    assert report["total"]["calls"] == 1
    assert sorted(Path(p["path"]).name for p in report["problems"]) == [
        "fifo-msg_bad.json",
        "zero-msg_bad.json",
    ]

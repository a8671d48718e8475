"""What `node-agent scan` imports: a scan is often a short process, so it loads no other command's
modules, no hub, dashboard or network library, and (but for the few left in the Claude reader)
no dataclass, whose definition costs about 0.5 ms of every start. Which
modules load is checked here; how long they take is the bench's business (`bench/scan.py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from node_agent.scan_index import INDEX_NAME
from tests.test_scan_index import _age, usage_line

# Run in a fresh interpreter: the test session has imported everything already.
PROBE = """
import dataclasses, sys
from node_agent.entry import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
ours = ("node_agent", "shared", "pricing")
made = sorted(
    f"{name}.{value.__name__}"
    for name, module in list(sys.modules.items())
    if module is not None and name.split(".")[0] in ours
    for value in list(vars(module).values())
    if isinstance(value, type) and value.__module__ == name and dataclasses.is_dataclass(value)
)
with open(sys.argv[1], "wb") as out:
    import json
    out.write(json.dumps({"modules": sorted(sys.modules), "dataclasses": made}).encode())
"""

NEVER = (
    "tomlkit",
    "httpx",
    "textual",
    "zeroconf",
    "pynng",
    "psutil",
    "fastapi",
    "uvicorn",
    "mcp",
    "hub",
    "node_agent.agent_cli",
    "node_agent.agent_config",
    "node_agent.daemon",
    "node_agent.init",
    "node_agent.systemd",
    "shared.systemd",
    "pricing.outcomes",
    "shared.outcomes",
    # the price book logs only when an installed table is broken; tool calls are hashed only
    # for an outcome view
    "logging",
    "hashlib",
)
# The dataclasses left on the scan path (the Claude reader's).
LEFT = {
    "node_agent.sources._claude_limits.LimitInfo",
    "node_agent.sources.claude._Key",
    "node_agent.sources.claude._Pending",
    "node_agent.sources.claude._Call",
}


def _scan(tmp_path: Path, *paths: Path) -> tuple[set[str], set[str]]:
    out = tmp_path / "loaded.json"
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path), "PATH": "/usr/bin"}
    args = ["scan", "--json", "--jobs", "1", *map(str, paths)]
    subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    found = orjson.loads(out.read_bytes())
    return set(found["modules"]), set(found["dataclasses"])


def _loaded(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_a_scan_with_nothing_to_read_loads_no_prices_and_no_other_command(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    modules, made = _scan(tmp_path, empty)
    assert "node_agent.report" in modules  # the probe did run a scan
    assert [name for name in NEVER if _loaded(modules, name)] == []
    # argparse asks shutil for the terminal width (shutil loads bz2 and lzma); a first priced
    # scan may load it to write the parsed price tables' cache
    assert not _loaded(modules, "shutil")
    # nothing to keep in the index, no file to read ahead (pickle, threading)
    assert not _loaded(modules, "pickle") and not _loaded(modules, "node_agent.readahead")
    assert not _loaded(modules, "csv")  # a Cursor export's reader
    assert not _loaded(modules, "pricing._book") and not _loaded(modules, "pricing._engine")
    assert made <= LEFT


def test_a_codex_scan_loads_only_what_it_reads_with(tmp_path: Path) -> None:
    name = "rollout-2026-03-01T10-00-00-019a0000-0000-7000-8000-000000000001.jsonl"
    rollout = tmp_path / "codex/sessions/2026/03/01" / name
    rollout.parent.mkdir(parents=True)
    usage = {
        "input_tokens": 10,
        "cached_input_tokens": 0,
        "output_tokens": 5,
        "reasoning_output_tokens": 0,
        "total_tokens": 15,
    }
    lines = [
        {
            "timestamp": "2026-03-01T10:00:00Z",
            "type": "turn_context",
            "payload": {"model": "gpt-5"},
        },
        {
            "timestamp": "2026-03-01T10:00:00.5Z",
            "type": "response_item",
            "payload": {"type": "function_call", "name": "shell", "arguments": '{"cmd":"ls"}'},
        },
        {
            "timestamp": "2026-03-01T10:00:01Z",
            "type": "event_msg",
            "payload": {"type": "token_count", "info": {"total_token_usage": usage}},
        },
    ]
    rollout.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    modules, made = _scan(tmp_path, tmp_path / "codex")
    assert _loaded(modules, "pricing._book")  # it priced the call
    assert [name for name in NEVER if _loaded(modules, name)] == []
    assert made <= LEFT


def test_a_scan_with_nothing_to_read_leaves_the_scan_index_alone(tmp_path: Path) -> None:
    """Neither read (its decoding is start-up time) nor written again (which would drop the
    priced reports the usual homes' next scan takes from it)."""
    index = tmp_path / "cache" / "fleetmeter" / INDEX_NAME
    index.parent.mkdir(parents=True)
    index.write_bytes(b"not read")
    empty = tmp_path / "empty"
    empty.mkdir()
    _scan(tmp_path, empty)
    assert index.read_bytes() == b"not read"  # a damaged index read would be written anew


# What a scan after an append to Claude transcripts needs neither for reading nor for pricing:
# no file is read from its start (nothing to read ahead), nothing forks.
NOT_AFTER_AN_APPEND = (
    "node_agent.readahead",
    "threading",
    "node_agent.workers",
    "multiprocessing",
)


def test_a_scan_after_an_append_loads_only_what_it_reads_and_prices_with(tmp_path: Path) -> None:
    home = tmp_path / "claude"
    transcript = home / "projects" / "p" / "11111111-aaaa-4000-8000-000000000001.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_bytes(usage_line(1, 10) + b"\n")
    _age(home)  # (a file read in the clock tick of a write is read whole again)
    _scan(tmp_path, home)  # the index
    with transcript.open("ab") as fh:
        fh.write(usage_line(2, 20) + b"\n")
    modules, _ = _scan(tmp_path, home)
    assert _loaded(modules, "pricing._book")  # it priced the new call
    assert "node_agent.scan_index" in modules
    assert [name for name in NOT_AFTER_AN_APPEND if _loaded(modules, name)] == []
    assert [name for name in NEVER if _loaded(modules, name)] == []


# The other agents' readers: a scan of Claude homes only tells their homes apart without them
# (`sources.homes`; a .csv met would load Cursor's, whose header tells an export).
NOT_FOR_CLAUDE = (
    "node_agent.sources.codex",
    "node_agent.sources.gemini",
    "node_agent.sources.opencode",
    "node_agent.sources.cursor",
)


def test_a_claude_scan_loads_no_other_agents_reader(tmp_path: Path) -> None:
    home = tmp_path / "claude"
    transcript = home / "projects" / "p" / "11111111-aaaa-4000-8000-000000000001.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_bytes(usage_line(1, 10) + b"\n")
    modules, _ = _scan(tmp_path, home)
    assert _loaded(modules, "pricing._book")  # it priced the call
    assert [name for name in NOT_FOR_CLAUDE if _loaded(modules, name)] == []

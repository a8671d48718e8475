"""A running `node-agent run` takes up a table installed on its machine: the calls it reads
afterwards are priced with it in the figures its agents' gates ask for (the query socket)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from node_agent.query_client import session_figures
from shared.events import Agent
from tests.fleet_harness import (
    ROOT,
    ProfileSpec,
    child_env,
    make_hub,
    processes,
    start_node,
    wait_for,
    write_node,
)
from tests.test_source_claude import SESSION, assistant, main_file, write

TODAY = datetime.now(UTC).date()
# one call: 1,000,000 output tokens of Opus 4.5 ($25/MTok shipped, $20 in the installed table)
TABLE = f"""schema = 1
provider = "anthropic"
currency = "USD"

[[models]]
id = "claude-opus-4-5"
name = "Claude Opus 4.5"
sources = [{{ name = "cost report", ref = "reconciliation", checked = {TODAY} }}]

[[models.periods]]
from = {TODAY}
[models.periods.rates]
input = "4"
output = "20"
reasoning = "20"
cache_read = "0.4"
cache_write_5m = "5"
cache_write_1h = "8"
"""


def opus_call(n: int) -> dict[str, object]:
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return assistant(
        f"msg_{n}",
        f"req_{n}",
        output=1_000_000,
        input_tokens=0,
        cache_read=0,
        w1=0,
        model="claude-opus-4-5-20251101",
        ts=stamp,
    )


def spend(state: Path) -> tuple[int, Decimal]:
    usage = session_figures(state, SESSION)["usage"]
    return (0, Decimal(0)) if usage is None else (usage["calls"], Decimal(usage["spend"]))


def test_a_node_daemon_prices_new_calls_with_a_table_installed_while_it_runs(
    tmp_path: Path,
) -> None:
    home = tmp_path / "claude"
    (home / "projects").mkdir(parents=True)
    config = write_node(
        tmp_path, "spark01", make_hub(tmp_path), [ProfileSpec("work", Agent.CLAUDE_CODE, home)]
    )
    state = config.parent / "state"
    with processes() as started:
        started.append(start_node(config, tmp_path))
        wait_for((state / "query.sock").exists, 30, "the node's query socket")
        transcript = write(main_file(home), [opus_call(1)])
        wait_for(lambda: spend(state) == (1, Decimal(25)), 30, "the first call at $25")
        source = tmp_path / "opus.toml"
        source.write_text(TABLE)
        done = subprocess.run(
            [sys.executable, "-m", "hub.cli", "prices", "install", str(source), "--config", "x"],
            env=child_env(tmp_path),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        # the daemon looks at the folder every few seconds; a call read after it did: $20
        wait_for(lambda: "price tables in" in (config.parent / "node.log").read_text(), 30, "it")
        write(transcript, [opus_call(2)])
        wait_for(lambda: spend(state) == (2, Decimal(45)), 30, "the second call at $20")

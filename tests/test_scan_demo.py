"""`make scan-demo` (`python -m node_agent.demo`): its generated fleet never logs a call from the
future, and every scan it runs succeeds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from node_agent import demo
from node_agent.scan import scan
from shared.config import NodeConfig


def test_the_demo_fleet_ends_before_now(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The fleet ends with yesterday (UTC): a simulated day runs to midnight, so a fleet that
    # included today would hold calls later than now whatever the hour.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    assert demo.main(["--machines", "1", "--days", "2", "--keep", str(tmp_path)]) == 0
    assert "TOTAL" in capsys.readouterr().out
    [machine] = [p for p in (tmp_path / "fleet").iterdir() if p.is_dir()]
    result = scan([machine], NodeConfig())
    stamps = [e.ts for r in result.results for e in r.collector.events.usage.values()]
    assert stamps, "the demo wrote no calls"
    assert max(stamps) < today, "the demo wrote calls dated today or later"
    assert min(stamps) >= today - 2 * 86400  # and still the two days asked for

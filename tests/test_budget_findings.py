"""What the governor hands the alert outbox: one Finding per crossing (kind "budget"), a
forecast before the limit (kind "forecast"), stable ids; on an in-process hub (the same core
as `fleet-hub serve`) whose sink is a list, fed signed batches over nng."""

from __future__ import annotations

import sqlite3
import threading
from decimal import Decimal
from pathlib import Path

from hub.budgets.model import parse_budget
from hub.config import load_hub_config
from hub.findings import Finding, Severity
from hub.serve import Hub
from tests.budget_harness import api_price, hello, send, usage
from tests.fleet_harness import make_hub, wait_for


class ListSink:
    def __init__(self) -> None:
        self.findings: dict[str, Finding] = {}
        self.raised = 0
        self._lock = threading.Lock()

    def raise_finding(self, finding: Finding) -> None:
        with self._lock:
            self.raised += 1
            self.findings.setdefault(finding.id, finding)


def test_crossings_and_a_forecast_become_findings(tmp_path: Path) -> None:
    setup = make_hub(tmp_path)
    sink = ListSink()
    hub = Hub(load_hub_config(setup.config), finding_sink=sink)
    service = hub.start()
    try:
        assert hub.governor is not None
        calls = [usage("spark03", n) for n in range(6)]
        each = api_price(calls[0])
        # ten calls' worth: six calls in the last minute reach it in minutes at this rate
        limit = (each * 10).quantize(Decimal("0.000001"))
        hub.governor.add_budget(
            parse_budget({"name": "spark03 day", "scope": "machine=spark03", "period": "day",
                          "basis": "api", "limit": str(limit)}),
            "test",
        )  # fmt: skip
        send(setup, "spark03", calls[:3], hello("spark03"))
        wait_for(lambda: any(f.kind == "forecast" for f in sink.findings.values()), 10,
                 "a forecast")  # fmt: skip
        forecast = next(f for f in sink.findings.values() if f.kind == "forecast")
        assert forecast.scope == "machine=spark03" and forecast.severity is Severity.WARNING
        assert "at this rate the limit is reached in" in forecast.text
        send(setup, "spark03", calls[3:], None)
        wait_for(lambda: any(f.id.endswith(f":50@{limit}") for f in sink.findings.values()),
                 10, "the 50 % crossing")  # fmt: skip
        more = [usage("spark03", n) for n in range(6, 12)]
        send(setup, "spark03", more, None)
        wait_for(lambda: any(f.id.endswith(f":100@{limit}") for f in sink.findings.values()),
                 10, "the 100 % crossing")  # fmt: skip
        at_limit = next(f for f in sink.findings.values() if f.id.endswith(f":100@{limit}"))
        assert at_limit.kind == "budget" and at_limit.severity is Severity.CRITICAL
        assert at_limit.evidence["limit"] == str(limit)
        assert Decimal(at_limit.evidence["spent"]) >= limit
        assert at_limit.text.startswith("budget 'spark03 day' (machine=spark03, day) at 100 %")
        # the 80 % mark was crossed in the same batch: the 100 % one speaks for it
        assert not any(f.id.endswith(f":80@{limit}") for f in sink.findings.values())
        send(setup, "spark03", [usage("spark03", n) for n in range(12, 15)], None)
        # judged before the ack: past its limit, no new mark is made in this period
        with sqlite3.connect(setup.data_dir / "hub.db") as db:
            rows = [m for (m,) in db.execute("SELECT mark FROM budget_marks ORDER BY rowid")]
        assert rows == [f"forecast@{limit}", f"50@{limit}", f"80@{limit}", f"100@{limit}"]
        assert sink.raised == len(sink.findings) == 3
        assert any("at 100 %" in item.text for item in service.recent_feed())
    finally:
        hub.stop()

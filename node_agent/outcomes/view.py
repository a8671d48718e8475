"""`node-agent scan --by commit|branch|pr|repo`: the scan's priced calls put on the outcomes
of their sessions, read from git (and the forge) on this machine now."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from node_agent.outcomes.forge import forge_from_env
from node_agent.outcomes.sessions import OutcomeReader, spans
from node_agent.report import Report
from pricing.outcomes import outcome_report


def outcome_view(report: Report, by: str, identities: Collection[str] = ()) -> dict[str, Any]:
    reader = OutcomeReader(identities=identities, forge=forge_from_env())
    outcomes = {
        span.session_id: reader.read(span) for span in spans(event for event, _ in report.calls)
    }
    return outcome_report(by, outcomes, report.calls, report.moves)

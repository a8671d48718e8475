"""`node-agent scan --by commit|branch|pr|repo`: the scan's priced calls put on the outcomes
of their sessions, read from git (and the forge) on this machine now."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any, Final

from node_agent.outcomes.forge import DEFAULT_API, GitHub
from node_agent.outcomes.sessions import OutcomeReader, spans
from node_agent.report import Report
from pricing.outcomes import outcome_report

TOKEN_VARIABLES: Final = ("FLEETMETER_GITHUB_TOKEN", "GITHUB_TOKEN")
API_VARIABLE: Final = "FLEETMETER_GITHUB_API"


def forge_from_env(environ: Mapping[str, str] = os.environ) -> GitHub | None:
    """GitHub's client when a token is in the environment (never on the command line, where
    `ps` would show it); its API at $FLEETMETER_GITHUB_API (default api.github.com)."""
    token = next((environ[v] for v in TOKEN_VARIABLES if environ.get(v)), None)
    if token is None:
        return None
    return GitHub(token.strip(), environ.get(API_VARIABLE) or DEFAULT_API)


def outcome_view(report: Report, by: str, identities: Collection[str] = ()) -> dict[str, Any]:
    reader = OutcomeReader(identities=identities, forge=forge_from_env())
    outcomes = {
        span.session_id: reader.read(span) for span in spans(event for event, _ in report.calls)
    }
    return outcome_report(by, outcomes, report.calls)

"""Cost per outcome on the dashboard: the Spend-by tab's outcome groups (commit, branch, pull
request, repository). No Textual here.

The rows come from `FleetSource.outcome_report`, which answers at once with what it has
(`hub._outcome_cache`): the tab shows "(reading outcomes…)" until the first read is in.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from hub._format import count
from hub._totals import Totals
from hub.dashboard import SPEND_COLUMNS, Cell, Row, spend_row

OUTCOME_VIEWS: Final = ("commit", "branch", "pr", "repo")
VIEW_NAMES: Final = {
    "commit": "commit",
    "branch": "branch",
    "pr": "pull request",
    "repo": "repository",
}
READING: Final = "(reading outcomes…)"


def _totals(row: Mapping[str, Any]) -> Totals:
    tokens, cost = row["tokens"], row["cost"]
    return Totals(
        calls=row["calls"],
        input=tokens["input"],
        output=tokens["output"],
        cache_read=tokens["cache_read"],
        cache_write_5m=tokens["cache_write_5m"],
        cache_write_1h=tokens["cache_write_1h"],
        reasoning=tokens["reasoning"],
        web_search_requests=row["web_search_requests"],
        api_equivalent=Decimal(cost["api_equivalent"]),
        metered=Decimal(cost["metered"]),
        subscription_included=Decimal(cost["subscription_included"]),
        estimated=Decimal(cost["estimated"]),
        unknown_calls=row["unknown_calls"],
        unknown_tokens=row["unknown_tokens"],
    )


def _label(view: str, row: Mapping[str, Any]) -> str:
    """The group cell: the outcome in words, with what it is worth beside the money."""
    out = row["outcome"]
    lines = f"+{out['lines_added']:,}/-{out['lines_deleted']:,}"
    if view == "commit":
        if row["commit"] is None:
            return f"(no outcome) · {count(out['no_outcome_sessions'], 'session')} without a commit"
        return f"{row['commit'][:8]} {out['subject'][:40]} · {lines} · {out['rule']}"
    if view == "pr":
        if row["pr"] is None:
            return "(no pull request)"
        state = "merged" if out["merged"] else out["state"]
        return f"{row['pr']} {state} · {count(out['commits'], 'commit')} {lines}"
    where = row["repo"] or "(no repository)"
    if view == "branch":
        where += f" @ {row['branch'] or '-'}"
        if "pr" in out:
            where += f" · PR #{out['pr']}" + (" merged" if out["pr_merged"] else "")
    no_outcome = f" · {out['no_outcome_sessions']} no outcome" if out["no_outcome_sessions"] else ""
    return f"{where} · {count(out['commits'], 'commit')} {lines}{no_outcome}"


def outcome_spend_rows(view: str, report: Mapping[str, Any] | None) -> dict[str, Row]:
    """The Spend-by rows of an outcome report (or the one row that says it is being read)."""
    if report is None:
        cells = (Cell(READING, ""),) + tuple(Cell("") for _ in SPEND_COLUMNS[1:])
        return {READING: Row(READING, cells, "")}
    out: dict[str, Row] = {}
    for row in report["rows"]:
        key = "/".join(str(row[k]) for k in report["group_by"])
        out[key] = spend_row(key, _label(view, row), _totals(row))
    return out

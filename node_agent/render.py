"""Plain-text and JSON renderings of a scan report."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from node_agent.report import Report
from pricing import CostClass
from pricing.rollup import Row

CENT = Decimal("0.01")
MAX_LISTED_PROBLEMS = 20


def money(value: Decimal) -> str:
    return f"${value.quantize(CENT, rounding=ROUND_HALF_EVEN):,}"


def count(value: int) -> str:
    if value >= 10_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 100_000:
        return f"{value / 1_000:.0f}k"
    return f"{value:,}"


COLUMNS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("calls", lambda r: count(r.calls)),
    ("input", lambda r: count(r.tokens.input)),
    ("output", lambda r: count(r.tokens.output)),
    ("reason", lambda r: count(r.tokens.reasoning)),
    ("c.read", lambda r: count(r.tokens.cache_read)),
    ("c.w5m", lambda r: count(r.tokens.cache_write_5m)),
    ("c.w1h", lambda r: count(r.tokens.cache_write_1h)),
    ("API-equiv", lambda r: money(r.api_equivalent)),
    ("metered", lambda r: money(r.cost(CostClass.METERED))),
    ("subscr.", lambda r: money(r.cost(CostClass.SUBSCRIPTION_INCLUDED))),
    ("estim.", lambda r: money(r.cost(CostClass.ESTIMATED))),
    ("unknown", lambda r: f"{r.unknown_calls} calls" if r.unknown_calls else "-"),
)


def render_text(report: Report) -> str:
    result = report.rollup
    rows = result.sorted_rows()
    head = [k for k in result.by] + [name for name, _ in COLUMNS]
    body = [[r.keys[k] or "-" for k in result.by] + [fn(r) for _, fn in COLUMNS] for r in rows]
    total = ["TOTAL"] + [""] * (len(result.by) - 1) if result.by else []
    body.append(total + [fn(result.total) for _, fn in COLUMNS])
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]
    numeric_from = len(result.by)

    def line(cells: list[str]) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            out.append(cell.rjust(width) if i >= numeric_from else cell.ljust(width))
        return "  ".join(out).rstrip()

    lines = [line(head), line(["-" * w for w in widths])]
    lines += [line(cells) for cells in body[:-1]]
    lines += [line(["-" * w for w in widths]), line(body[-1])]
    lines.append("")
    lines.append(f"read {report.files} files, {report.bytes / 1_000_000:.1f} MB")
    if report.skipped:
        counts = report.skipped.most_common()
        lines.append("skipped: " + ", ".join(f"{n} {why}" for why, n in counts))
    if report.unknown_models:
        models = ", ".join(f"{m} ({n} calls)" for m, n in report.unknown_models.most_common())
        lines.append(f"no price known (shown as unknown, not $0): {models}")
    problems = report.problems
    if problems:
        lines.append(f"{len(problems)} unreadable records:")
        lines += [f"  {_printable(str(p))}" for p in problems[:MAX_LISTED_PROBLEMS]]
        if len(problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more (see --json)")
    return "\n".join(lines)


def render_json(report: Report) -> dict[str, Any]:
    result = report.rollup
    return {
        "group_by": list(result.by),
        "rows": [row.to_json() for row in result.sorted_rows()],
        "total": result.total.to_json(),
        "files": report.files,
        "bytes": report.bytes,
        "skipped": dict(sorted(report.skipped.items())),
        "unknown_models": dict(sorted(report.unknown_models.items())),
        "problems": [
            {"path": _printable(p.path), "line": p.line, "reason": p.reason}
            for p in report.path_problems + report.problems
        ],
    }


def _printable(name: str) -> str:
    """A file name as JSON or a UTF-8 stdout can hold it: its bytes that are not UTF-8
    (decoded with surrogate escapes, which orjson and a strict stream refuse: the scan
    failed) are written as \\xNN."""
    if name.isascii():
        return name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")

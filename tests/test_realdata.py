"""`node-agent scan` on real logs nobody on the project wrote (`../shared/realdata/`): public
fixtures and transcripts of Claude Code, Codex and OpenCode. Every dataset's figures must equal
`EXPECTED.json` (agreed by two tools and checked by hand) to the token and to the dollar."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from node_agent.render import render_json
from node_agent.report import Query, build_report
from shared.config import NodeConfig

REALDATA = Path(__file__).resolve().parent.parent.parent / "shared" / "realdata"
EXPECTED_FILE = REALDATA / "EXPECTED.json"

pytestmark = pytest.mark.skipif(
    not EXPECTED_FILE.is_file(),
    reason=f"no real-data corpus at {REALDATA} (CI puts shared/ beside the repo clone)",
)


def expected() -> dict[str, dict[str, Any]]:
    if not EXPECTED_FILE.is_file():
        return {}
    loaded: dict[str, dict[str, Any]] = orjson.loads(EXPECTED_FILE.read_bytes())
    return loaded


def scan_rows(home: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The scan of one home by day and model, as `--json` prints it: rows by "day|model"."""
    report = build_report([home], NodeConfig(), Query(("day", "model"), UTC), jobs=1)
    blob = render_json(report)
    blob["path_problems"] = [str(p) for p in report.path_problems]
    return {f"{row['day']}|{row['model']}": row for row in blob["rows"]}, blob


def want_tokens(row: dict[str, Any]) -> dict[str, int]:
    """EXPECTED.json's token keys in fleetmeter's terms. Codex rows name OpenAI's counts: the
    uncached part of the prompt, the cached part, and output with reasoning inside it."""
    if "input_uncached" in row:
        return {
            "input": row["input_uncached"],
            "cache_read": row["cached_input"],
            "output": row["output_incl_reasoning"] - row["reasoning"],
            "reasoning": row["reasoning"],
        }
    tokens = {k: row[k] for k in ("input", "output", "cache_read") if k in row}
    if "cache_write" in row:  # one figure for both cache-write tiers
        tokens["cache_write"] = row["cache_write"]
    for key in ("cache_write_5m", "cache_write_1h"):
        if key in row:
            tokens[key] = row[key]
    return tokens


def got_tokens(row: dict[str, Any], keys: Iterable[str]) -> dict[str, int]:
    tokens = row["tokens"]
    both = tokens["cache_write_5m"] + tokens["cache_write_1h"]
    return {k: both if k == "cache_write" else tokens[k] for k in keys}


def want_usd(row: dict[str, Any]) -> Decimal:
    return Decimal(row["usd"] if "usd" in row else row["usd_at_anthropic_3.5_sonnet_rates"])


def dataset_params() -> list[Any]:
    return [pytest.param(name, id=name) for name in expected()]


@pytest.mark.parametrize("dataset", dataset_params())
def test_dataset_matches_expected(dataset: str) -> None:
    want = expected()[dataset]
    rows, blob = scan_rows(REALDATA / dataset)
    expected_rows = {key: row for key, row in want.items() if not key.startswith("_")}
    if not expected_rows:  # a dataset noted as holding no usage that either tool reads
        assert rows == {}, (dataset, want.get("_note"))
        return
    assert blob["path_problems"] == []
    assert sorted(rows) == sorted(expected_rows)
    for key, row in expected_rows.items():
        got = rows[key]
        tokens = want_tokens(row)
        assert got_tokens(got, tokens) == tokens, key
        if "calls" in row:
            assert got["calls"] == row["calls"], key
        assert got["unknown_calls"] == 0, f"{key}: priced as unknown"
        assert Decimal(got["cost"]["api_equivalent"]) == want_usd(row), key
    assert blob["unknown_models"] == {}


def test_codex_fixture_own_totals() -> None:
    """localpush ships its own expected totals for the first day: input there includes cached."""
    own = expected().get("localpush/codex-home", {}).get("_fixture_own_expected_2026-02-23")
    if own is None:
        pytest.skip("EXPECTED.json has no fixture totals for localpush")
    rows, _ = scan_rows(REALDATA / "localpush" / "codex-home")
    tokens = rows["2026-02-23|gpt-5.3-codex"]["tokens"]
    assert tokens["input"] + tokens["cache_read"] == own["input_incl_cached"]
    assert tokens["cache_read"] == own["cached_input"]
    assert tokens["output"] + tokens["reasoning"] == own["output"]
    assert tokens["reasoning"] == own["reasoning_output"]
    assert own["input_incl_cached"] + own["output"] == own["total"]

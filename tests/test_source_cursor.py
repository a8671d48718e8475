"""Cursor source on usage CSV exports in the header variants of research/log-formats.md §5."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from node_agent.sources.base import FileKind, SourceFile
from node_agent.sources.cursor import CursorSource
from shared.events import Agent, Role, Tokens, UsageEvent
from tests.recording import Recorder

OLD = (
    "Date,Model,Input (w/ Cache Write),Input (w/o Cache Write),Cache Read,Output Tokens,"
    "Total Tokens,Cost,Cost to you"
)
NOV_2025 = (
    "Date,Kind,Model,Max Mode,Input (w/ Cache Write),Input (w/o Cache Write),Cache Read,"
    "Output Tokens,Total Tokens,Cost"
)
V2026 = (
    "Date,Cloud Agent ID,Automation ID,Kind,Model,Max Mode,Input (w/ Cache Write),"
    "Input (w/o Cache Write),Cache Read,Output Tokens,Total Tokens,Cost"
)

# The illustrative rows of §5.3 as dicts, so each test can lay them out under any header.
ROW_A = {
    "Date": "2026-09-12T10:04:51.203Z",
    "Cloud Agent ID": "",
    "Automation ID": "",
    "Kind": "Included",
    "Model": "claude-4.5-sonnet",
    "Max Mode": "No",
    "Input (w/ Cache Write)": "6112",
    "Input (w/o Cache Write)": "126",
    "Cache Read": "11964",
    "Output Tokens": "450",
    "Total Tokens": "18652",
    "Cost": "0.20",
    "Cost to you": "0",
}
ROW_B = {
    **ROW_A,
    "Date": "2026-09-12T10:07:02.918Z",
    "Kind": "On-Demand",
    "Model": "gpt-5-codex",
    "Input (w/ Cache Write)": "0",
    "Input (w/o Cache Write)": "8263",
    "Cache Read": "66964",
    "Output Tokens": "1612",
    "Total Tokens": "76839",
    "Cost": "0.03",
}
TOKENS_A = Tokens(input=126, output=450, cache_read=11964, cache_write_5m=6112)
TOKENS_B = Tokens(input=8263, output=1612, cache_read=66964)


def export(path: Path, header: str, rows: list[dict[str, str]], quote_all: bool = True) -> Path:
    """Write rows under `header` the way the dashboard does (every field quoted)."""
    columns = next(csv.reader([header]))
    out = io.StringIO()
    writer = csv.writer(
        out, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, lineterminator="\n"
    )
    out.write(header + "\n")
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def read(*paths: Path, source: CursorSource | None = None) -> Recorder:
    sink = Recorder()
    src = source or CursorSource()
    for path in paths:
        src.read_whole(path, sink)
    return sink


def by_model(sink: Recorder) -> dict[str, UsageEvent]:
    return {e.model: e for e in sink.events.values()}


@pytest.mark.parametrize("header", [OLD, NOV_2025, V2026], ids=["old", "2025-11", "2026"])
def test_every_header_variant(tmp_path: Path, header: str) -> None:
    f = export(tmp_path / "usage.csv", header, [ROW_A, ROW_B])
    sink = read(f)
    assert sink.problems == []
    events = by_model(sink)
    a, b = events["claude-4.5-sonnet"], events["gpt-5-codex"]
    assert a.tokens == TOKENS_A and b.tokens == TOKENS_B
    assert a.agent is Agent.CURSOR and a.role is Role.MAIN
    assert a.ts == 1789207491.203
    assert a.cache_write_unsplit and not b.cache_write_unsplit
    assert a.reported_cost_usd == "0.20"
    assert a.session_id == "cursor:2026-09-12"
    assert a.origin == f"{f}:2" and b.origin == f"{f}:3"
    assert a.event_id.startswith("cursor:")
    if "Kind" in header:
        assert (a.service_tier, b.service_tier) == ("Included", "On-Demand")
    else:
        assert a.service_tier is None


def test_the_same_rows_under_every_variant_have_the_same_ids(tmp_path: Path) -> None:
    ids = [
        set(read(export(tmp_path / f"{i}.csv", header, [ROW_A, ROW_B])).events)
        for i, header in enumerate((OLD, NOV_2025, V2026))
    ]
    assert ids[0] == ids[1] == ids[2]


def test_reordered_and_unknown_columns(tmp_path: Path) -> None:
    shuffled = (
        "Output Tokens,Cost,Model,Note,Cache Read,Date,Total Tokens,Input (w/o Cache Write),"
        "Kind,Input (w/ Cache Write),Max Mode"
    )
    rows = [{**ROW_A, "Note": "hello"}, {**ROW_B, "Note": "x"}]
    reordered = read(export(tmp_path / "r.csv", shuffled, rows))
    canonical = read(export(tmp_path / "c.csv", NOV_2025, [ROW_A, ROW_B]))
    assert reordered.problems == []
    assert set(reordered.events) == set(canonical.events)
    assert by_model(reordered)["gpt-5-codex"].tokens == TOKENS_B


def test_cost_numbers_dollars_and_labels(tmp_path: Path) -> None:
    costs = ["$1,234.50", "Included", "-", "", "0.0415", "$0.00"]
    rows = [
        {**ROW_A, "Model": f"m{i}", "Cost": cost, "Date": f"2026-09-12T10:0{i}:00.000Z"}
        for i, cost in enumerate(costs)
    ]
    events = by_model(read(export(tmp_path / "u.csv", NOV_2025, rows)))
    assert [events[f"m{i}"].reported_cost_usd for i in range(len(costs))] == [
        "1234.50",
        None,
        None,
        None,
        "0.0415",
        "0.00",
    ]


def test_total_mismatch_is_reported_and_the_row_still_used(tmp_path: Path) -> None:
    f = export(tmp_path / "u.csv", NOV_2025, [ROW_A, {**ROW_B, "Total Tokens": "76840"}])
    sink = read(f)
    assert len(sink.events) == 2
    [problem] = sink.problems
    assert (problem.path, problem.line) == (str(f), 3)
    assert "76840" in problem.reason and "76839" in problem.reason


def test_missing_required_column_skips_the_file_with_its_name(tmp_path: Path) -> None:
    header = NOV_2025.replace("Cache Read,", "")
    f = export(tmp_path / "u.csv", header, [ROW_A, ROW_B])
    source = CursorSource()
    assert source.is_home(f)  # still recognised, so the operator hears about it
    sink = read(f, source=source)
    assert sink.events == {}
    [problem] = sink.problems
    assert problem.path == str(f) and "'Cache Read'" in problem.reason


def test_identical_rows_in_one_export_are_two_events(tmp_path: Path) -> None:
    sink = read(export(tmp_path / "u.csv", NOV_2025, [ROW_A, ROW_A, ROW_B]))
    assert len(sink.events) == 3
    assert sum((e.tokens for e in sink.events.values()), Tokens()) == TOKENS_A + TOKENS_A + TOKENS_B


def test_overlapping_re_download_is_deduped(tmp_path: Path) -> None:
    rows = [
        {**ROW_A, "Date": f"2026-09-{day:02d}T10:00:00.000Z", "Output Tokens": str(day)}
        for day in range(10, 16)
    ]
    for row in rows:
        row["Total Tokens"] = ""
    first = export(tmp_path / "sep-10-13.csv", NOV_2025, [rows[0], rows[1], rows[1], rows[2]])
    # Downloaded again later over a wider range, in the newer layout, unquoted.
    second = export(
        tmp_path / "sep-11-15.csv",
        V2026,
        [rows[1], rows[1], rows[2], rows[3], rows[4], rows[5]],
        quote_all=False,
    )
    sink = read(first, second)
    assert sink.problems == []
    assert len(sink.events) == 7  # rows 0..5, with row 1 twice
    outputs = sorted(e.tokens.output for e in sink.events.values())
    assert outputs == [10, 11, 11, 12, 13, 14, 15]
    # Reading the same exports again sends nothing new.
    source = CursorSource()
    again = Recorder()
    for path in (first, second, first):
        source.read_whole(path, again)
    assert len(again.sent) == 7


def test_bad_rows_are_reported_by_line_and_the_rest_read(tmp_path: Path) -> None:
    f = export(
        tmp_path / "u.csv",
        NOV_2025,
        [
            {**ROW_A, "Date": "last tuesday"},
            {**ROW_A, "Output Tokens": "12.5"},
            ROW_B,
            {**ROW_A, "Model": ""},
        ],
    )
    with f.open("a") as out:
        out.write('"2026-09-12T11:00:00Z","Included","x"\n')  # short row
    sink = read(f)
    assert list(by_model(sink)) == ["gpt-5-codex"]
    assert [p.line for p in sink.problems] == [2, 3, 5, 6]
    assert "Date" in sink.problems[0].reason
    assert "Output Tokens" in sink.problems[1].reason


def test_date_only_rows_and_max_mode_and_cloud_agents(tmp_path: Path) -> None:
    rows = [
        {**ROW_A, "Date": "2025-11-13", "Max Mode": "Yes"},
        {**ROW_B, "Cloud Agent ID": "bc-7f3a", "Max Mode": "off"},
        {**ROW_B, "Automation ID": "auto-9", "Model": "auto", "Date": "2026-09-12T11:00:00Z"},
    ]
    events = by_model(read(export(tmp_path / "u.csv", V2026, rows)))
    a = events["claude-4.5-sonnet"]
    assert a.ts == 1762992000.0  # 2025-11-13T00:00:00Z
    assert a.session_id == "cursor:2025-11-13"
    assert a.speed == "max"
    assert events["gpt-5-codex"].session_id == "cursor:agent:bc-7f3a"
    assert events["gpt-5-codex"].speed is None
    assert events["auto"].session_id == "cursor:automation:auto-9"


def test_bom_crlf_and_header_spacing(tmp_path: Path) -> None:
    f = export(tmp_path / "u.csv", NOV_2025, [ROW_A])
    data = f.read_bytes().replace(b"Cache Read", b" cache  read ", 1).replace(b"\n", b"\r\n")
    f.write_bytes(b"\xef\xbb\xbf" + data)  # as a spreadsheet saves it
    sink = read(f)
    assert sink.problems == []
    [event] = sink.events.values()
    assert event.tokens == TOKENS_A  # " cache read " matched Cache Read


def test_unreadable_files_are_one_problem(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    sink = read(empty, binary, tmp_path / "gone.csv")
    assert [p.line for p in sink.problems] == [0, 0, 0]
    assert sink.events == {}


def test_homes_and_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert CursorSource().default_homes() == [tmp_path / "cfg" / "fleetmeter" / "cursor"]
    home = tmp_path / "exports"
    a = export(home / "a.csv", OLD, [ROW_A])
    b = export(home / "b.CSV", V2026, [ROW_B])
    (home / "other.csv").write_text("name,amount\nx,1\n")
    (home / "notes.txt").write_text(NOV_2025)
    source = CursorSource()
    assert source.is_home(home) and source.is_home(a)
    assert not source.is_home(home / "other.csv")
    assert not source.is_home(tmp_path / "nowhere")
    assert source.discover(home) == [SourceFile(a, FileKind.WHOLE), SourceFile(b, FileKind.WHOLE)]
    assert source.discover(a) == [SourceFile(a, FileKind.WHOLE)]

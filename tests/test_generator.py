"""The log generator: determinism, truth consistency, realism present in the files, size target.

The reference reader below is deliberately minimal and separate from the generator: it applies
the dedupe rules of research/log-formats.md to the written files and must land on the truth
to the token, group by group. It is not the product's parser; it proves the truth describes
the files.
"""

from __future__ import annotations

import csv
import os
import random
import re
import sqlite3
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import zstandard

from node_agent.simulate import claude, codex, prices
from node_agent.simulate.common import ByteCounter, after, iso_ms
from node_agent.simulate.env import Project, SessionEnv
from node_agent.simulate.fleet import REALISM_ITEMS, generate_fleet
from node_agent.simulate.payloads import PayloadPool
from node_agent.simulate.truth import GroupKey, Truth, TruthBuilder
from shared.events import Tokens

SMALL = {"seed": 7, "machines": 2, "days": 2, "scale": 0.3}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    root = tmp_path_factory.mktemp("fleet") / "corpus"
    truth = generate_fleet(root, jobs=1, **SMALL)  # type: ignore[arg-type]
    return root, truth


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def _jsonl(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    out: list[dict[str, Any]] = []
    for raw in data.split(b"\n"):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        out.append(value)
    return out


def _day(ts: str) -> str:
    return ts[:10]


# ---- determinism and size ---------------------------------------------------------------------


def test_same_seed_same_bytes_regardless_of_processes(
    corpus: tuple[Path, Truth], tmp_path: Path
) -> None:
    root, _ = corpus
    again = tmp_path / "again"
    generate_fleet(again, jobs=2, **SMALL)  # type: ignore[arg-type]
    first, second = _files(root), _files(again)
    assert sorted(first) == sorted(second)
    for name, data in first.items():
        assert second[name] == data, name


def test_other_seed_other_bytes(corpus: tuple[Path, Truth], tmp_path: Path) -> None:
    root, _ = corpus
    other = tmp_path / "other"
    generate_fleet(other, jobs=1, **{**SMALL, "seed": 8})  # type: ignore[arg-type]
    assert _files(root)["truth.json"] != _files(other)["truth.json"]


def test_target_bytes_is_reached_without_much_overshoot(tmp_path: Path) -> None:
    target = 12_000_000  # specials alone are a few MB on spark01
    truth = generate_fleet(
        tmp_path / "t", seed=3, machines=2, days=3, scale=0.05, target_bytes=target
    )
    size = sum(len(b) for n, b in _files(tmp_path / "t").items() if n != "truth.json")
    assert target <= size <= target * 1.3
    assert truth.files["bytes"] >= target


def test_refuses_a_non_empty_root(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_fleet(tmp_path, seed=1, machines=1, days=1, scale=0.1)


# ---- truth ----------------------------------------------------------------------------------


def test_truth_sums_and_round_trip(corpus: tuple[Path, Truth]) -> None:
    root, truth = corpus
    data = orjson.loads((root / "truth.json").read_bytes())
    grand = truth.total()
    assert data["totals"]["calls"] == grand.calls == sum(g["calls"] for g in data["groups"])
    assert data["totals"]["calls"] == truth.counts["calls"]
    assert Decimal(data["totals"]["api_equivalent_usd"]) == sum(
        (Decimal(g["api_equivalent_usd"]) for g in data["groups"] if g["api_equivalent_usd"]),
        Decimal(0),
    )
    for bucket in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h"):
        assert data["totals"]["tokens"][bucket] == sum(g["tokens"][bucket] for g in data["groups"])
    by_agent = truth.total_by("agent")
    assert sum(t.calls for t in by_agent.values()) == grand.calls
    assert sum((t.cost for t in by_agent.values()), Decimal(0)) == grand.cost
    by_day = truth.total_by("machine", "day", agent="codex")
    assert sum(t.calls for t in by_day.values()) == truth.total(agent="codex").calls
    loaded = Truth.load(root / "truth.json")
    assert loaded.groups == truth.groups
    assert loaded.total().cost == grand.cost
    assert len(truth.rate_limit_hits) == truth.counts["rate_limit_hits"]
    assert (
        sum(p["kind"] == "garbage_line" for p in truth.problems) == truth.counts["parse_problems"]
    )
    assert truth.counts["parse_problems"] == 2 and truth.counts["torn_tails"] == 2
    assert truth.counts["synthetic_lines"] >= 4


def test_unknown_model_counts_tokens_but_no_dollars(corpus: tuple[Path, Truth]) -> None:
    _, truth = corpus
    local = truth.total(model="my-finetune-7b")
    assert local.calls > 0 and local.unknown_calls == local.calls
    assert local.tokens.input > 0 and local.cost == 0
    assert all(g.cost is None for g in truth.select(model="my-finetune-7b"))
    assert all(g.cost is not None for g in truth.groups if g.key.model != "my-finetune-7b")


def _hand_cost(tokens: dict[str, int], rates: tuple[str, str, str, str, str]) -> Decimal:
    inp, out, read, w5, w1 = (Decimal(r) for r in rates)
    return (
        tokens["input"] * inp
        + (tokens["output"] + tokens["reasoning"]) * out
        + tokens["cache_read"] * read
        + tokens["cache_write_5m"] * w5
        + tokens["cache_write_1h"] * w1
    ) / 1_000_000 + Decimal("0.01") * tokens["web_search_requests"]


def test_long_context_cliff_prices(corpus: tuple[Path, Truth]) -> None:
    _, truth = corpus
    lc = truth.realism["claude.long_context_sonnet"]
    assert lc
    for ex in lc:
        t = ex["tokens"]
        assert t["input"] + t["cache_read"] + t["cache_write_5m"] + t["cache_write_1h"] > 200_000
        # Sonnet 4.5 above 200K: every token at the long-context rates.
        assert Decimal(ex["cost"]) == _hand_cost(t, ("6", "22.50", "0.60", "7.50", "12"))
    (exact,) = truth.realism["claude.prompt_exactly_200k"]
    t = exact["tokens"]
    assert t["input"] + t["cache_read"] + t["cache_write_5m"] + t["cache_write_1h"] == 200_000
    assert Decimal(exact["cost"]) == _hand_cost(t, ("3", "15", "0.30", "3.75", "6"))
    for ex in truth.realism["claude.over_200k_flat_priced"]:
        assert ex["model"] == "claude-opus-4-6"
        assert Decimal(ex["cost"]) == _hand_cost(ex["tokens"], ("5", "25", "0.50", "6.25", "10"))


def test_prices_refuse_dates_they_do_not_know() -> None:
    tokens = Tokens(input=10, output=10)
    with pytest.raises(ValueError):
        prices.call_cost("claude-opus-4-6", tokens, datetime(2026, 2, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        prices.call_cost("gpt-5", Tokens(cache_write_5m=5), datetime(2026, 10, 1, tzinfo=UTC))
    assert prices.call_cost("claude-4.5-sonnet", tokens, datetime(2026, 10, 1, tzinfo=UTC)) == (
        Decimal(10 * 3 + 10 * 15) / 1_000_000
    )


# ---- realism, asserted on the files themselves ------------------------------------------------


def test_every_realism_item_is_recorded(corpus: tuple[Path, Truth]) -> None:
    _, truth = corpus
    missing = [item for item in REALISM_ITEMS if not truth.realism.get(item)]
    assert not missing
    for found in truth.realism.values():
        for ex in found:
            assert (corpus[0] / ex["path"]).exists()


def _claude_lines(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    out: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(root.glob("*/claude*/projects/**/*.jsonl")):
        out.extend((path, line) for line in _jsonl(path))
    return out


def test_claude_files(corpus: tuple[Path, Truth]) -> None:
    root, truth = corpus
    lines = _claude_lines(root)
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for _path, line in lines:
        if line.get("type") == "assistant" and "forkedFrom" not in line:
            msg = line["message"]
            real = msg["model"] != "<synthetic>"
            inline_sidechain = line["isSidechain"] and "agentId" not in line  # 1.x or /btw
            if real and not inline_sidechain:
                by_key[(msg["id"], line["requestId"])].append(line)
    multi = [v for v in by_key.values() if len(v) > 1]
    assert multi
    for group in multi:
        outs = [ln["message"]["usage"]["output_tokens"] for ln in group]
        assert outs == sorted(outs) and len(set(outs)) == len(outs)
        assert [ln["message"]["stop_reason"] is not None for ln in group] == [False] * (
            len(group) - 1
        ) + [True]
    # Subagent files, with meta and the parent's sessionId.
    subs = list(root.glob("*/claude/projects/*/*/subagents/agent-*.jsonl"))
    assert subs
    for sub in subs:
        meta = orjson.loads(sub.with_name(sub.name.replace(".jsonl", ".meta.json")).read_bytes())
        assert meta["agentType"] == "general-purpose"
        for line in _jsonl(sub):
            assert line["isSidechain"] is True and line["agentId"] == sub.stem[len("agent-") :]
            assert line["sessionId"] == sub.parent.parent.name
    # Subagent ids are short and not globally unique: one id appears in two sessions.
    sessions_by_agent: dict[str, set[str]] = defaultdict(set)
    for sub in subs:
        sessions_by_agent[sub.stem].add(sub.parent.parent.name)
    assert any(len(s) > 1 for s in sessions_by_agent.values())
    # 1.x: inline sidechain lines, unsplit cache writes.
    old = [ln for _, ln in lines if ln.get("version", "").startswith("1.")]
    assert any(ln["isSidechain"] and "agentId" not in ln for ln in old)
    old_usage = [ln["message"]["usage"] for ln in old if ln["type"] == "assistant"]
    assert old_usage and all("cache_creation" not in u for u in old_usage)
    # 2.x writes: mostly 1h.
    w1 = w5 = 0
    for _, ln in lines:
        cc = (
            ln.get("message", {}).get("usage", {}).get("cache_creation")
            if ln["type"] == "assistant"
            else None
        )
        if cc:
            w1 += cc["ephemeral_1h_input_tokens"]
            w5 += cc["ephemeral_5m_input_tokens"]
    assert w1 > 3 * w5 > 0
    # Fork: copies keep message.id/requestId/usage, point at the original.
    forked = [ln for _, ln in lines if "forkedFrom" in ln and ln["type"] == "assistant"]
    assert forked
    for ln in forked:
        assert (ln["message"]["id"], ln["requestId"]) in by_key
        assert ln["forkedFrom"]["sessionId"] != ln["sessionId"]
    # /btw: a sidechain line with a parent's message.id under a new requestId.
    main_ids = {mid: rid for (mid, rid), v in by_key.items() if not v[0]["isSidechain"]}
    replays = [
        ln
        for _, ln in lines
        if ln["type"] == "assistant"
        and ln["isSidechain"]
        and "agentId" not in ln
        and ln["message"]["id"] in main_ids
        and ln["requestId"] != main_ids[ln["message"]["id"]]
    ]
    assert replays
    # Synthetic lines, exact wordings.
    texts = [
        ln["message"]["content"][0]["text"]
        for _, ln in lines
        if ln["type"] == "assistant" and ln["message"]["model"] == "<synthetic>"
    ]
    assert len(texts) == truth.counts["synthetic_lines"]
    assert any(
        re.fullmatch(
            r"You've hit your session limit · resets \d{1,2}(:\d\d)?[ap]m \([A-Za-z_/]+\)", t
        )
        for t in texts
    )
    assert any(
        re.fullmatch(
            r"You've hit your weekly limit · resets [A-Z][a-z]{2} \d{1,2} at"
            r" \d{1,2}(:\d\d)?[ap]m \([A-Za-z_/]+\)",
            t,
        )
        for t in texts
    )
    assert "API Error: Rate limit reached" in texts
    assert "No response requested." in texts


def test_codex_files(corpus: tuple[Path, Truth]) -> None:
    root, _ = corpus
    zst = list(root.glob("*/codex/sessions/**/*.jsonl.zst"))
    assert zst
    for z in zst:
        assert not z.with_name(z.name[: -len(".zst")]).exists()
        assert _jsonl(z)[0]["type"] == "session_meta"
    assert list(root.glob("*/codex/archived_sessions/rollout-*.jsonl"))
    files = [*root.glob("*/codex/**/*.jsonl"), *zst]
    seen: dict[str, bool] = defaultdict(bool)
    for path in files:
        rows = _jsonl(path)
        tcs = [
            r["payload"]
            for r in rows
            if r["type"] == "event_msg" and r["payload"]["type"] == "token_count"
        ]
        seen["info_null"] |= bool(tcs) and tcs[0]["info"] is None
        seen["reemit"] |= any(
            a["info"]
            and b["info"]
            and a["info"]["total_token_usage"] == b["info"]["total_token_usage"]
            for a, b in zip(tcs, tcs[1:], strict=False)
        )
        records = [r for r in rows if r["type"] == "token_usage_record"]
        if records:
            seen["records"] = True
            ids = {r["payload"]["response_id"] for r in records}
            assert len(ids) == len(records)
            for r in rows:
                if r["type"] == "compacted" and "latest_token_usage_record" in r["payload"]:
                    # A snapshot copy of a record already in the file: never a call.
                    assert r["payload"]["latest_token_usage_record"]["response_id"] in ids
                    seen["compacted_copy"] = True
        metas = [r for r in rows if r["type"] == "session_meta"]
        if len(metas) > 1:
            # Child: own meta, then the parent's, then a burst of copied token_counts.
            assert (
                rows[1]["type"] == "session_meta"
                and metas[1]["payload"]["id"] != metas[0]["payload"]["id"]
            )
            burst = []
            for r in rows[2:]:
                if r["type"] != "event_msg":
                    break
                burst.append(r)
            assert burst and all(r["payload"]["type"] == "token_count" for r in burst)
            stamps = {r["timestamp"][:19] for r in burst}
            seen["multi_second_burst"] |= len(stamps) > 1
            seen["child"] = True
        for tc in tcs:
            rl = tc.get("rate_limits")
            if rl and rl["secondary"] is None:
                assert rl["primary"]["window_minutes"] == 10080
                seen["weekly_primary"] = True
            elif rl:
                assert (rl["primary"]["window_minutes"], rl["secondary"]["window_minutes"]) == (
                    300,
                    10080,
                )
        for r in rows:
            p = r["payload"]
            if r["type"] == "event_msg" and p["type"] == "task_complete" and p.get("error"):
                assert p["error"]["codex_error_info"] == "usage_limit_exceeded"
                seen["usage_limit"] = True
            if r["type"] == "token_count" or (
                r["type"] == "event_msg" and p["type"] == "token_count" and p["info"]
            ):
                last = p["info"]["last_token_usage"]
                assert last["cached_input_tokens"] <= last["input_tokens"]
                assert last["reasoning_output_tokens"] <= last["output_tokens"]
    assert all(
        seen[k]
        for k in (
            "info_null",
            "reemit",
            "records",
            "child",
            "multi_second_burst",
            "weekly_primary",
            "usage_limit",
            "compacted_copy",
        )
    ), seen


def test_gemini_opencode_cursor_files(corpus: tuple[Path, Truth]) -> None:
    root, _ = corpus
    chats = list(root.glob("*/gemini/tmp/*/chats/session-*.jsonl"))
    assert chats and list(root.glob("*/gemini/tmp/*/chats/*/*.jsonl"))
    ids: dict[str, int] = defaultdict(int)
    rewinds = 0
    for path in chats:
        for rec in _jsonl(path):
            if rec.get("type") == "gemini":
                ids[rec["id"]] += 1
                if "tokens" in rec:
                    assert rec["tokens"]["cached"] <= rec["tokens"]["input"]
            rewinds += "$rewindTo" in rec
    assert max(ids.values()) >= 3 and rewinds >= 1
    db = sqlite3.connect(next(root.glob("spark01/opencode/opencode.db")))
    providers = {
        r[0]
        for r in db.execute(
            "select json_extract(data,'$.providerID') from message"
            " where json_extract(data,'$.role')='assistant'"
        )
    }
    assert {"anthropic", "deepseek", "zai", "local"} <= providers
    assert db.execute("select count(*) from session where parent_id is not null").fetchone()[0] >= 1
    under = 0
    for mid, data in db.execute(
        "select id, data from message where json_extract(data,'$.role')='assistant'"
    ):
        steps = [
            orjson.loads(d)["tokens"]
            for (d,) in db.execute(
                "select data from part"
                " where message_id=? and json_extract(data,'$.type')='step-finish'",
                (mid,),
            )
        ]
        msg_tokens = orjson.loads(data)["tokens"]
        assert msg_tokens == steps[-1]  # the message keeps only the last step
        under += len(steps) > 1
    assert under > 0
    with open(next(root.glob("spark01/cursor/usage.csv")), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "Date",
        "Kind",
        "Model",
        "Max Mode",
        "Input (w/ Cache Write)",
        "Input (w/o Cache Write)",
        "Cache Read",
        "Output Tokens",
        "Total Tokens",
        "Cost",
    ]
    for row in rows:
        parts = ("Input (w/ Cache Write)", "Input (w/o Cache Write)", "Cache Read", "Output Tokens")
        assert int(row["Total Tokens"]) == sum(int(row[k]) for k in parts)
    assert any(row["Cost"] == "Included" for row in rows)


def test_every_line_parses_except_the_recorded_problems(corpus: tuple[Path, Truth]) -> None:
    root, truth = corpus
    found = []
    for path in sorted(root.glob("*/**/*.jsonl")):
        data = path.read_bytes()
        chunks = data.split(b"\n")
        for i, raw in enumerate(chunks[:-1], start=1):
            try:
                orjson.loads(raw)
            except orjson.JSONDecodeError:
                found.append((path.relative_to(root).as_posix(), i, "garbage_line"))
        if chunks[-1]:
            found.append((path.relative_to(root).as_posix(), len(chunks), "torn_tail"))
    expected = [(p["path"], p["line"], p["kind"]) for p in truth.problems]
    assert sorted(found) == sorted(expected)
    assert {p[0].split("/")[1] for p in expected} == {"claude", "codex"}
    for path in root.glob("*/claude/projects/*/*/subagents/*.meta.json"):
        orjson.loads(path.read_bytes())
    orjson.loads(next(root.glob("*/gemini/projects.json")).read_bytes())


# ---- an independent minimal reader must land on the truth, group by group ---------------------


Groups = dict[GroupKey, list[Tokens]]


def _add(groups: Groups, key: GroupKey, tokens: Tokens) -> None:
    groups.setdefault(key, []).append(tokens)


def _read_claude(root: Path, groups: Groups) -> None:
    kept: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for path, line in _claude_lines(root):
        if line.get("type") != "assistant" or line["message"]["model"] == "<synthetic>":
            continue
        key = (line["message"]["id"], line["requestId"])
        old = kept.get(key)
        if (
            old is None
            or line["message"]["usage"]["output_tokens"]
            > old[1]["message"]["usage"]["output_tokens"]
        ):
            profile = path.relative_to(root).parts[1]
            kept[key] = (profile, line)
    main_ids = {mid for (mid, _), (_, ln) in kept.items() if not ln["isSidechain"]}
    for (mid, _), (profile, ln) in kept.items():
        if ln["isSidechain"] and "agentId" not in ln and mid in main_ids:
            continue  # /btw replay of a parent message: the parent wins
        u = ln["message"]["usage"]
        cc = u.get("cache_creation")
        w5, w1 = (
            (cc["ephemeral_5m_input_tokens"], cc["ephemeral_1h_input_tokens"])
            if cc
            else (u["cache_creation_input_tokens"], 0)
        )
        web = u.get("server_tool_use", {}).get("web_search_requests", 0)
        tokens = Tokens(
            u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"], w5, w1, 0, web
        )
        session = ln.get("forkedFrom", {}).get("sessionId", ln["sessionId"])
        role = "subagent" if ln["isSidechain"] else "main"
        _add(
            groups,
            GroupKey(
                _MACHINE_BY_SESSION[session],
                profile,
                "claude-code",
                session,
                ln["message"]["model"],
                _day(ln["timestamp"]),
                role,
            ),
            tokens,
        )


_MACHINE_BY_SESSION: dict[str, str] = {}  # Claude session id -> machine (from file paths)


def _read_codex(root: Path, groups: Groups) -> None:
    seen_records: set[tuple[str, str]] = set()
    for path in sorted([*root.glob("*/codex/**/*.jsonl"), *root.glob("*/codex/**/*.jsonl.zst")]):
        machine = path.relative_to(root).parts[0]
        rows = _jsonl(path)
        meta = rows[0]["payload"]
        own = meta["id"]
        role = "subagent" if isinstance(meta["source"], dict) else "main"
        model = ""
        records = [r for r in rows if r["type"] == "token_usage_record"]
        own_started = False
        prev = None
        for r in rows:
            if r["type"] == "turn_context":
                model = r["payload"]["model"]
                own_started = True
            p = r["payload"]
            if records:
                if r["type"] == "token_usage_record" and p["thread_id"] == own:
                    key = (p["thread_id"], p["response_id"])
                    if key not in seen_records:
                        seen_records.add(key)
                        _add(
                            groups,
                            GroupKey(
                                machine,
                                "codex",
                                "codex",
                                own,
                                p["attribution"]["model"],
                                _day(r["timestamp"]),
                                role,
                            ),
                            _codex_tokens(p["usage"]),
                        )
                continue
            if r["type"] != "event_msg" or p["type"] != "token_count" or not p["info"]:
                continue
            total = p["info"]["total_token_usage"]
            if not own_started:
                prev = total  # replayed history: the baseline, not a call
                continue
            if total == prev:
                continue  # a rate-limit refresh
            prev = total
            _add(
                groups,
                GroupKey(machine, "codex", "codex", own, model, _day(r["timestamp"]), role),
                _codex_tokens(p["info"]["last_token_usage"]),
            )


def _codex_tokens(u: dict[str, int]) -> Tokens:
    return Tokens(
        input=u["input_tokens"] - u["cached_input_tokens"],
        output=u["output_tokens"] - u["reasoning_output_tokens"],
        cache_read=u["cached_input_tokens"],
        reasoning=u["reasoning_output_tokens"],
    )


def _read_gemini(root: Path, groups: Groups) -> None:
    for path in sorted(root.glob("*/gemini/tmp/*/chats/**/*.jsonl")):
        machine = path.relative_to(root).parts[0]
        rows = _jsonl(path)
        meta = rows[0]
        last: dict[str, dict[str, Any]] = {}
        for rec in rows[1:]:
            if rec.get("type") == "gemini":
                last[rec["id"]] = rec  # last record per id wins; $rewindTo does not unbill
        role = "subagent" if meta["kind"] == "subagent" else "main"
        for rec in last.values():
            t = rec["tokens"]
            tokens = Tokens(
                input=t["input"] - t["cached"],
                output=t["output"],
                cache_read=t["cached"],
                reasoning=t["thoughts"],
            )
            _add(
                groups,
                GroupKey(
                    machine,
                    "gemini",
                    "gemini",
                    meta["sessionId"],
                    rec["model"],
                    _day(rec["timestamp"]),
                    role,
                ),
                tokens,
            )


def _read_opencode(root: Path, groups: Groups) -> None:
    for path in sorted(root.glob("*/opencode/opencode.db")):
        machine = path.relative_to(root).parts[0]
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        query = (
            "select p.data, p.time_created, m.data, s.id, s.parent_id from part p"
            " join message m on m.id = p.message_id join session s on s.id = p.session_id"
            " where json_extract(p.data, '$.type') = 'step-finish'"
        )
        for pdata, created, mdata, sid, parent in db.execute(query):
            t = orjson.loads(pdata)["tokens"]
            model = orjson.loads(mdata)["modelID"]
            day = datetime.fromtimestamp(created / 1000, UTC).strftime("%Y-%m-%d")
            tokens = Tokens(
                input=t["input"],
                output=t["output"],
                reasoning=t["reasoning"],
                cache_read=t["cache"]["read"],
                cache_write_5m=t["cache"]["write"],
            )
            _add(
                groups,
                GroupKey(
                    machine,
                    "opencode",
                    "opencode",
                    sid,
                    model,
                    day,
                    "subagent" if parent else "main",
                ),
                tokens,
            )


def _read_cursor(root: Path, groups: Groups) -> None:
    for path in sorted(root.glob("*/cursor/usage.csv")):
        machine = path.relative_to(root).parts[0]
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                tokens = Tokens(
                    input=int(row["Input (w/o Cache Write)"]),
                    output=int(row["Output Tokens"]),
                    cache_read=int(row["Cache Read"]),
                    cache_write_5m=int(row["Input (w/ Cache Write)"]),
                )
                _add(
                    groups,
                    GroupKey(
                        machine, "cursor", "cursor", "", row["Model"], _day(row["Date"]), "main"
                    ),
                    tokens,
                )


def test_reference_reader_lands_on_truth(corpus: tuple[Path, Truth]) -> None:
    root, truth = corpus
    for path in root.glob("*/claude*/projects/*/*.jsonl"):
        _MACHINE_BY_SESSION[path.stem] = path.relative_to(root).parts[0]
    groups: Groups = {}
    _read_claude(root, groups)
    _read_codex(root, groups)
    _read_gemini(root, groups)
    _read_opencode(root, groups)
    _read_cursor(root, groups)
    mine = {k: (len(v), sum(v, Tokens())) for k, v in groups.items()}
    theirs = {g.key: (g.calls, g.tokens) for g in truth.groups}
    assert set(mine) == set(theirs)
    for key, value in theirs.items():
        assert mine[key] == value, key
    # And the money, re-priced from the reader's own totals.
    # And the money: the reader's calls priced one by one (the cliff is per call) add up to
    # each group's exact cost.
    for g in truth.groups:
        day = datetime.strptime(g.key.day, "%Y-%m-%d").replace(tzinfo=UTC)
        costs = [prices.call_cost(g.key.model, t, day) for t in groups[g.key]]
        if g.cost is None:
            assert all(c is None for c in costs)
        else:
            assert sum((c for c in costs if c is not None), Decimal(0)) == g.cost


# ---- live use: writers append real lines one call at a time --------------------------------


def test_writers_append_one_call_at_a_time(tmp_path: Path) -> None:
    rng = random.Random(5)
    at = datetime(2026, 10, 6, 9, 0, tzinfo=UTC)
    path = tmp_path / "projects" / "-home-dev-x" / "s.jsonl"
    writer = claude.ClaudeSessionWriter.open(
        path, session_id="s", cwd="/home/dev/x", version="2.1.140", git_branch="main", rng=rng
    )
    usage = claude.ClaudeUsage(
        input=5, output=300, cache_read=40_000, cache_write_5m=0, cache_write_1h=900
    )
    call = claude.ClaudeCall(at=at, model=claude.SONNET, usage=usage, thinking="hm", text="done")
    written = writer.write_call(call)
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]  # visible before close
    assert len(lines) == written.lines == 2
    assert [ln["message"]["usage"]["output_tokens"] for ln in lines][-1] == 300
    assert {ln["requestId"] for ln in lines} == {written.request_id}
    writer.write_call(replace(call, at=after(at, 60)))
    assert len(path.read_bytes().splitlines()) == 4
    writer.close()

    cpath = tmp_path / "rollout.jsonl"
    meta = codex.session_meta(thread_id="t1", at=at, cwd="/home/dev/x", records=True)
    cw = codex.CodexRolloutWriter.open(cpath, meta=meta, at=at, rng=rng, records=True)
    cw.write_turn_context(at, model=codex.GPT5, effort="high", cwd="/home/dev/x")
    cw.write_call(
        codex.CodexCall(at=at, usage=codex.CodexUsage(1000, 512, 200, 80)),
        rate_limits=None,
        cwd="/x",
    )
    kinds = [orjson.loads(x)["type"] for x in cpath.read_bytes().splitlines()]
    assert kinds == ["session_meta", "turn_context", "event_msg", "token_usage_record"]
    cw.close()


def test_session_drivers_step_with_lines_on_disk(tmp_path: Path) -> None:
    env = SessionEnv(
        machine="m",
        tz=ZoneInfo("UTC"),
        profile="claude",
        home=tmp_path / "claude",
        rng=random.Random(1),
        pool=PayloadPool(1, files=8, outputs=8),
        truth=TruthBuilder(tmp_path),
        counter=ByteCounter(),
        flush_each=True,
    )
    project = Project("/home/dev/x", "main", "git@example.com:x.git", "x")
    spec = claude.ClaudeSessionSpec(
        start=datetime(2026, 10, 6, 9, 0, tzinfo=UTC), project=project, turns=2
    )
    steps = claude.iter_session(env, spec)
    seen = []
    for at in steps:
        seen.append(at)
        files = list((tmp_path / "claude" / "projects").glob("*/*.jsonl"))
        last = orjson.loads(files[0].read_bytes().splitlines()[-1])
        assert last["message"]["stop_reason"] is not None  # the call just yielded is complete
        assert last["timestamp"] == iso_ms(at)
    assert seen == sorted(seen) and len(seen) == env.truth.counts["calls"]

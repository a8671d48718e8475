"""The truth ledger: what the generated logs really contain, call by call, summed by group.

Every real (billed, non-duplicate) call is added once, in normalised disjoint buckets
(shared.events.Tokens) with its API-equivalent cost from `prices`. Copies (Claude forks and
`/btw` replays, Codex replay bursts, Gemini re-emits, OpenCode's last-step message tokens) are
never added. Calls are summed per group key (machine, profile, agent, session_id, model, UTC day,
role) so memory stays bounded whatever the corpus size.

truth.json shape (all money as exact decimal strings, never floats):

    {"format": "fleetmeter-sim-truth/1",
     "params": {...generation parameters...},
     "prices": {model: {...per-MTok rates as used...}},
     "totals": {"calls", "tokens": {bucket: int}, "api_equivalent_usd", "unknown_price_calls",
                "unknown_price_tokens": {bucket: int}},
     "counts": {"synthetic_lines", "rate_limit_hits", "parse_problems", "torn_tails", ...},
     "groups": [{"machine", "profile", "agent", "session_id", "model", "day", "role",
                 "calls", "tokens": {bucket: int}, "api_equivalent_usd": str | null}, ...],
     "rate_limit_hits": [{"machine", "profile", "agent", "session_id", "ts", "window",
                          "resets_at", "message", "path"}, ...],
     "problems": [{"path", "line", "kind", "detail"}, ...],
     "realism": {item: [{"path", ...detail}, ...]},
     "files": {"count", "bytes"}}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from shared.events import Tokens

from . import prices
from .common import iso_ms, utc_day

FORMAT = "fleetmeter-sim-truth/1"
BUCKETS = (
    "input",
    "output",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "reasoning",
    "web_search_requests",
)
KEY_FIELDS = ("machine", "profile", "agent", "session_id", "model", "day", "role")
EXAMPLES_PER_ITEM = 12


@dataclass(frozen=True, slots=True, order=True)
class GroupKey:
    machine: str
    profile: str  # the agent home's dir name under the machine (claude, claude-max2, codex, …)
    agent: str  # shared.events.Agent value
    session_id: str  # as the agent logs it ("" for Cursor rows, which have no session)
    model: str  # as logged
    day: str  # UTC date of the call, YYYY-MM-DD
    role: str  # shared.events.Role value


@dataclass(slots=True)
class Total:
    """A sum of calls. `cost` covers priced calls only; `unknown_calls` had no list price."""

    calls: int = 0
    tokens: Tokens = field(default_factory=Tokens)
    cost: Decimal = field(default_factory=Decimal)
    unknown_calls: int = 0
    unknown_tokens: Tokens = field(default_factory=Tokens)

    def add(self, calls: int, tokens: Tokens, cost: Decimal | None) -> None:
        self.calls += calls
        self.tokens = self.tokens + tokens
        if cost is None:
            self.unknown_calls += calls
            self.unknown_tokens = self.unknown_tokens + tokens
        else:
            self.cost += cost


@dataclass(frozen=True, slots=True)
class TruthGroup:
    key: GroupKey
    calls: int
    tokens: Tokens
    cost: Decimal | None  # None: the model has no list price (every call of the group)

    def field(self, name: str) -> str:
        value: str = getattr(self.key, name)
        return value


def tokens_to_json(tokens: Tokens) -> dict[str, int]:
    return {name: getattr(tokens, name) for name in BUCKETS}


def tokens_from_json(data: dict[str, int]) -> Tokens:
    return Tokens(**{name: int(data.get(name, 0)) for name in BUCKETS})


def money(value: Decimal) -> str:
    return format(value, "f")


class TruthBuilder:
    """Collects truth while one machine (or the whole fleet) is generated. Picklable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.groups: dict[GroupKey, Total] = {}
        self.counts: Counter[str] = Counter()
        self.rate_limit_hits: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.realism: dict[str, list[dict[str, Any]]] = {}

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def call(
        self,
        *,
        machine: str,
        profile: str,
        agent: str,
        session_id: str,
        model: str,
        role: str,
        at: datetime,
        tokens: Tokens,
    ) -> Decimal | None:
        """Add one real call; returns its cost (None when the model has no list price)."""
        cost = prices.call_cost(model, tokens, at)
        key = GroupKey(machine, profile, agent, session_id, model, utc_day(at), role)
        total = self.groups.get(key)
        if total is None:
            total = self.groups[key] = Total()
        total.add(1, tokens, cost)
        self.counts["calls"] += 1
        return cost

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def rate_limit_hit(
        self,
        *,
        machine: str,
        profile: str,
        agent: str,
        session_id: str,
        at: datetime,
        window: str,
        resets_at: datetime | None,
        message: str,
        path: Path,
    ) -> None:
        self.counts["rate_limit_hits"] += 1
        self.rate_limit_hits.append(
            {
                "machine": machine,
                "profile": profile,
                "agent": agent,
                "session_id": session_id,
                "ts": iso_ms(at),
                "window": window,
                "resets_at": None if resets_at is None else int(resets_at.timestamp()),
                "message": message,
                "path": self.rel(path),
            }
        )

    def problem(self, path: Path, line: int, kind: str, detail: str, **extra: Any) -> None:
        """`garbage_line`: a complete line that is not JSON (the scan must report it and keep
        the rest). `torn_tail`: an unterminated last line (a reader holds it until its LF
        arrives; it is not a call). `intact_calls` in `extra`: the file's calls in truth."""
        self.counts["parse_problems" if kind == "garbage_line" else "torn_tails"] += 1
        entry = {"path": self.rel(path), "line": line, "kind": kind, "detail": detail}
        self.problems.append({**entry, **extra})

    def example(self, item: str, path: Path, **detail: Any) -> None:
        """Record where a realism item occurs (first few occurrences only)."""
        self.counts[f"realism.{item}"] += 1
        found = self.realism.setdefault(item, [])
        if len(found) < EXAMPLES_PER_ITEM:
            found.append({"path": self.rel(path), **detail})

    def merge(self, other: TruthBuilder) -> None:
        for key, total in other.groups.items():
            mine = self.groups.get(key)
            if mine is None:
                self.groups[key] = total
            else:
                mine.calls += total.calls
                mine.tokens = mine.tokens + total.tokens
                mine.cost += total.cost
                mine.unknown_calls += total.unknown_calls
                mine.unknown_tokens = mine.unknown_tokens + total.unknown_tokens
        self.counts.update(other.counts)
        self.rate_limit_hits.extend(other.rate_limit_hits)
        self.problems.extend(other.problems)
        for item, found in other.realism.items():
            mine_found = self.realism.setdefault(item, [])
            mine_found.extend(found[: max(0, EXAMPLES_PER_ITEM - len(mine_found))])

    def build(self, params: dict[str, Any], files: dict[str, int]) -> Truth:
        groups = [
            TruthGroup(key, t.calls, t.tokens, None if t.unknown_calls else t.cost)
            for key, t in sorted(self.groups.items())
        ]
        return Truth(
            params=params,
            prices=prices.price_table(),
            groups=groups,
            counts=dict(sorted(self.counts.items())),
            rate_limit_hits=sorted(self.rate_limit_hits, key=lambda h: (h["machine"], h["ts"])),
            problems=sorted(self.problems, key=lambda p: (p["path"], p["line"])),
            realism={k: self.realism[k] for k in sorted(self.realism)},
            files=files,
        )


@dataclass(slots=True)
class Truth:
    params: dict[str, Any]
    prices: dict[str, Any]
    groups: list[TruthGroup]
    counts: dict[str, int]
    rate_limit_hits: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    realism: dict[str, list[dict[str, Any]]]
    files: dict[str, int]

    # ---- queries -------------------------------------------------------------------------

    def select(self, **filters: str) -> Iterable[TruthGroup]:
        unknown = set(filters) - set(KEY_FIELDS)
        if unknown:
            raise KeyError(f"not a truth key: {sorted(unknown)}; keys are {KEY_FIELDS}")
        for g in self.groups:
            if all(g.field(k) == v for k, v in filters.items()):
                yield g

    def total(self, **filters: str) -> Total:
        """Sum of the groups matching every filter, e.g. total(agent="codex", day="2026-10-05")."""
        out = Total()
        for g in self.select(**filters):
            out.add(g.calls, g.tokens, g.cost)
        return out

    def total_by(self, *keys: str, **filters: str) -> dict[tuple[str, ...], Total]:
        """Totals per combination of `keys`, e.g. total_by("machine", "agent")."""
        bad = set(keys) - set(KEY_FIELDS)
        if bad:
            raise KeyError(f"not a truth key: {sorted(bad)}; keys are {KEY_FIELDS}")
        out: dict[tuple[str, ...], Total] = {}
        for g in self.select(**filters):
            k = tuple(g.field(name) for name in keys)
            out.setdefault(k, Total()).add(g.calls, g.tokens, g.cost)
        return dict(sorted(out.items()))

    # ---- (de)serialisation ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        grand = self.total()
        return {
            "format": FORMAT,
            "params": self.params,
            "prices": self.prices,
            "totals": {
                "calls": grand.calls,
                "tokens": tokens_to_json(grand.tokens),
                "api_equivalent_usd": money(grand.cost),
                "unknown_price_calls": grand.unknown_calls,
                "unknown_price_tokens": tokens_to_json(grand.unknown_tokens),
            },
            "counts": self.counts,
            "groups": [
                {
                    **{name: g.field(name) for name in KEY_FIELDS},
                    "calls": g.calls,
                    "tokens": tokens_to_json(g.tokens),
                    "api_equivalent_usd": None if g.cost is None else money(g.cost),
                }
                for g in self.groups
            ],
            "rate_limit_hits": self.rate_limit_hits,
            "problems": self.problems,
            "realism": self.realism,
            "files": self.files,
        }

    def save(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2) + b"\n")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Truth:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a fleetmeter truth file (format {data.get('format')!r})")
        groups = []
        for g in data["groups"]:
            cost = g["api_equivalent_usd"]
            groups.append(
                TruthGroup(
                    GroupKey(*(str(g[name]) for name in KEY_FIELDS)),
                    int(g["calls"]),
                    tokens_from_json(g["tokens"]),
                    None if cost is None else Decimal(cost),
                )
            )
        return cls(
            params=data["params"],
            prices=data["prices"],
            groups=groups,
            counts={k: int(v) for k, v in data["counts"].items()},
            rate_limit_hits=data["rate_limit_hits"],
            problems=data["problems"],
            realism=data["realism"],
            files=data["files"],
        )

    @classmethod
    def load(cls, path: Path) -> Truth:
        result: Truth = cls.from_json(orjson.loads(path.read_bytes()))
        return result


assert tuple(f.name for f in fields(GroupKey)) == KEY_FIELDS

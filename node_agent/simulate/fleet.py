"""The fleet plan: machines, agent homes, sessions; and the run that writes them with truth.

Layout under ROOT, per machine (spark01, spark02, …):

    claude/projects/<slug>/<session>.jsonl (+ <session>/subagents/agent-<id>.jsonl, .meta.json)
    claude-max2/projects/…            a second Claude profile (spark01, spark04, …)
    codex/sessions/YYYY/MM/DD/rollout-…jsonl[.zst], codex/archived_sessions/rollout-…jsonl
    gemini/tmp/<slug>/chats/session-…jsonl (+ chats/<session>/<sub>.jsonl), gemini/projects.json
    opencode/opencode.db
    cursor/usage.csv

Each machine is generated independently from (seed, machine name), so machines can be written
in parallel processes and the bytes do not depend on the number of processes. Machine spark01
carries every realism item with fixed parameters ("specials"); every machine then gets a
seeded baseline of ordinary sessions (with the same quirks at modest rates), and, when a byte
target is set, more ordinary sessions until its share of the target is on disk.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ..workers import worker_context
from . import claude, codex, cursor, gemini, opencode
from .common import ByteCounter, child_rng, ms, sub_seed
from .env import Project, SessionEnv
from .payloads import PayloadPool
from .truth import Truth, TruthBuilder

DEFAULT_START = datetime(2026, 10, 5, tzinfo=UTC)
ZONES = ("Europe/Berlin", "America/New_York", "UTC", "Asia/Seoul", "Europe/Lisbon", "Europe/Madrid")
PROJECTS = (
    Project("/home/dev/acme-api", "feat/billing", "git@github.com:acme/acme-api.git", "acme-api"),
    Project("/home/dev/web_console", "main", "git@github.com:acme/web-console.git", "web_console"),
    Project("/home/dev/infra.tools", "main", "git@github.com:acme/infra-tools.git", "infra.tools"),
    Project(
        "/srv/work/data-pipeline",
        "develop",
        "https://github.com/acme/data-pipeline.git",
        "data-pipeline",
    ),
)
# Mean sessions per profile per day at scale 1.0.
RATES = {"claude": 3.0, "claude-max2": 1.5, "codex": 2.0, "gemini": 0.6, "opencode": 0.6}
CURSOR_ROWS_PER_DAY = 20.0
_LIMITS: tuple[claude.LimitKind, ...] = ("session", "weekly", "api_error")
FILLER_WEIGHTS = (("claude", 0.55), ("codex", 0.30), ("gemini", 0.08), ("opencode", 0.07))

# Every item here occurs in a default corpus (machines ≥ 2) and is listed in truth.realism.
REALISM_ITEMS = (
    "claude.content_block_lines",
    "claude.subagent_file",
    "claude.agent_id_reused",
    "claude.inline_sidechain_1x",
    "claude.cache_write_unsplit",
    "claude.cache_write_5m_only",
    "claude.cache_write_5m_and_1h",
    "claude.fork_copy",
    "claude.btw_sidechain_replay",
    "claude.synthetic_session_limit",
    "claude.synthetic_weekly_limit",
    "claude.synthetic_api_error",
    "claude.synthetic_no_response",
    "claude.long_context_sonnet",
    "claude.prompt_exactly_200k",
    "claude.over_200k_flat_priced",
    "claude.web_search",
    "codex.info_null_first",
    "codex.reemitted_token_count",
    "codex.records_era_file",
    "codex.subagent_replay_burst",
    "codex.fork_replay_burst",
    "codex.usage_limit_exceeded",
    "codex.weekly_in_primary",
    "codex.zst_rollout",
    "codex.archived_session",
    "codex.compacted",
    "gemini.message_reemitted",
    "gemini.rewind",
    "gemini.subagent_chat",
    "opencode.multi_step_message",
    "opencode.child_session",
    "opencode.provider_anthropic",
    "opencode.provider_deepseek",
    "opencode.provider_zai",
    "opencode.provider_local",
    "opencode.unknown_price_model",
    "cursor.csv_2025_11_header",
    "cursor.cost_label_included",
)


@dataclass(frozen=True, slots=True)
class FleetParams:
    seed: int
    machines: int
    start: datetime
    days: int
    scale: float
    target_bytes: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "machines": self.machines,
            "start": self.start.isoformat(),
            "days": self.days,
            "scale": self.scale,
            "target_bytes": self.target_bytes,
        }


@dataclass(frozen=True, slots=True)
class MachinePlan:
    index: int
    name: str
    tz: ZoneInfo
    claude_profiles: tuple[str, ...]
    claude_1x: bool  # an outdated Claude Code install (1.x transcripts)
    codex_plan: codex.CodexPlan
    codex_upgrade_day: int  # Codex CLI upgraded to a records-era version on this day


def machine_plan(params: FleetParams, index: int) -> MachinePlan:
    profiles = ("claude", "claude-max2") if index % 3 == 0 else ("claude",)
    weekly = params.machines > 1 and index == params.machines - 1
    plan = codex.CodexPlan("free", True) if weekly else codex.CodexPlan(("plus", "pro")[index % 2])
    return MachinePlan(
        index=index,
        name=f"spark{index + 1:02d}",
        tz=ZoneInfo(ZONES[index % len(ZONES)]),
        claude_profiles=profiles,
        claude_1x=index % 4 == 2,
        codex_plan=plan,
        codex_upgrade_day=max(1, params.days // 2) if index % 2 == 0 else 0,
    )


class _Machine:
    def __init__(self, root: Path, params: FleetParams, index: int, pool: PayloadPool) -> None:
        self.root = root
        self.params = params
        self.plan = machine_plan(params, index)
        self.dir = root / self.plan.name
        self.pool = pool
        self.truth = TruthBuilder(root)
        self.counter = ByteCounter()
        self.store: opencode.OpenCodeStore | None = None
        self.sessions = 0
        self.last_claude: dict[str, claude.ClaudeSessionResult] = {}
        self.projects: set[Project] = set()

    # -- helpers --------------------------------------------------------------------------

    def env(self, profile: str, *key: object) -> SessionEnv:
        self.sessions += 1
        return SessionEnv(
            machine=self.plan.name,
            tz=self.plan.tz,
            profile=profile,
            home=self.dir / profile,
            rng=child_rng(self.params.seed, self.plan.name, profile, *key),
            pool=self.pool,
            truth=self.truth,
            counter=self.counter,
        )

    def opencode_store(self) -> opencode.OpenCodeStore:
        if self.store is None:
            rng = child_rng(self.params.seed, self.plan.name, "opencode-ids")
            self.store = opencode.OpenCodeStore(self.dir / "opencode" / "opencode.db", rng)
        return self.store

    def clock(self, day: int, hour: float) -> datetime:
        """A fixed time of a window day (UTC)."""
        return ms(self.params.start + timedelta(days=day, hours=hour))

    def at(self, rng: random.Random, day: int) -> datetime:
        """A random working-hours time of a window day."""
        return self.clock(day, rng.uniform(6.0, 21.5))

    def bytes(self) -> int:
        extra = self.store.bytes_estimate if self.store is not None else 0
        return self.counter.total + extra

    def last_day(self) -> int:
        return self.params.days - 1

    # -- sessions ---------------------------------------------------------------------------

    def claude(
        self, profile: str, spec: claude.ClaudeSessionSpec, env: SessionEnv
    ) -> claude.ClaudeSessionResult:
        self.projects.add(spec.project)
        result = claude.run_session(env, spec)
        if result.forkable:
            self.last_claude[profile] = result
        return result

    def codex(self, spec: codex.CodexSessionSpec, env: SessionEnv) -> None:
        codex.run_session(env, spec)

    def gemini(self, spec: gemini.GeminiSessionSpec, env: SessionEnv) -> None:
        self.projects.add(spec.project)
        gemini.run_session(env, spec)

    def opencode(self, spec: opencode.OpenCodeSessionSpec, env: SessionEnv) -> None:
        opencode.run_session(env, self.opencode_store(), spec)

    # -- the plan ---------------------------------------------------------------------------

    def specials(self) -> None:
        """Every realism item once, with fixed parameters, on the first machine."""
        p, last = PROJECTS, self.last_day()
        day1 = min(1, last)
        agent_id = "a3f9c21"
        env = self.env("claude", "special", "long-context")
        lc = self.claude(
            "claude",
            claude.ClaudeSessionSpec(
                start=self.clock(0, 9.0),
                project=p[0],
                model=claude.SONNET,
                turns=3,
                subagents=1,
                btw_replay=True,
                context_limit=600_000,
                start_context=186_000,
                exact_200k=True,
                web_search=True,
                no_response_line=True,
                agent_id=agent_id,
            ),
            env,
        )
        env = self.env("claude", "special", "fork")
        self.claude(
            "claude",
            claude.ClaudeSessionSpec(
                start=lc.end + timedelta(minutes=25),
                project=p[0],
                model=claude.SONNET,
                turns=2,
                fork_of=claude.ForkSource(lc.path, lc.session_id),
                start_context=60_000,
            ),
            env,
        )
        env = self.env("claude", "special", "era-1x")
        self.claude(
            "claude",
            claude.ClaudeSessionSpec(
                start=self.clock(0, 13.0),
                project=p[1],
                model=claude.SONNET,
                turns=3,
                era="1.x",
                subagents=1,
            ),
            env,
        )
        env = self.env("claude", "special", "opus-over-200k")
        result = self.claude(
            "claude",
            claude.ClaudeSessionSpec(
                start=self.clock(day1, 10.0),
                project=p[2],
                model=claude.OPUS,
                turns=2,
                context_limit=600_000,
                start_context=205_000,
                limit="session",
                subagents=1,
                agent_id=agent_id,
            ),
            env,
        )
        self.truth.example("claude.agent_id_reused", result.path, agent_id=agent_id)
        env = self.env("claude", "special", "torn")
        self.claude(
            "claude",
            claude.ClaudeSessionSpec(
                start=self.clock(day1, 15.0),
                project=p[3],
                model=claude.HAIKU,
                turns=3,
                torn=True,
            ),
            env,
        )
        if "claude-max2" in self.plan.claude_profiles:
            for limit, day in ((_LIMITS[1], 0), (_LIMITS[2], day1)):
                env = self.env("claude-max2", "special", limit)
                self.claude(
                    "claude-max2",
                    claude.ClaudeSessionSpec(
                        start=self.clock(day, 17.0),
                        project=p[0],
                        model=claude.SONNET,
                        turns=2,
                        limit=limit,
                    ),
                    env,
                )

        cplan = self.plan.codex_plan
        codex_specials = (
            (
                "legacy-children",
                codex.CodexSessionSpec(
                    start=self.clock(0, 8.5),
                    project=p[0],
                    era="legacy",
                    plan=cplan,
                    children=2,
                    turns=3,
                ),
            ),
            (
                "records-fork",
                codex.CodexSessionSpec(
                    start=self.clock(last, 9.5),
                    project=p[1],
                    era="records",
                    plan=cplan,
                    children=1,
                    fork=True,
                    turns=3,
                    start_context=200_000,
                ),
            ),
            (
                "usage-limit",
                codex.CodexSessionSpec(
                    start=self.clock(last, 14.0),
                    project=p[2],
                    era="records",
                    plan=cplan,
                    usage_limit=True,
                    turns=2,
                ),
            ),
            (
                "compressed",
                codex.CodexSessionSpec(
                    start=self.clock(0, 11.0),
                    project=p[3],
                    era="legacy",
                    plan=cplan,
                    compress=True,
                    turns=2,
                    model=codex.GPT5,
                ),
            ),
            (
                "archived",
                codex.CodexSessionSpec(
                    start=self.clock(day1, 16.0),
                    project=p[0],
                    era="records",
                    plan=cplan,
                    archived=True,
                    turns=2,
                ),
            ),
            (
                "torn",
                codex.CodexSessionSpec(
                    start=self.clock(0, 18.0),
                    project=p[1],
                    era="legacy",
                    plan=cplan,
                    torn=True,
                    turns=3,
                ),
            ),
        )
        for key, cspec in codex_specials:
            self.codex(cspec, self.env("codex", "special", key))

        env = self.env("gemini", "special")
        self.gemini(
            gemini.GeminiSessionSpec(
                start=self.clock(0, 10.5), project=p[0], turns=3, rewind=True, subagent=True
            ),
            env,
        )
        for key, model, child in (
            ("anthropic", opencode.ANTHROPIC_SONNET, True),
            ("deepseek", opencode.DEEPSEEK_FLASH, True),
            ("glm", opencode.GLM, False),
            ("local", opencode.LOCAL, False),
        ):
            env = self.env("opencode", "special", key)
            self.opencode(
                opencode.OpenCodeSessionSpec(
                    start=self.at(env.rng, 0), project=p[1], model=model, turns=3, child=child
                ),
                env,
            )

    def ordinary(self, kind: str, day: int, env: SessionEnv) -> None:
        """One ordinary session of an agent kind: seeded, with the quirks at modest rates."""
        rng, plan, params = env.rng, self.plan, self.params
        project = rng.choice(PROJECTS)
        start = self.at(rng, day)
        if kind.startswith("claude"):
            model = rng.choices((claude.SONNET, claude.OPUS, claude.HAIKU), (55, 35, 10))[0]
            lc = model == claude.SONNET and rng.random() < 0.08
            limit: claude.LimitKind | None = None
            if rng.random() < 0.02:
                limit = rng.choices(_LIMITS, (60, 25, 15))[0]
            fork_src = self.last_claude.get(kind) if rng.random() < 0.04 else None
            spec = claude.ClaudeSessionSpec(
                start=start,
                project=project,
                model=model,
                turns=rng.randrange(2, 9),
                era="1.x" if plan.claude_1x and kind == "claude" else "2.x",
                subagents=rng.choice((1, 2)) if rng.random() < 0.3 else 0,
                btw_replay=rng.random() < 0.03,
                web_search=rng.random() < 0.05,
                context_limit=600_000 if lc else 160_000,
                start_context=rng.randrange(120_000, 190_000) if lc else 0,
                exact_200k=lc and rng.random() < 0.5,
                limit=limit,
                fork_of=None
                if fork_src is None
                else claude.ForkSource(fork_src.path, fork_src.session_id),
            )
            if fork_src is not None:
                spec = replace(
                    spec,
                    start=max(start, fork_src.end + timedelta(minutes=5)),
                    start_context=40_000,
                )
            self.claude(kind, spec, env)
        elif kind == "codex":
            self.codex(
                codex.CodexSessionSpec(
                    start=start,
                    project=project,
                    model=rng.choices((codex.GPT5_CODEX, codex.GPT5), (70, 30))[0],
                    turns=rng.randrange(2, 7),
                    era="legacy" if day < plan.codex_upgrade_day else "records",
                    plan=plan.codex_plan,
                    children=rng.choice((1, 2)) if rng.random() < 0.15 else 0,
                    fork=rng.random() < 0.04,
                    usage_limit=rng.random() < 0.02,
                    # The CLI compresses rollouts idle for 7 days or more.
                    compress=day <= params.days - 8,
                    archived=rng.random() < 0.05,
                ),
                env,
            )
        elif kind == "gemini":
            self.gemini(
                gemini.GeminiSessionSpec(
                    start=start,
                    project=project,
                    turns=rng.randrange(2, 7),
                    rewind=rng.random() < 0.05,
                    subagent=rng.random() < 0.1,
                ),
                env,
            )
        else:
            provider_model = rng.choices(
                (opencode.DEEPSEEK_FLASH, opencode.GLM, opencode.ANTHROPIC_SONNET, opencode.LOCAL),
                (40, 25, 30, 5),
            )[0]
            self.opencode(
                opencode.OpenCodeSessionSpec(
                    start=start,
                    project=project,
                    model=provider_model,
                    turns=rng.randrange(2, 6),
                    child=rng.random() < 0.15,
                ),
                env,
            )

    def run(self) -> TruthBuilder:
        params, plan = self.params, self.plan
        if plan.index == 0:
            self.specials()
        profiles = [*plan.claude_profiles, "codex", "gemini", "opencode"]
        for day in range(params.days):
            for profile in profiles:
                rng = child_rng(params.seed, plan.name, profile, "count", day)
                mean = RATES[profile] * params.scale
                for k in range(int(mean + rng.random())):
                    self.ordinary(profile, day, self.env(profile, "day", day, k))
        env = self.env("cursor", "rows")
        cursor.write_rows(
            env, params.start, params.days, CURSOR_ROWS_PER_DAY * max(params.scale, 0.1)
        )
        if params.target_bytes is not None:
            share = params.target_bytes // params.machines
            pick = child_rng(params.seed, plan.name, "filler")
            k = 0
            while self.bytes() < share:
                kind = pick.choices([k for k, _ in FILLER_WEIGHTS], [w for _, w in FILLER_WEIGHTS])[
                    0
                ]
                if kind == "claude":
                    kind = pick.choice(plan.claude_profiles)
                self.ordinary(kind, pick.randrange(params.days), self.env(kind, "filler", k))
                k += 1
        self.finish()
        return self.truth

    def finish(self) -> None:
        if self.store is not None:
            self.store.close()
        gem = self.dir / "gemini"
        projects = sorted(self.projects, key=lambda p: p.cwd)
        if gem.exists():
            (gem / "projects.json").write_bytes(
                orjson.dumps(
                    {"projects": {p.cwd: p.name for p in projects}}, option=orjson.OPT_INDENT_2
                )
            )
            for p in projects:
                marker = gem / "tmp" / p.name
                if marker.exists():
                    (marker / ".project_root").write_text(p.cwd)


def _generate_machine(root: Path, params: FleetParams, index: int) -> TruthBuilder:
    pool = PayloadPool(sub_seed(params.seed, "payloads"))
    return _Machine(root, params, index, pool).run()


def generate_fleet(
    root: Path,
    *,
    seed: int = 1,
    machines: int = 4,
    start: datetime = DEFAULT_START,
    days: int = 14,
    scale: float = 1.0,
    target_bytes: int | None = None,
    jobs: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Truth:
    """Write a simulated fleet's logs under `root` (which must be empty) and `root/truth.json`.

    `scale` multiplies the ordinary sessions per day; `target_bytes`, when given, is a minimum
    for the corpus size: each machine adds ordinary sessions until its share is on disk.
    """
    if machines < 1 or days < 1:
        raise ValueError("need at least one machine and one day")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty: generation appends, so it needs a fresh dir")
    params = FleetParams(seed, machines, start.astimezone(UTC), days, scale, target_bytes)
    workers = max(1, min(machines, jobs or os.cpu_count() or 1))
    total = TruthBuilder(root)
    if workers == 1:
        for i in range(machines):
            total.merge(_generate_machine(root, params, i))
            if progress:
                progress(f"machine {i + 1}/{machines} written")
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context()) as ex:
            futures = [ex.submit(_generate_machine, root, params, i) for i in range(machines)]
            for i, fut in enumerate(futures):
                total.merge(fut.result())
                if progress:
                    progress(f"machine {i + 1}/{machines} written")
    count = size = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            count += 1
            size += os.path.getsize(os.path.join(dirpath, name))
    truth = total.build(params.to_json(), {"count": count, "bytes": size})
    truth.save(root / "truth.json")
    return truth


__all__ = ["DEFAULT_START", "REALISM_ITEMS", "FleetParams", "generate_fleet"]

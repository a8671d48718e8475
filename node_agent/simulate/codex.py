"""Codex CLI rollouts (research/log-formats.md §2): a writer and a session driver.

Raw usage follows OpenAI semantics: `cached_input_tokens` ⊂ `input_tokens` and
`reasoning_output_tokens` ⊂ `output_tokens`; truth stores input − cached, output − reasoning,
reasoning separately. Per response the writer appends its response items, then an `event_msg`
`token_count` with the thread's cumulative `total_token_usage` and this response's
`last_token_usage`; newer CLIs (the "records" era) also append a `token_usage_record` for the
same response (one call, two records). Rate-limit refreshes re-emit `token_count` with unchanged
totals; a thread's first `token_count` has `info: null`.

A spawned or forked child rollout starts with its own `session_meta`, then the parent's
`session_meta`, then a burst of the parent's `token_count` rows re-stamped at fork time over a
few seconds (copies: they count nothing), then its own calls, whose cumulative totals continue
from the copied baseline.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson

from shared.events import Agent, Role, Tokens

from .common import LineSink, after, b62, drain, epoch_ms, hexid, iso_ms, ms, utc_day, uuid7
from .env import Project, SessionEnv
from .payloads import approx_tokens

GPT5 = "gpt-5"
GPT5_CODEX = "gpt-5-codex"
LEGACY_VERSION = "0.77.0"
RECORDS_VERSION = "0.160.0"
CONTEXT_WINDOW = 272_000
COMPACT_AT = 220_000


@dataclass(frozen=True, slots=True)
class CodexUsage:
    """Raw OpenAI-style usage: cached ⊂ input, reasoning ⊂ output."""

    input: int = 0
    cached: int = 0
    output: int = 0
    reasoning: int = 0

    def __add__(self, other: CodexUsage) -> CodexUsage:
        return CodexUsage(
            self.input + other.input,
            self.cached + other.cached,
            self.output + other.output,
            self.reasoning + other.reasoning,
        )

    def to_json(self, *, cache_write: bool = False) -> dict[str, int]:
        data = {"input_tokens": self.input, "cached_input_tokens": self.cached}
        if cache_write:
            data["cache_write_input_tokens"] = 0
        data.update(
            output_tokens=self.output,
            reasoning_output_tokens=self.reasoning,
            total_tokens=self.input + self.output,
        )
        return data

    def tokens(self) -> Tokens:
        return Tokens(
            input=self.input - self.cached,
            output=self.output - self.reasoning,
            cache_read=self.cached,
            reasoning=self.reasoning,
        )


@dataclass(frozen=True, slots=True)
class ShellCall:
    command: tuple[str, ...]
    output: str
    runtime_s: float = 1.0


@dataclass(frozen=True, slots=True)
class CodexCall:
    at: datetime  # the response starts streaming
    usage: CodexUsage
    duration_s: float = 6.0
    reasoning_blob: str | None = None
    summary: str | None = None
    message: str | None = None
    shells: tuple[ShellCall, ...] = ()
    response_id: str | None = None


@dataclass(slots=True)
class CodexWritten:
    response_id: str
    completed_at: datetime  # the token_count's timestamp: the call's time in truth
    call_ids: list[str] = field(default_factory=list)


def rollout_name(local_start: datetime, thread_id: str) -> str:
    """`rollout-YYYY-MM-DDThh-mm-ss-<uuid>.jsonl`, in the machine's LOCAL time."""
    return f"rollout-{local_start.strftime('%Y-%m-%dT%H-%M-%S')}-{thread_id}.jsonl"


class CodexRolloutWriter:
    """Appends one thread's rollout. Writes `session_meta` on creation."""

    def __init__(
        self,
        sink: LineSink,
        *,
        meta: dict[str, Any],
        at: datetime,
        rng: random.Random,
        records: bool,
        git: dict[str, Any] | None = None,
    ) -> None:
        self.sink = sink
        self.rng = rng
        self.records = records
        self.thread_id: str = meta["id"]
        self.total = CodexUsage()
        self.turn_total = CodexUsage()
        self.turn_id = ""
        self.model = ""
        self.token_rows: list[dict[str, Any]] = []  # own token_count lines, for children
        self.last_record: dict[str, Any] | None = None
        self._last = CodexUsage()
        self.meta_line: dict[str, Any] = {"timestamp": iso_ms(at), "type": "session_meta"}
        if records:
            self.meta_line["payload"] = {**meta, "git": git} if git else meta
        else:
            # Older CLIs wrote `git` beside the payload, not inside it.
            self.meta_line["payload"] = meta
            if git:
                self.meta_line["git"] = git
        sink.obj(self.meta_line)

    @classmethod
    def open(cls, path: Path, *, flush_each: bool = True, **kwargs: Any) -> CodexRolloutWriter:
        return cls(LineSink(path, flush_each=flush_each), **kwargs)

    def _line(self, at: datetime, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        line = {"timestamp": iso_ms(at), "type": kind, "payload": payload}
        self.sink.obj(line)
        return line

    def write_copied_history(
        self, at: datetime, parent: CodexRolloutWriter, spread_s: float
    ) -> int:
        """The fork/spawn replay: parent's session_meta, then its token_count rows, all
        re-stamped at fork time over `spread_s` seconds. Returns the rows copied."""
        self.sink.obj({**parent.meta_line, "timestamp": iso_ms(at)})
        rows = parent.token_rows
        for i, row in enumerate(rows):
            stamp = after(at, spread_s * (i + 1) / max(1, len(rows)))
            self.sink.obj({**row, "timestamp": iso_ms(stamp)})
        self.total = parent.total
        self._last = parent._last
        return len(rows)

    def write_turn_context(self, at: datetime, *, model: str, effort: str, cwd: str) -> str:
        self.turn_id = uuid7(self.rng, at)
        self.turn_total = CodexUsage()
        self.model = model
        self._line(
            at,
            "turn_context",
            {
                "turn_id": self.turn_id,
                "cwd": cwd,
                "model": model,
                "effort": effort,
                "approval_policy": "on-request",
                "sandbox_policy": {"type": "workspace-write"},
                "summary": "auto",
            },
        )
        return self.turn_id

    def write_user_message(self, at: datetime, text: str) -> None:
        self._line(
            at,
            "response_item",
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        )
        self._line(at, "event_msg", {"type": "user_message", "message": text, "images": []})

    def write_token_count(
        self, at: datetime, rate_limits: dict[str, Any] | None, *, last: CodexUsage | None = None
    ) -> None:
        """A token_count event. Without `last` it repeats the current totals (a rate-limit
        refresh), or has `info: null` before the thread's first response."""
        info: dict[str, Any] | None = None
        if self.total.input or last is not None:
            info = {
                "total_token_usage": self.total.to_json(),
                "last_token_usage": (last or self._last).to_json(),
                "model_context_window": CONTEXT_WINDOW,
            }
        line = self._line(
            at, "event_msg", {"type": "token_count", "info": info, "rate_limits": rate_limits}
        )
        self.token_rows.append(line)

    def write_call(
        self, call: CodexCall, *, rate_limits: dict[str, Any] | None, cwd: str
    ) -> CodexWritten:
        """The response items of one call, then its token_count (and token_usage_record)."""
        rid = call.response_id or "resp_" + b62(self.rng, 40)
        t = call.at
        if call.reasoning_blob is not None:
            t = after(call.at, call.duration_s * 0.4)
            if call.summary:
                self._line(t, "event_msg", {"type": "agent_reasoning", "text": call.summary})
            summary = [{"type": "summary_text", "text": call.summary}] if call.summary else []
            self._line(
                t,
                "response_item",
                {
                    "type": "reasoning",
                    "summary": summary,
                    "content": None,
                    "encrypted_content": call.reasoning_blob,
                },
            )
        done = after(call.at, call.duration_s)
        if call.message is not None:
            self._line(done, "event_msg", {"type": "agent_message", "message": call.message})
            self._line(
                done,
                "response_item",
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": call.message}],
                },
            )
        call_ids = []
        for shell in call.shells:
            cid = "call_" + b62(self.rng, 24)
            call_ids.append(cid)
            args = {"command": list(shell.command), "workdir": cwd, "timeout_ms": 120000}
            self._line(
                done,
                "response_item",
                {
                    "type": "function_call",
                    "name": "shell",
                    "arguments": orjson.dumps(args).decode(),
                    "call_id": cid,
                },
            )
        self.total = self.total + call.usage
        self.turn_total = self.turn_total + call.usage
        self._last = call.usage
        completed = after(done, 0.003)
        if utc_day(completed) != utc_day(done):
            completed = done  # keep the record and the token_count on the same UTC day
        self.write_token_count(completed, rate_limits, last=call.usage)
        if self.records:
            record = {
                "thread_id": self.thread_id,
                "turn_id": self.turn_id,
                "root_turn_id": self.turn_id,
                "session_id": self.thread_id,
                "response_id": rid,
                "usage": call.usage.to_json(cache_write=True),
                "turn_token_usage": self.turn_total.to_json(cache_write=True),
                "thread_token_usage": self.total.to_json(cache_write=True),
                "attribution": {
                    "model": self.model,
                    "model_provider": "openai",
                    "service_tier": "default",
                    "context_length": None,
                },
                "completed_at_ms": epoch_ms(done),
            }
            self._line(done, "token_usage_record", record)
            self.last_record = record
        return CodexWritten(rid, completed, call_ids)

    def write_tool_outputs(self, call: CodexCall, written: CodexWritten) -> datetime:
        t = written.completed_at
        for shell, cid in zip(call.shells, written.call_ids, strict=True):
            t = after(t, shell.runtime_s)
            output = {
                "output": shell.output,
                "metadata": {"exit_code": 0, "duration_seconds": round(shell.runtime_s, 1)},
            }
            self._line(
                t,
                "response_item",
                {
                    "type": "function_call_output",
                    "call_id": cid,
                    "output": orjson.dumps(output).decode(),
                },
            )
        return t

    def write_compacted(self, at: datetime, summary: str) -> None:
        payload: dict[str, Any] = {"message": summary}
        if self.last_record is not None:
            # A snapshot copy of the last record: never a call of its own.
            payload["latest_token_usage_record"] = self.last_record
        self._line(at, "compacted", payload)

    def write_event(self, at: datetime, payload: dict[str, Any]) -> None:
        self._line(at, "event_msg", payload)

    def write_task_complete(
        self, at: datetime, *, message: str | None, error: dict[str, str] | None = None
    ) -> None:
        payload: dict[str, Any] = {
            "type": "task_complete",
            "turn_id": self.turn_id,
            "last_agent_message": message,
        }
        if error is not None:
            payload["error"] = error
        self._line(at, "event_msg", payload)

    def write_raw(self, data: bytes) -> None:
        self.sink.raw(data)

    def close(self) -> None:
        self.sink.close()


# ---- rate limits -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodexPlan:
    plan_type: str = "plus"
    weekly_in_primary: bool = False  # some plans: weekly window in `primary`, secondary null


class _Limits:
    def __init__(self, plan: CodexPlan, start: datetime, rng: random.Random) -> None:
        self.plan = plan
        self.rng = rng
        self.five_h = rng.uniform(0, 40)
        self.week = rng.uniform(5, 60)
        self.reset_5h = ms(start + timedelta(minutes=rng.randrange(30, 299)))
        self.reset_week = ms(start + timedelta(hours=rng.randrange(12, 160)))

    def bump(self) -> None:
        self.five_h = min(99.0, self.five_h + self.rng.uniform(0.2, 2.5))
        self.week = min(99.0, self.week + self.rng.uniform(0.05, 0.6))

    def snapshot(self, *, reached: bool = False) -> dict[str, Any]:
        week = {
            "used_percent": 100.0
            if reached and self.plan.weekly_in_primary
            else round(self.week, 1),
            "window_minutes": 10080,
            "resets_at": int(self.reset_week.timestamp()),
        }
        five = {
            "used_percent": 100.0 if reached else round(self.five_h, 1),
            "window_minutes": 300,
            "resets_at": int(self.reset_5h.timestamp()),
        }
        return {
            "limit_id": "codex",
            "limit_name": None,
            "primary": week if self.plan.weekly_in_primary else five,
            "secondary": None if self.plan.weekly_in_primary else week,
            "credits": None,
            "plan_type": self.plan.plan_type,
            "rate_limit_reached_type": "rate_limit_reached" if reached else None,
        }

    def primary_reset(self) -> tuple[str, datetime]:
        if self.plan.weekly_in_primary:
            return "weekly", self.reset_week
        return "5h", self.reset_5h


# ---- session driver -------------------------------------------------------------------------

Steps = Generator[datetime, None, datetime]


@dataclass(frozen=True, slots=True)
class CodexSessionSpec:
    start: datetime
    project: Project
    model: str = GPT5_CODEX
    turns: int = 3
    era: Literal["legacy", "records"] = "records"
    plan: CodexPlan = field(default_factory=CodexPlan)
    children: int = 0  # thread_spawn subagents, each replaying the parent's history so far
    fork: bool = False  # afterwards, a user fork (forked_from_id) replaying the whole thread
    usage_limit: bool = False  # ends with task_complete error usage_limit_exceeded
    compress: bool = False  # idle ≥ 7 days: only `.jsonl.zst` exists
    archived: bool = False  # moved to archived_sessions/
    torn: bool = False  # garbage line in the middle, unterminated torn tail at the end
    start_context: int = 0  # 0: a fresh thread; large: compaction comes soon


@dataclass(frozen=True, slots=True)
class CodexSessionResult:
    path: Path
    thread_id: str
    end: datetime


def session_meta(
    *,
    thread_id: str,
    at: datetime,
    cwd: str,
    records: bool,
    parent_thread_id: str | None = None,
    forked_from_id: str | None = None,
    nickname: str = "Euclid",
    base_instructions: str | None = None,
) -> dict[str, Any]:
    """The `session_meta` payload of a thread (a spawned subagent when `parent_thread_id`)."""
    meta: dict[str, Any] = {
        "id": thread_id,
        "timestamp": iso_ms(at),
        "cwd": cwd,
        "originator": "codex-tui" if records else "codex_cli_rs",
        "cli_version": RECORDS_VERSION if records else LEGACY_VERSION,
    }
    if records:
        meta["session_id"] = thread_id
    if parent_thread_id is not None:
        spawn = {
            "parent_thread_id": parent_thread_id,
            "depth": 1,
            "agent_path": None,
            "agent_nickname": nickname,
            "agent_role": "explorer",
        }
        meta["source"] = {"subagent": {"thread_spawn": spawn}}
        meta["thread_source"] = "subagent"
        meta["parent_thread_id"] = parent_thread_id
    else:
        meta["source"] = "cli"
        meta["thread_source"] = "user"
        if forked_from_id is not None:
            meta["forked_from_id"] = forked_from_id
    meta["model_provider"] = "openai"
    if records:
        meta["base_instructions"] = {"text": base_instructions or ""}
    else:
        meta["instructions"] = None
    return meta


class _Thread:
    def __init__(
        self,
        env: SessionEnv,
        spec: CodexSessionSpec,
        *,
        child_of: _Thread | None = None,
        start: datetime | None = None,
        role: Role = Role.MAIN,
    ) -> None:
        self.env = env
        self.spec = spec
        self.role = role
        rng = env.rng
        self.start = start or spec.start
        self.thread_id = uuid7(rng, self.start)
        self.limits: _Limits = child_of.limits if child_of else _Limits(spec.plan, self.start, rng)
        self.calls = 0
        local = self.start.astimezone(env.tz)
        name = rollout_name(local, self.thread_id)
        if spec.archived:
            path = env.home / "archived_sessions" / name
        else:
            path = env.home / "sessions" / local.strftime("%Y/%m/%d") / name
        compress = spec.compress and not spec.torn
        self.path = path.with_name(path.name + ".zst") if compress else path
        records = spec.era == "records"
        spawned = child_of is not None and role is Role.SUBAGENT
        meta = session_meta(
            thread_id=self.thread_id,
            at=self.start,
            cwd=spec.project.cwd,
            records=records,
            parent_thread_id=child_of.thread_id if spawned and child_of else None,
            forked_from_id=child_of.thread_id if child_of and not spawned else None,
            nickname=rng.choice(("Euclid", "Noether", "Pascal", "Hopper")),
            base_instructions=env.pool.pick_output(rng) + env.pool.pick_prose(rng),
        )
        git = {
            "commit_hash": hexid(rng, 40),
            "branch": spec.project.branch,
            "repository_url": spec.project.repo_url,
        }
        sink = LineSink(
            self.path,
            compress=compress,
            counter=env.counter,
            flush_each=env.flush_each and not compress,
        )
        self.writer = CodexRolloutWriter(
            sink, meta=meta, at=self.start, rng=rng, records=records, git=git
        )
        self.ctx = spec.start_context or rng.randrange(9_000, 16_000)
        self.cached_prefix = 0
        if compress:
            env.truth.example("codex.zst_rollout", self.path)
        if spec.archived:
            env.truth.example("codex.archived_session", self.path)
        if records:
            env.truth.example("codex.records_era_file", self.path)

    def call(
        self, at: datetime, model: str, shells: list[ShellCall], *, message: bool
    ) -> tuple[CodexCall, CodexWritten]:
        env, rng = self.env, self.env.rng
        prompt = self.ctx
        # The provider caches the previous prompt's prefix in 128-token steps; now and then
        # the cache has expired.
        cached = (self.cached_prefix // 128) * 128 if rng.random() < 0.9 else 0
        output = rng.randrange(120, 3200)
        reasoning = int(output * rng.uniform(0.2, 0.85))
        usage = CodexUsage(prompt, min(cached, prompt), output, reasoning)
        call = CodexCall(
            at=at,
            usage=usage,
            duration_s=rng.uniform(2, 40),
            reasoning_blob=env.pool.pick_blob(rng),
            summary=env.pool.pick_prose(rng)[:300] if rng.random() < 0.7 else None,
            message=env.pool.pick_prose(rng) if message else None,
            shells=tuple(shells),
        )
        self.limits.bump()
        written = self.writer.write_call(
            call, rate_limits=self.limits.snapshot(), cwd=self.spec.project.cwd
        )
        env.truth.call(
            machine=env.machine,
            profile=env.profile,
            agent=Agent.CODEX.value,
            session_id=self.thread_id,
            model=model,
            role=self.role.value,
            at=written.completed_at,
            tokens=usage.tokens(),
        )
        env.truth.count("codex_quota_snapshots")
        self.calls += 1
        self.cached_prefix = prompt
        self.ctx = prompt + output + sum(approx_tokens(s.output) for s in shells)
        return call, written

    def shells(self, n: int) -> list[ShellCall]:
        rng, pool = self.env.rng, self.env.pool
        out = []
        for _ in range(n):
            if rng.random() < 0.5:
                f = pool.pick_file(rng)
                cmd = ("bash", "-lc", f"sed -n '1,400p' {f.path}")
                out.append(ShellCall(cmd, f.content, rng.uniform(0.05, 0.5)))
            else:
                script = rng.choice(("pytest -q", "cargo test", "rg -n TODO", "git diff"))
                out.append(
                    ShellCall(("bash", "-lc", script), pool.pick_output(rng), rng.uniform(0.3, 30))
                )
        return out

    def turns(self, t: datetime, turns: int, *, model: str, hook: Hook | None = None) -> Steps:
        """Turns of calls; yields after each call, returns the time the last turn ended."""
        env, rng, w = self.env, self.env.rng, self.writer
        for turn in range(turns):
            effort = rng.choice(("medium", "high"))
            w.write_turn_context(t, model=model, effort=effort, cwd=self.spec.project.cwd)
            w.write_user_message(t, env.pool.pick_prompt(rng))
            n = rng.randrange(2, 9)
            for k in range(n):
                last = k == n - 1
                shells = [] if last else self.shells(rng.choice((1, 1, 2)))
                at = after(t, rng.uniform(0.5, 3))
                call, written = self.call(at, model, shells, message=last or rng.random() < 0.3)
                yield written.completed_at
                t = written.completed_at
                if rng.random() < 0.25:
                    # Rate-limit headers arrived again: same totals, a fresh snapshot.
                    t = after(t, rng.uniform(0.05, 2))
                    w.write_token_count(t, self.limits.snapshot())
                    env.truth.count("codex_quota_snapshots")
                    env.truth.example("codex.reemitted_token_count", self.path)
                t = w.write_tool_outputs(call, written)
                if hook is not None:
                    t = yield from hook(turn, k, t)
                if self.ctx > COMPACT_AT:
                    # Auto-compaction: the history is replaced by a summary. In records-era
                    # files the `compacted` record embeds a copy of the last token record.
                    t = after(t, 5)
                    w.write_compacted(t, env.pool.pick_prose(rng))
                    self.ctx = rng.randrange(14_000, 30_000)
                    self.cached_prefix = 0
                    env.truth.example("codex.compacted", self.path)
                t = after(t, rng.uniform(0.5, 5))
            w.write_task_complete(t, message=env.pool.pick_prose(rng)[:200])
            t = after(t, rng.uniform(30, 1200))
        return t


Hook = Callable[[int, int, datetime], Steps]


def _child(env: SessionEnv, parent: _Thread, at: datetime, role: Role) -> Steps:
    """A spawned subagent (or a user fork) of `parent`, replaying its history first."""
    rng = env.rng
    child_spec = replace(parent.spec, archived=False, torn=False, children=0, fork=False)
    child = _Thread(env, child_spec, child_of=parent, start=at, role=role)
    if role is Role.SUBAGENT:
        spawned = {
            "type": "collab_agent_spawn_end",
            "new_thread_id": child.thread_id,
            "model": GPT5,
            "reasoning_effort": "medium",
        }
        parent.writer.write_event(at, spawned)
    spread = rng.uniform(0.8, 3.5)  # multi-second replays defeat same-second heuristics
    copied = child.writer.write_copied_history(after(at, 0.01), parent.writer, spread)
    child.ctx = parent.ctx
    env.truth.count("codex_replayed_rows", copied)
    item = "codex.subagent_replay_burst" if role is Role.SUBAGENT else "codex.fork_replay_burst"
    env.truth.example(
        item,
        child.path,
        thread_id=child.thread_id,
        parent_thread_id=parent.thread_id,
        replayed_token_counts=copied,
    )
    t = after(at, spread + 0.5)
    if role is Role.SUBAGENT:
        t = yield from child.turns(t, 1, model=GPT5)
    else:
        t = yield from child.turns(t, rng.randrange(1, 3), model=parent.spec.model)
    child.writer.close()
    return t


class _Session:
    def __init__(self, env: SessionEnv, spec: CodexSessionSpec) -> None:
        self.env = env
        self.spec = spec
        self.main = _Thread(env, spec)
        self.garbage_line = 0
        self.end = spec.start

    def hook(self, turn: int, k: int, t: datetime) -> Steps:
        spec, w = self.spec, self.main.writer
        if turn < spec.children and k == 0:
            t = yield from _child(self.env, self.main, after(t, 0.2), Role.SUBAGENT)
        elif spec.torn and turn == spec.turns // 2 and k == 0:
            # A torn write the CLI later "repaired" by appending LF before the next record.
            line = orjson.dumps(
                {
                    "timestamp": iso_ms(t),
                    "type": "event_msg",
                    "payload": {
                        "type": "agent_message",
                        "message": self.env.pool.pick_prose(self.env.rng),
                    },
                }
            )
            w.write_raw(line[: len(line) // 2] + b"\n")
            self.garbage_line = w.sink.lines
        return t

    def steps(self) -> Steps:
        env, spec, rng, truth = self.env, self.spec, self.env.rng, self.env.truth
        main, w = self.main, self.main.writer
        t = after(spec.start, rng.uniform(0.2, 1.5))
        # The first token_count of a thread has no usage yet: `info: null`, rate limits only.
        w.write_token_count(t, main.limits.snapshot())
        truth.count("codex_quota_snapshots")
        truth.example("codex.info_null_first", main.path)
        if spec.plan.weekly_in_primary:
            truth.example("codex.weekly_in_primary", main.path, plan_type=spec.plan.plan_type)
        t = yield from main.turns(t, spec.turns, model=spec.model, hook=self.hook)
        if spec.usage_limit:
            t = yield from self._usage_limit(t)
        if spec.torn:
            self._torn_tail(t)
        w.close()
        if spec.fork:
            t = yield from _child(env, main, after(t, rng.uniform(60, 3600)), Role.MAIN)
        return t

    def _usage_limit(self, t: datetime) -> Steps:
        env, spec, truth = self.env, self.spec, self.env.truth
        main, w = self.main, self.main.writer
        w.write_turn_context(t, model=spec.model, effort="high", cwd=spec.project.cwd)
        w.write_user_message(t, env.pool.pick_prompt(env.rng))
        _, written = main.call(after(t, 2), spec.model, [], message=False)
        yield written.completed_at
        t = after(written.completed_at, 0.4)
        w.write_token_count(t, main.limits.snapshot(reached=True))
        truth.count("codex_quota_snapshots")
        window, resets = main.limits.primary_reset()
        clock = resets.astimezone(env.tz).strftime("%I:%M %p").lstrip("0")
        text = (
            "You've hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro)"
            f" or try again at {clock}."
        )
        t = after(t, 0.1)
        error = {"message": text, "codex_error_info": "usage_limit_exceeded"}
        w.write_task_complete(t, message=None, error=error)
        truth.rate_limit_hit(
            machine=env.machine,
            profile=env.profile,
            agent=Agent.CODEX.value,
            session_id=main.thread_id,
            at=t,
            window=window,
            resets_at=resets,
            message=text,
            path=main.path,
        )
        truth.example("codex.usage_limit_exceeded", main.path)
        return t

    def _torn_tail(self, t: datetime) -> None:
        """The process died while writing the next response's token_count: that call never
        reached the log, so truth does not count it."""
        main, w, truth = self.main, self.main.writer, self.env.truth
        usage = CodexUsage(main.ctx, main.cached_prefix, 500, 200)
        info = {
            "total_token_usage": (w.total + usage).to_json(),
            "last_token_usage": usage.to_json(),
        }
        payload = {"type": "token_count", "info": info}
        line = orjson.dumps(
            {"timestamp": iso_ms(after(t, 30)), "type": "event_msg", "payload": payload}
        )
        w.write_raw(line[: len(line) * 3 // 5])
        intact = main.calls
        detail = "truncated JSON record (an agent_message), LF appended later"
        truth.problem(main.path, self.garbage_line, "garbage_line", detail, intact_calls=intact)
        detail = "unterminated token_count of a response that is not a call in truth"
        truth.problem(main.path, w.sink.lines + 1, "torn_tail", detail, intact_calls=intact)


def iter_session(
    env: SessionEnv, spec: CodexSessionSpec
) -> Generator[datetime, None, CodexSessionResult]:
    """Write one Codex thread step by step (plus spawned/forked children), recording truth.

    Yields the simulated time after each model call (see claude.iter_session)."""
    session = _Session(env, spec)
    end = yield from session.steps()
    return CodexSessionResult(session.main.path, session.main.thread_id, end)


def run_session(env: SessionEnv, spec: CodexSessionSpec) -> CodexSessionResult:
    """Write one whole Codex thread at once."""
    return drain(iter_session(env, spec))

"""OpenCode's SQLite store (research/log-formats.md §4): writer and session driver.

Tables as in OpenCode's `session.sql.ts` / `project.sql.ts`; `message.data` and `part.data` hold
the JSON objects without their own ids (those are columns). An assistant message is one user
turn of possibly many model calls (steps). Each step adds a `step-finish` part with that call's
tokens and cost, and OVERWRITES `message.data.tokens` with the step's tokens while
`message.data.cost` accumulates: the message row ends holding only the last step's tokens.
Truth is the sum of the step-finish parts. Token fields are already disjoint (input uncached).
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from shared.events import Agent, Role, Tokens

from . import prices
from .common import after, b62, drain, epoch_ms, hexid, utc_day
from .env import Project, SessionEnv
from .payloads import approx_tokens

OPENCODE_VERSION = "1.14.3"

# (providerID, modelID) as OpenCode logs them.
ANTHROPIC_SONNET = ("anthropic", "claude-sonnet-4-5")
DEEPSEEK_FLASH = ("deepseek", "deepseek-v4-flash")
GLM = ("zai", "glm-4.6")
LOCAL = ("local", "my-finetune-7b")  # no list price anywhere: truth marks it unknown

_SCHEMA = """
CREATE TABLE IF NOT EXISTS project (
  id TEXT PRIMARY KEY, worktree TEXT NOT NULL, vcs TEXT, name TEXT, icon_url TEXT,
  icon_color TEXT, time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL,
  time_initialized INTEGER, sandboxes TEXT NOT NULL, commands TEXT, worktree_settings TEXT);
CREATE TABLE IF NOT EXISTS session (
  id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id) ON DELETE CASCADE,
  workspace_id TEXT, parent_id TEXT, slug TEXT NOT NULL, directory TEXT NOT NULL, path TEXT,
  title TEXT NOT NULL, version TEXT NOT NULL, share_url TEXT, summary_additions INTEGER,
  summary_deletions INTEGER, summary_files INTEGER, summary_diffs TEXT,
  cost REAL NOT NULL DEFAULT 0, tokens_input INTEGER NOT NULL DEFAULT 0,
  tokens_output INTEGER NOT NULL DEFAULT 0, tokens_reasoning INTEGER NOT NULL DEFAULT 0,
  tokens_cache_read INTEGER NOT NULL DEFAULT 0, tokens_cache_write INTEGER NOT NULL DEFAULT 0,
  revert TEXT, permission TEXT, goal TEXT, agent TEXT, model TEXT,
  time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, time_compacting INTEGER,
  time_archived INTEGER);
CREATE INDEX IF NOT EXISTS session_project_idx ON session(project_id);
CREATE INDEX IF NOT EXISTS session_workspace_idx ON session(workspace_id);
CREATE INDEX IF NOT EXISTS session_parent_idx ON session(parent_id);
CREATE TABLE IF NOT EXISTS message (
  id TEXT PRIMARY KEY, session_id TEXT NOT NULL REFERENCES session(id) ON DELETE CASCADE,
  time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS message_session_time_created_id_idx
  ON message(session_id, time_created, id);
CREATE TABLE IF NOT EXISTS part (
  id TEXT PRIMARY KEY, message_id TEXT NOT NULL REFERENCES message(id) ON DELETE CASCADE,
  session_id TEXT NOT NULL, time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL,
  data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS part_message_id_id_idx ON part(message_id, id);
CREATE INDEX IF NOT EXISTS part_session_idx ON part(session_id);
"""


@dataclass(frozen=True, slots=True)
class OpenCodeStep:
    """One model call inside an assistant message."""

    at: datetime  # when the step finished
    input: int  # uncached
    output: int
    reasoning: int
    cache_read: int
    cache_write: int  # no TTL split: truth counts it as cache_write_5m
    reason: str  # "tool-calls" or "stop"
    cost: float  # OpenCode's own estimate (never used as the price)
    text: str | None = None
    tool: tuple[str, dict[str, Any], str] | None = None  # (tool, input, output)
    tool_metadata: dict[str, Any] = field(default_factory=dict)

    def tokens(self) -> Tokens:
        return Tokens(
            input=self.input,
            output=self.output,
            reasoning=self.reasoning,
            cache_read=self.cache_read,
            cache_write_5m=self.cache_write,
        )

    def tokens_json(self) -> dict[str, Any]:
        return {
            "total": self.input + self.output + self.reasoning + self.cache_read + self.cache_write,
            "input": self.input,
            "output": self.output,
            "reasoning": self.reasoning,
            "cache": {"read": self.cache_read, "write": self.cache_write},
        }


@dataclass(slots=True)
class AssistantMessage:
    id: str
    session_id: str
    data: dict[str, Any]
    part_ids: list[str] = field(default_factory=list)


class OpenCodeStore:
    """Writes an `opencode.db` the way OpenCode does: rows inserted, then updated in place."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.rng = rng
        self._counter = 0
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")  # as OpenCode opens it
        self.db.executescript(_SCHEMA)
        self.db.execute("BEGIN")
        self.bytes_estimate = 0

    def new_id(self, prefix: str, at: datetime) -> str:
        """`<prefix>_<12 hex: ms·0x1000 + counter><14 base62>`, OpenCode's ascending ids."""
        self._counter = (self._counter + 1) % 0x1000
        value = (epoch_ms(at) * 0x1000 + self._counter) & ((1 << 48) - 1)
        return f"{prefix}_{value:012x}{b62(self.rng, 14)}"

    def _json(self, value: Any) -> str:
        text = orjson.dumps(value).decode()
        self.bytes_estimate += len(text)
        return text

    def add_project(self, project_id: str, worktree: str, at: datetime) -> None:
        t = epoch_ms(at)
        self.db.execute(
            "INSERT OR IGNORE INTO project (id, worktree, vcs, name, time_created, time_updated,"
            " time_initialized, sandboxes) VALUES (?, ?, 'git', ?, ?, ?, ?, '[]')",
            (project_id, worktree, worktree.rsplit("/", 1)[-1], t, t, t),
        )

    def add_session(
        self,
        *,
        session_id: str,
        project_id: str,
        directory: str,
        title: str,
        at: datetime,
        model: tuple[str, str],
        parent_id: str | None = None,
        agent: str = "build",
    ) -> None:
        t = epoch_ms(at)
        slug = f"{b62(self.rng, 6).lower()}-{b62(self.rng, 5).lower()}"
        self.db.execute(
            "INSERT INTO session (id, project_id, parent_id, slug, directory, title, version,"
            " agent, model, time_created, time_updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                session_id,
                project_id,
                parent_id,
                slug,
                directory,
                title,
                OPENCODE_VERSION,
                agent,
                self._json({"id": model[1], "providerID": model[0]}),
                t,
                t,
            ),
        )

    def _part(self, message_id: str, session_id: str, at: datetime, data: dict[str, Any]) -> str:
        pid = self.new_id("prt", at)
        t = epoch_ms(at)
        self.db.execute(
            "INSERT INTO part (id, message_id, session_id, time_created, time_updated, data)"
            " VALUES (?,?,?,?,?,?)",
            (pid, message_id, session_id, t, t, self._json(data)),
        )
        return pid

    def add_user_message(
        self, session_id: str, at: datetime, text: str, model: tuple[str, str]
    ) -> str:
        mid = self.new_id("msg", at)
        t = epoch_ms(at)
        data = {
            "role": "user",
            "time": {"created": t},
            "agent": "build",
            "model": {"providerID": model[0], "modelID": model[1]},
        }
        self.db.execute(
            "INSERT INTO message (id, session_id, time_created, time_updated, data)"
            " VALUES (?,?,?,?,?)",
            (mid, session_id, t, t, self._json(data)),
        )
        self._part(mid, session_id, at, {"type": "text", "text": text})
        return mid

    def begin_assistant(
        self,
        session_id: str,
        *,
        parent_id: str,
        at: datetime,
        model: tuple[str, str],
        cwd: str,
    ) -> AssistantMessage:
        mid = self.new_id("msg", at)
        t = epoch_ms(at)
        data: dict[str, Any] = {
            "role": "assistant",
            "time": {"created": t},
            "parentID": parent_id,
            "modelID": model[1],
            "providerID": model[0],
            "mode": "build",
            "agent": "build",
            "path": {"cwd": cwd, "root": cwd},
            "cost": 0,
            "tokens": {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}},
        }
        self.db.execute(
            "INSERT INTO message (id, session_id, time_created, time_updated, data)"
            " VALUES (?,?,?,?,?)",
            (mid, session_id, t, t, self._json(data)),
        )
        return AssistantMessage(mid, session_id, data)

    def add_step(self, msg: AssistantMessage, step: OpenCodeStep, started: datetime) -> str:
        """Parts of one model call; the message's tokens are overwritten, its cost summed."""
        self._part(
            msg.id, msg.session_id, started, {"type": "step-start", "snapshot": hexid(self.rng, 40)}
        )
        if step.text is not None:
            self._part(
                msg.id,
                msg.session_id,
                step.at,
                {
                    "type": "text",
                    "text": step.text,
                    "time": {"start": epoch_ms(started), "end": epoch_ms(step.at)},
                },
            )
        if step.tool is not None:
            name, tool_input, output = step.tool
            self._part(
                msg.id,
                msg.session_id,
                step.at,
                {
                    "type": "tool",
                    "callID": "toolu_" + b62(self.rng, 24),
                    "tool": name,
                    "state": {
                        "status": "completed",
                        "input": tool_input,
                        "output": output,
                        "title": name,
                        "metadata": step.tool_metadata,
                        "time": {"start": epoch_ms(started), "end": epoch_ms(step.at)},
                    },
                },
            )
        finish_id = self._part(
            msg.id,
            msg.session_id,
            step.at,
            {
                "type": "step-finish",
                "reason": step.reason,
                "snapshot": hexid(self.rng, 40),
                "cost": step.cost,
                "tokens": step.tokens_json(),
            },
        )
        msg.part_ids.append(finish_id)
        msg.data["tokens"] = step.tokens_json()  # `=`: the last step wins (the known pitfall)
        msg.data["cost"] = round(float(msg.data["cost"]) + step.cost, 10)  # `+=`
        self.db.execute(
            "UPDATE message SET data = ?, time_updated = ? WHERE id = ?",
            (self._json(msg.data), epoch_ms(step.at), msg.id),
        )
        return finish_id

    def finish_assistant(self, msg: AssistantMessage, at: datetime, finish: str) -> None:
        msg.data["time"]["completed"] = epoch_ms(at)
        msg.data["finish"] = finish
        self.db.execute(
            "UPDATE message SET data = ?, time_updated = ? WHERE id = ?",
            (self._json(msg.data), epoch_ms(at), msg.id),
        )

    def finish_session(self, session_id: str, at: datetime) -> None:
        """Session totals as the sum of message rows (their semantics upstream are unverified;
        parsers must not bill from them)."""
        row = self.db.execute(
            "SELECT coalesce(sum(json_extract(data,'$.cost')),0),"
            " coalesce(sum(json_extract(data,'$.tokens.input')),0),"
            " coalesce(sum(json_extract(data,'$.tokens.output')),0),"
            " coalesce(sum(json_extract(data,'$.tokens.reasoning')),0),"
            " coalesce(sum(json_extract(data,'$.tokens.cache.read')),0),"
            " coalesce(sum(json_extract(data,'$.tokens.cache.write')),0)"
            " FROM message WHERE session_id = ? AND json_extract(data,'$.role') = 'assistant'",
            (session_id,),
        ).fetchone()
        self.db.execute(
            "UPDATE session SET cost=?, tokens_input=?, tokens_output=?, tokens_reasoning=?,"
            " tokens_cache_read=?, tokens_cache_write=?, time_updated=? WHERE id=?",
            (*row, epoch_ms(at), session_id),
        )

    def commit(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")

    def close(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()


# ---- session driver -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenCodeSessionSpec:
    start: datetime
    project: Project
    model: tuple[str, str] = DEEPSEEK_FLASH
    turns: int = 3
    child: bool = False  # a task-tool subagent in a child session (session.parent_id)


class _Run:
    def __init__(
        self,
        env: SessionEnv,
        store: OpenCodeStore,
        spec: OpenCodeSessionSpec,
        session_id: str,
        role: Role,
    ) -> None:
        self.env = env
        self.store = store
        self.spec = spec
        self.session_id = session_id
        self.role = role
        self.ctx = env.rng.randrange(8_000, 14_000)
        self.cached = 0

    def step(self, started: datetime, tool: bool) -> OpenCodeStep:
        env, rng, spec = self.env, self.env.rng, self.spec
        provider, model = spec.model
        prompt = self.ctx
        anthropic = provider == "anthropic"
        read = self.cached if rng.random() < 0.9 else 0
        write = (prompt - read) if anthropic else 0  # DeepSeek/GLM: writes unbilled, logged 0
        inp = rng.randrange(3, 20) if anthropic else prompt - read
        if provider == "local":
            read, write, inp = 0, 0, prompt  # a local server without prompt caching
        output = rng.randrange(60, 1800)
        at = after(started, rng.uniform(1.5, 30))
        output_tool: tuple[str, dict[str, Any], str] | None = None
        tokens_added = output
        if tool:
            f = env.pool.pick_file(rng)
            output_tool = ("read", {"filePath": f"{spec.project.cwd}/{f.path}"}, f.content)
            tokens_added += approx_tokens(f.content)
        step_tokens = Tokens(input=inp, output=output, cache_read=read, cache_write_5m=write)
        cost = prices.call_cost(model, step_tokens, at)
        step = OpenCodeStep(
            at=at,
            input=inp,
            output=output,
            reasoning=0,
            cache_read=read,
            cache_write=write,
            reason="tool-calls" if tool else "stop",
            cost=0.0 if cost is None else float(cost),
            text=None if tool else env.pool.pick_prose(rng),
            tool=output_tool,
        )
        self.cached = prompt if anthropic else (prompt // 64) * 64
        self.ctx = min(150_000, prompt + tokens_added)
        return step

    def turn(self, t: datetime) -> Generator[datetime, None, datetime]:
        env, rng, store, spec = self.env, self.env.rng, self.store, self.spec
        n = rng.randrange(1, 6)
        start = after(t, 0.5)
        steps: list[OpenCodeStep] = []
        started = start
        for k in range(n):
            steps.append(self.step(started, tool=k < n - 1))
            started = after(steps[-1].at, rng.uniform(0.1, 2))
        if utc_day(start) != utc_day(steps[-1].at):
            # Keep a message's steps on one UTC day, so day totals do not depend on whether a
            # parser dates a step by its part or by its message: start after midnight instead.
            midnight = steps[-1].at.replace(hour=0, minute=0, second=0, microsecond=0)
            shift = (midnight - start).total_seconds() + 1
            t, start = after(t, shift), after(start, shift)
            steps = [replace(s, at=after(s.at, shift)) for s in steps]
        user_id = store.add_user_message(self.session_id, t, env.pool.pick_prompt(rng), spec.model)
        msg = store.begin_assistant(
            self.session_id, parent_id=user_id, at=start, model=spec.model, cwd=spec.project.cwd
        )
        prev = start
        for step in steps:
            store.add_step(msg, step, prev)
            env.truth.call(
                machine=env.machine,
                profile=env.profile,
                agent=Agent.OPENCODE.value,
                session_id=self.session_id,
                model=spec.model[1],
                role=self.role.value,
                at=step.at,
                tokens=step.tokens(),
            )
            prev = step.at
            if env.flush_each:
                store.commit()  # a live reader sees each step as OpenCode writes it
            yield step.at
        store.finish_assistant(msg, steps[-1].at, "stop")
        if n > 1:
            env.truth.example(
                "opencode.multi_step_message",
                store.path,
                message_id=msg.id,
                steps=n,
                step_finish_part_ids=msg.part_ids,
            )
        if spec.model == LOCAL:
            env.truth.example("opencode.unknown_price_model", store.path, message_id=msg.id)
        return after(steps[-1].at, rng.uniform(20, 600))


@dataclass(frozen=True, slots=True)
class OpenCodeSessionResult:
    session_id: str
    end: datetime


def iter_session(
    env: SessionEnv, store: OpenCodeStore, spec: OpenCodeSessionSpec
) -> Generator[datetime, None, OpenCodeSessionResult]:
    """Write one OpenCode session (and a child session) into `store` step by step, recording
    truth. Yields the simulated time after each model call (see claude.iter_session)."""
    rng = env.rng
    # OpenCode keys a project by its repository's root commit: stable per worktree.
    project_id = hashlib.sha1(spec.project.repo_url.encode()).hexdigest()
    store.add_project(project_id, spec.project.cwd, spec.start)
    sid = store.new_id("ses", spec.start)
    title = env.pool.pick_prompt(rng)[:60]
    store.add_session(
        session_id=sid,
        project_id=project_id,
        directory=spec.project.cwd,
        title=title,
        at=spec.start,
        model=spec.model,
    )
    run = _Run(env, store, spec, sid, Role.MAIN)
    t = spec.start
    for turn in range(spec.turns):
        t = yield from run.turn(t)
        if spec.child and turn == 0:
            child_id = store.new_id("ses", t)
            store.add_session(
                session_id=child_id,
                project_id=project_id,
                directory=spec.project.cwd,
                title="Explore the code (@general subagent)",
                at=t,
                model=spec.model,
                parent_id=sid,
                agent="general",
            )
            child = _Run(env, store, spec, child_id, Role.SUBAGENT)
            t = yield from child.turn(t)
            store.finish_session(child_id, t)
            env.truth.example(
                "opencode.child_session", store.path, session_id=child_id, parent_id=sid
            )
    store.finish_session(sid, t)
    store.commit()
    env.truth.example(
        f"opencode.provider_{spec.model[0]}", store.path, session_id=sid, model=spec.model[1]
    )
    return OpenCodeSessionResult(sid, t)


def run_session(
    env: SessionEnv, store: OpenCodeStore, spec: OpenCodeSessionSpec
) -> OpenCodeSessionResult:
    """Write one whole OpenCode session at once."""
    return drain(iter_session(env, store, spec))

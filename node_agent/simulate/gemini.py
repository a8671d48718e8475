"""Gemini CLI chat recordings, JSONL era (research/log-formats.md §3): writer and driver.

One file per session under `tmp/<project slug>/chats/`; a metadata line, then message records.
A `gemini` message is appended again whenever it changes (text streamed, tokens attached, tool
calls added) under the same `id`: the last record wins. `tokens.input` includes `cached`;
`thoughts` are additive (billed as output, truth's `reasoning`). A `$rewindTo` drops messages
from the conversation but the rewound calls were billed: truth keeps them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.events import Agent, Role, Tokens

from .common import LineSink, after, drain, epoch_ms, iso_ms, uuid4
from .env import Project, SessionEnv
from .payloads import approx_tokens

GEMINI_PRO = "gemini-2.5-pro"


@dataclass(frozen=True, slots=True)
class GeminiTool:
    name: str
    args: dict[str, Any]
    output: str


@dataclass(frozen=True, slots=True)
class GeminiCall:
    at: datetime
    model: str
    input: int  # promptTokenCount: includes `cached`
    cached: int
    output: int
    thoughts: int
    text: str
    thought_texts: tuple[str, ...] = ()
    tools: tuple[GeminiTool, ...] = ()

    def tokens(self) -> Tokens:
        return Tokens(
            input=self.input - self.cached,
            output=self.output,
            cache_read=self.cached,
            reasoning=self.thoughts,
        )


def chat_file_name(start: datetime, session_id: str) -> str:
    """`session-<YYYY-MM-DDTHH-MM>-<first 8 of sessionId>.jsonl`, UTC minute."""
    utc = start.astimezone(UTC)
    return f"session-{utc.strftime('%Y-%m-%dT%H-%M')}-{session_id[:8]}.jsonl"


def project_hash(root: str) -> str:
    return hashlib.sha256(root.encode()).hexdigest()


class GeminiChatWriter:
    def __init__(
        self,
        sink: LineSink,
        *,
        session_id: str,
        project_root: str,
        start: datetime,
        rng: random.Random,
        kind: str = "main",
    ) -> None:
        self.sink = sink
        self.rng = rng
        self.session_id = session_id
        meta: dict[str, Any] = {
            "sessionId": session_id,
            "projectHash": project_hash(project_root),
            "startTime": iso_ms(start),
            "lastUpdated": iso_ms(start),
            "kind": kind,
        }
        if kind == "subagent":
            meta["directories"] = [project_root]
        sink.obj(meta)

    @classmethod
    def open(cls, path: Path, *, flush_each: bool = True, **kwargs: Any) -> GeminiChatWriter:
        return cls(LineSink(path, flush_each=flush_each), **kwargs)

    def write_user(self, at: datetime, text: str) -> str:
        mid = uuid4(self.rng)
        self.sink.obj(
            {"id": mid, "timestamp": iso_ms(at), "type": "user", "content": [{"text": text}]}
        )
        return mid

    def write_response(self, call: GeminiCall) -> tuple[str, int]:
        """All records of one model response; returns (message id, records written)."""
        mid = uuid4(self.rng)
        stamp = iso_ms(call.at)
        thoughts = [
            {"subject": text[:40], "description": text, "timestamp": stamp}
            for text in call.thought_texts
        ]
        base: dict[str, Any] = {"id": mid, "timestamp": stamp, "type": "gemini"}
        # 1: streamed text so far, no usage yet.
        self.sink.obj(
            {
                **base,
                "content": [{"text": call.text[: len(call.text) // 2]}],
                "thoughts": thoughts,
                "model": call.model,
            }
        )
        tokens = {
            "input": call.input,
            "output": call.output,
            "cached": call.cached,
            "thoughts": call.thoughts,
            "tool": 0,
            "total": call.input + call.output + call.thoughts,
        }
        full: dict[str, Any] = {
            **base,
            "content": [{"text": call.text}],
            "thoughts": thoughts,
            "model": call.model,
            "tokens": tokens,
        }
        # 2: the response's usageMetadata attached.
        self.sink.obj(full)
        records = 2
        if call.tools:
            # 3: tool calls (with their results) added to the same message.
            full["toolCalls"] = [
                {
                    "id": f"{tool.name}-{epoch_ms(call.at)}-{self.rng.getrandbits(32):08x}",
                    "name": tool.name,
                    "args": tool.args,
                    "result": [
                        {
                            "functionResponse": {
                                "id": tool.name,
                                "name": tool.name,
                                "response": {"output": tool.output},
                            }
                        }
                    ],
                    "status": "success",
                    "timestamp": stamp,
                    "displayName": tool.name,
                    "resultDisplay": tool.output[:2000],
                }
                for tool in call.tools
            ]
            self.sink.obj(full)
            records += 1
        return mid, records

    def write_set(self, at: datetime) -> None:
        self.sink.obj({"$set": {"lastUpdated": iso_ms(at)}})

    def write_rewind(self, message_id: str) -> None:
        self.sink.obj({"$rewindTo": message_id})

    def write_info(self, at: datetime, text: str) -> None:
        self.sink.obj(
            {"id": uuid4(self.rng), "timestamp": iso_ms(at), "type": "info", "content": text}
        )

    def close(self) -> None:
        self.sink.close()


@dataclass(frozen=True, slots=True)
class GeminiSessionSpec:
    start: datetime
    project: Project
    model: str = GEMINI_PRO
    turns: int = 3
    rewind: bool = False
    subagent: bool = False


@dataclass(frozen=True, slots=True)
class GeminiSessionResult:
    path: Path
    session_id: str
    end: datetime


def _tools(env: SessionEnv, n: int) -> list[GeminiTool]:
    rng, pool = env.rng, env.pool
    out = []
    for _ in range(n):
        if rng.random() < 0.6:
            f = pool.pick_file(rng)
            out.append(GeminiTool("read_file", {"absolute_path": f.path}, f.content))
        else:
            out.append(
                GeminiTool("run_shell_command", {"command": "npm test"}, pool.pick_output(rng))
            )
    return out


class _Chat:
    def __init__(
        self,
        env: SessionEnv,
        spec: GeminiSessionSpec,
        path: Path,
        session_id: str,
        start: datetime,
        role: Role,
    ) -> None:
        self.env = env
        self.spec = spec
        self.role = role
        self.session_id = session_id
        self.path = path
        kind = "subagent" if role is Role.SUBAGENT else "main"
        self.writer = GeminiChatWriter(
            LineSink(path, counter=env.counter, flush_each=env.flush_each),
            session_id=session_id,
            project_root=spec.project.cwd,
            start=start,
            rng=env.rng,
            kind=kind,
        )
        self.ctx = env.rng.randrange(7_000, 12_000)

    def response(self, at: datetime, tools: list[GeminiTool]) -> datetime:
        env, rng = self.env, self.env.rng
        prompt = self.ctx
        cached = int(prompt * rng.uniform(0.5, 0.9)) if rng.random() < 0.7 else 0
        thoughts = rng.randrange(0, 2500)
        call = GeminiCall(
            at=at,
            model=self.spec.model,
            input=prompt,
            cached=cached,
            output=rng.randrange(40, 1600),
            thoughts=thoughts,
            text=env.pool.pick_prose(rng),
            thought_texts=(env.pool.pick_prose(rng)[:400],) if thoughts else (),
            tools=tuple(tools),
        )
        _, records = self.writer.write_response(call)
        env.truth.call(
            machine=env.machine,
            profile=env.profile,
            agent=Agent.GEMINI.value,
            session_id=self.session_id,
            model=call.model,
            role=self.role.value,
            at=call.at,
            tokens=call.tokens(),
        )
        env.truth.example("gemini.message_reemitted", self.path, records=records)
        self.ctx = min(180_000, prompt + call.output + sum(approx_tokens(t.output) for t in tools))
        end = after(at, rng.uniform(2, 30))
        self.writer.write_set(end)
        return end

    def turn(self, t: datetime) -> Generator[datetime, None, tuple[str, datetime]]:
        env, rng = self.env, self.env.rng
        mid = self.writer.write_user(t, env.pool.pick_prompt(rng))
        n = rng.randrange(1, 6)
        for k in range(n):
            tools = _tools(env, rng.randrange(1, 3)) if k < n - 1 else []
            t = self.response(after(t, rng.uniform(1, 5)), tools)
            yield t
        return mid, after(t, rng.uniform(20, 600))


def iter_session(
    env: SessionEnv, spec: GeminiSessionSpec
) -> Generator[datetime, None, GeminiSessionResult]:
    """Write one Gemini CLI chat (and a subagent chat) step by step, recording truth.

    Yields the simulated time after each model response (see claude.iter_session)."""
    rng = env.rng
    sid = uuid4(rng)
    chats = env.home / "tmp" / spec.project.name / "chats"
    main = _Chat(env, spec, chats / chat_file_name(spec.start, sid), sid, spec.start, Role.MAIN)
    t = spec.start
    for turn in range(spec.turns):
        mid, t = yield from main.turn(t)
        if spec.rewind and turn == 0:
            # The user rewound to before this turn; its responses stay billed.
            main.writer.write_rewind(mid)
            env.truth.example("gemini.rewind", main.path, rewound_to=mid)
        if spec.subagent and turn == 0:
            sub_id = uuid4(rng)
            sub = _Chat(env, spec, chats / sid / f"{sub_id}.jsonl", sub_id, t, Role.SUBAGENT)
            _, t = yield from sub.turn(t)
            sub.writer.close()
            env.truth.example("gemini.subagent_chat", sub.path, parent_session_id=sid)
    main.writer.close()
    return GeminiSessionResult(main.path, sid, t)


def run_session(env: SessionEnv, spec: GeminiSessionSpec) -> GeminiSessionResult:
    """Write one whole Gemini CLI chat at once."""
    return drain(iter_session(env, spec))

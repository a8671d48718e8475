"""Claude Code transcripts (research/log-formats.md §1): a writer and a session driver.

The writer turns "this call happened" into the exact lines Claude Code appends: one assistant
line per content block (thinking, text, each tool_use), all sharing `message.id` + `requestId`,
each repeating the usage with `output_tokens` growing and final only on the last line (the one
with `stop_reason`); then one user line per tool result, carrying the payload twice (model-facing
`content` and Claude Code's `toolUseResult`) as real transcripts do.

Eras: 2.x lines carry the `cache_creation` 5m/1h split, `speed`, `server_tool_use`; 1.x lines
only `cache_creation_input_tokens` (truth puts such writes in cache_write_5m) and keep subagent
(sidechain) lines inline in the parent file instead of `<session>/subagents/agent-<id>.jsonl`.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson

from shared.events import Agent, Role, Tokens

from . import prices
from .common import LineSink, after, b62, claude_project_slug, drain, hexid, iso_ms, uuid4
from .env import Project, SessionEnv
from .payloads import approx_tokens
from .truth import money, tokens_to_json

SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-6"
HAIKU = "claude-haiku-4-5-20251001"
SYNTHETIC = "<synthetic>"
VERSION_2X = ("2.1.119", "2.1.131", "2.1.140")
VERSION_1X = "1.0.112"


@dataclass(frozen=True, slots=True)
class ToolUse:
    name: str
    input: dict[str, Any]
    result: str  # the tool_result content the model reads
    result_meta: dict[str, Any]  # the line's `toolUseResult`, Claude Code's structured copy
    runtime_s: float = 1.0  # from the response's last line to the tool result line
    context_tokens: int = 0  # what the result adds to the conversation


@dataclass(frozen=True, slots=True)
class ClaudeUsage:
    input: int
    output: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int
    web_search: int = 0

    @property
    def prompt(self) -> int:
        return self.input + self.cache_read + self.cache_write_5m + self.cache_write_1h

    def tokens(self, *, split: bool) -> Tokens:
        """Truth buckets; an unsplit (1.x) write counts as 5m, as events.Tokens prescribes."""
        writes = self.cache_write_5m + self.cache_write_1h
        return Tokens(
            input=self.input,
            output=self.output,
            cache_read=self.cache_read,
            cache_write_5m=self.cache_write_5m if split else writes,
            cache_write_1h=self.cache_write_1h if split else 0,
            web_search_requests=self.web_search,
        )


@dataclass(frozen=True, slots=True)
class ClaudeCall:
    at: datetime  # the first content block's line
    model: str
    usage: ClaudeUsage
    thinking: str | None = None
    text: str | None = None
    tools: tuple[ToolUse, ...] = ()
    duration_s: float = 4.0  # first to last content-block line
    signature: str = ""
    message_id: str | None = None
    request_id: str | None = None


@dataclass(slots=True)
class WrittenCall:
    message_id: str
    request_id: str
    final_at: datetime  # timestamp of the last line: the call's time in truth
    message: dict[str, Any]  # the final line's message (replays copy it)
    tool_ids: list[str] = field(default_factory=list)
    lines: int = 0


def anthropic_ids(rng: random.Random) -> tuple[str, str]:
    return "msg_01" + b62(rng, 22), "req_011C" + b62(rng, 20)


class ClaudeSessionWriter:
    """Appends one session's transcript lines. Usable live: `write_call` per model call."""

    def __init__(
        self,
        sink: LineSink,
        *,
        session_id: str,
        cwd: str,
        version: str,
        git_branch: str,
        rng: random.Random,
        agent_id: str | None = None,
        sidechain: bool = False,
        split_cache: bool = True,
        entrypoint: str | None = None,
    ) -> None:
        self.sink = sink
        # how Claude Code was started ("cli", "sdk-cli", ...): logged when given
        self.entrypoint = entrypoint
        self.session_id = session_id
        self.cwd = cwd
        self.version = version
        self.git_branch = git_branch
        self.rng = rng
        self.agent_id = agent_id
        self.sidechain = sidechain
        self.split_cache = split_cache
        self._parent: str | None = None

    @classmethod
    def open(cls, path: Path, *, flush_each: bool = True, **kwargs: Any) -> ClaudeSessionWriter:
        """A writer appending to `path` (created with its folders), flushed per record."""
        return cls(LineSink(path, flush_each=flush_each), **kwargs)

    # ---- lines -------------------------------------------------------------------------

    def _envelope(self, kind: str, at: datetime, sidechain: bool | None) -> dict[str, Any]:
        uid = uuid4(self.rng)
        side = self.sidechain if sidechain is None else sidechain
        line: dict[str, Any] = {"parentUuid": self._parent, "isSidechain": side}
        if self.agent_id is not None:
            line["agentId"] = self.agent_id
        line.update(
            userType="external",
            cwd=self.cwd,
            sessionId=self.session_id,
            version=self.version,
            gitBranch=self.git_branch,
            type=kind,
            uuid=uid,
            timestamp=iso_ms(at),
        )
        if self.entrypoint is not None:
            line["entrypoint"] = self.entrypoint
        self._parent = uid
        return line

    def _usage(self, u: ClaudeUsage, output: int) -> dict[str, Any]:
        writes = u.cache_write_5m + u.cache_write_1h
        if not self.split_cache:
            return {
                "input_tokens": u.input,
                "cache_creation_input_tokens": writes,
                "cache_read_input_tokens": u.cache_read,
                "output_tokens": output,
                "service_tier": "standard",
            }
        return {
            "input_tokens": u.input,
            "cache_creation_input_tokens": writes,
            "cache_read_input_tokens": u.cache_read,
            "output_tokens": output,
            "server_tool_use": {"web_search_requests": u.web_search, "web_fetch_requests": 0},
            "service_tier": "standard",
            "cache_creation": {
                "ephemeral_1h_input_tokens": u.cache_write_1h,
                "ephemeral_5m_input_tokens": u.cache_write_5m,
            },
            "inference_geo": "",
            "iterations": [],
            "speed": "standard",
        }

    def write_prompt(self, at: datetime, text: str, *, sidechain: bool | None = None) -> None:
        line = self._envelope("user", at, sidechain)
        line["message"] = {"role": "user", "content": text}
        self.sink.obj(line)

    def write_call(self, call: ClaudeCall, *, sidechain: bool | None = None) -> WrittenCall:
        """The assistant lines of one response, one per content block (streaming snapshots)."""
        mid, rid = call.message_id, call.request_id
        if mid is None or rid is None:
            mid, rid = anthropic_ids(self.rng)
        blocks: list[dict[str, Any]] = []
        if call.thinking is not None:
            blocks.append(
                {"type": "thinking", "thinking": call.thinking, "signature": call.signature}
            )
        if call.text is not None:
            blocks.append({"type": "text", "text": call.text})
        tool_ids = []
        for tool in call.tools:
            tid = "toolu_01" + b62(self.rng, 22)
            tool_ids.append(tid)
            blocks.append({"type": "tool_use", "id": tid, "name": tool.name, "input": tool.input})
        if not blocks:
            blocks.append({"type": "text", "text": ""})
        n = len(blocks)
        final = call.usage.output
        outputs = _growing(final, n)
        stop = "tool_use" if blocks[-1]["type"] == "tool_use" else "end_turn"
        at = call.at
        message: dict[str, Any] = {}
        for i, block in enumerate(blocks):
            at = call.at if n == 1 else after(call.at, call.duration_s * i / (n - 1))
            line = self._envelope("assistant", at, sidechain)
            line["requestId"] = rid
            message = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": call.model,
                "content": [block],
                "stop_reason": stop if i == n - 1 else None,
                "stop_sequence": None,
                "usage": self._usage(call.usage, outputs[i]),
            }
            line["message"] = message
            self.sink.obj(line)
        return WrittenCall(mid, rid, at, message, tool_ids, n)

    def write_tool_results(
        self, call: ClaudeCall, written: WrittenCall, *, sidechain: bool | None = None
    ) -> datetime:
        """One user line per tool_use; returns the time of the last one."""
        at = written.final_at
        for tool, tid in zip(call.tools, written.tool_ids, strict=True):
            at = after(at, tool.runtime_s)
            line = self._envelope("user", at, sidechain)
            line["message"] = {
                "role": "user",
                "content": [{"tool_use_id": tid, "type": "tool_result", "content": tool.result}],
            }
            line["toolUseResult"] = tool.result_meta
            self.sink.obj(line)
        return at

    def write_replay(self, at: datetime, of: WrittenCall) -> str:
        """A `/btw` side question replays a parent message as a sidechain line under a new
        requestId (same message.id and usage). It is a copy: it counts nothing."""
        _, rid = anthropic_ids(self.rng)
        line = self._envelope("assistant", at, True)
        line["requestId"] = rid
        line["message"] = of.message
        self.sink.obj(line)
        return rid

    def write_synthetic(
        self, at: datetime, text: str, *, error: str | None = None, status: int | None = None
    ) -> None:
        """A locally generated `<synthetic>` assistant line (limit hits, API errors, notices)."""
        line = self._envelope("assistant", at, None)
        line["requestId"] = "req_011C" + b62(self.rng, 20)
        usage: dict[str, Any] = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": None,
        }
        if self.split_cache:
            usage["cache_creation"] = {
                "ephemeral_1h_input_tokens": 0,
                "ephemeral_5m_input_tokens": 0,
            }
            usage["speed"] = None
        line["message"] = {
            "id": uuid4(self.rng),
            "model": SYNTHETIC,
            "role": "assistant",
            "type": "message",
            "stop_reason": "stop_sequence",
            "stop_sequence": "",
            "usage": usage,
            "content": [{"type": "text", "text": text}],
        }
        if error is not None:
            line["error"] = error
            line["isApiErrorMessage"] = True
        if status is not None:
            line["apiErrorStatus"] = status
        self.sink.obj(line)

    def write_forked_history(self, src: Path, src_session_id: str) -> int:
        """Copy the main-thread history of `src` into this (forked) session, as Claude Code
        does: new sessionId and uuids, `forkedFrom` pointing at the original line, the same
        timestamps, message ids, request ids and usage. Returns assistant lines copied."""
        remap: dict[str, str] = {}
        copied = 0
        for old in _read_lines(src):
            if old.get("isSidechain") or old.get("type") not in ("user", "assistant"):
                continue
            msg = old.get("message") or {}
            if msg.get("model") == SYNTHETIC:
                continue
            uid = uuid4(self.rng)
            remap[old["uuid"]] = uid
            new: dict[str, Any] = {}
            for key, value in old.items():
                if key == "uuid":
                    value = uid
                elif key == "parentUuid":
                    value = remap.get(value) if value else None
                elif key == "sessionId":
                    value = self.session_id
                new[key] = value
                if key == "gitBranch":
                    new["forkedFrom"] = {"sessionId": src_session_id, "messageUuid": old["uuid"]}
            self.sink.obj(new)
            self._parent = uid
            copied += old.get("type") == "assistant"
        return copied

    def write_raw(self, data: bytes) -> None:
        self.sink.raw(data)

    def close(self) -> None:
        self.sink.close()


def _growing(final: int, n: int) -> list[int]:
    """Streaming snapshots: output_tokens strictly grows and is final only on the last line.

    Earlier snapshots stay below half the final count (a block's line is written when the
    block ends, long before the response's last token)."""
    if final < 2 * n:
        raise ValueError(f"{final} output tokens cannot grow over {n} content-block lines")
    values = [1 + (final - 1) * (i + 1) // (2 * n) for i in range(n - 1)]
    return [*values, final]


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield value


# ---- session driver -------------------------------------------------------------------------

LimitKind = Literal["session", "weekly", "api_error"]
Steps = Generator[datetime, None, None]


@dataclass(frozen=True, slots=True)
class ForkSource:
    path: Path
    session_id: str


@dataclass(frozen=True, slots=True)
class ClaudeSessionSpec:
    start: datetime
    project: Project
    model: str = SONNET
    turns: int = 4
    era: Literal["2.x", "1.x"] = "2.x"
    subagents: int = 0  # Task spawns
    subagent_model: str = HAIKU
    btw_replay: bool = False
    context_limit: int = 160_000  # compaction point; above 200K means a 1M-context session
    start_context: int = 0  # 0: a fresh session (system prompt and tools only)
    exact_200k: bool = False  # make the call that crosses 200K land on exactly 200,000
    web_search: bool = False
    no_response_line: bool = False
    limit: LimitKind | None = None  # the session ends on this synthetic line
    torn: bool = False  # a garbage line in the middle, an unterminated torn tail at the end
    fork_of: ForkSource | None = None
    agent_id: str | None = None  # reuse a subagent id (they are not globally unique)
    version: str | None = None


@dataclass(slots=True)
class ClaudeSessionResult:
    path: Path
    session_id: str
    end: datetime
    agent_ids: list[str] = field(default_factory=list)
    forkable: bool = True  # main-thread history intact (no torn lines)


class _Context:
    """What the provider has cached vs what is new since the last call (Claude semantics)."""

    def __init__(self, rng: random.Random, start: int, limit: int) -> None:
        self.rng = rng
        system = rng.randrange(14_000, 22_000)
        # The system prompt and tools are usually still in the 1h cache from a recent session.
        self.cached = system if rng.random() < 0.6 else 0
        self.pending = max(system, start) - self.cached
        self.limit = limit

    def grow(self, tokens: int) -> None:
        self.pending += tokens
        if self.cached + self.pending > self.limit:
            # Auto-compaction: its own request is not in the transcript; the context restarts
            # from the cached system prompt plus a summary.
            self.cached = self.rng.randrange(14_000, 22_000)
            self.pending = self.rng.randrange(6_000, 16_000)

    def take(self, exact_200k: bool) -> tuple[int, int, int, bool]:
        """(input, cache_read, cache_write, landed_on_200k) for the next request."""
        rng = self.rng
        inp = rng.randrange(3, 13) if rng.random() < 0.93 else rng.randrange(80, 3000)
        read, write = self.cached, self.pending
        exact = False
        if exact_200k and inp + read < 200_000 <= inp + read + write:
            write = 200_000 - inp - read
            exact = True
        self.cached = read + write
        self.pending = 0
        return inp, read, write, exact


def _read_tool(env: SessionEnv, cwd: str) -> ToolUse:
    rng = env.rng
    f = env.pool.pick_file(rng)
    path = f"{cwd}/{f.path}"
    head = f.content.split("\n")[:40]
    numbered = "\n".join(f"{i + 1:>6}→{line}" for i, line in enumerate(head))
    # The model-facing text is line-numbered; toolUseResult keeps the raw file.
    result = numbered + "\n" + f.content[len(numbered) // 2 :]
    meta = {
        "type": "text",
        "file": {
            "filePath": path,
            "content": f.content,
            "numLines": f.lines,
            "startLine": 1,
            "totalLines": f.lines,
        },
    }
    return ToolUse(
        "Read", {"file_path": path}, result, meta, rng.uniform(0.05, 0.6), approx_tokens(result)
    )


def _bash_tool(env: SessionEnv) -> ToolUse:
    rng = env.rng
    text = env.pool.pick_output(rng)
    cmd = rng.choice(("pytest -q", "npm test", "git status --short", "ls -la src", "go test ./..."))
    meta = {"stdout": text, "stderr": "", "interrupted": False, "isImage": False}
    tool_input = {"command": cmd, "description": "Run " + cmd.split()[0]}
    return ToolUse("Bash", tool_input, text, meta, rng.uniform(0.5, 40.0), approx_tokens(text))


def _edit_tool(env: SessionEnv, cwd: str) -> ToolUse:
    rng = env.rng
    f = env.pool.pick_file(rng)
    path = f"{cwd}/{f.path}"
    old = f.content[:120]
    result = (
        f"The file {path} has been updated. Here's the result of running `cat -n` on a"
        f" snippet of the edited file:\n{old}"
    )
    patch = {"oldStart": 1, "oldLines": 3, "newStart": 1, "newLines": 3, "lines": [old]}
    meta = {
        "filePath": path,
        "oldString": old,
        "newString": old.upper(),
        "originalFile": f.content,  # Claude Code keeps the whole file: a big share of bytes
        "structuredPatch": [patch],
        "userModified": False,
        "replaceAll": False,
    }
    tool_input = {"file_path": path, "old_string": old, "new_string": old.upper()}
    return ToolUse("Edit", tool_input, result, meta, rng.uniform(0.05, 0.4), approx_tokens(result))


def _grep_tool(env: SessionEnv, cwd: str) -> ToolUse:
    rng = env.rng
    text = env.pool.pick_output(rng)[:3000]
    meta = {
        "mode": "content",
        "numFiles": rng.randrange(1, 30),
        "filenames": [],
        "content": text,
        "numLines": text.count("\n") + 1,
    }
    pattern = rng.choice(("TODO", "def ", "budget", "token"))
    return ToolUse("Grep", {"pattern": pattern, "path": cwd}, text, meta, 0.2, approx_tokens(text))


def _tools(env: SessionEnv, cwd: str, n: int) -> list[ToolUse]:
    out = []
    for _ in range(n):
        kind = env.rng.random()
        if kind < 0.45:
            out.append(_read_tool(env, cwd))
        elif kind < 0.75:
            out.append(_bash_tool(env))
        elif kind < 0.88:
            out.append(_edit_tool(env, cwd))
        else:
            out.append(_grep_tool(env, cwd))
    return out


class _Session:
    """Drives one Claude Code session through its writer(s) and records the truth."""

    def __init__(self, env: SessionEnv, spec: ClaudeSessionSpec) -> None:
        self.env = env
        self.spec = spec
        rng = env.rng
        self.session_id = uuid4(rng)
        self.split = spec.era == "2.x"
        self.version = spec.version or (rng.choice(VERSION_2X) if self.split else VERSION_1X)
        project_dir = env.home / "projects" / claude_project_slug(spec.project.cwd)
        self.path = project_dir / f"{self.session_id}.jsonl"
        self.writer = ClaudeSessionWriter(
            LineSink(self.path, counter=env.counter, flush_each=env.flush_each),
            session_id=self.session_id,
            cwd=spec.project.cwd,
            version=self.version,
            git_branch=spec.project.branch,
            rng=rng,
            split_cache=self.split,
        )
        self.result = ClaudeSessionResult(self.path, self.session_id, spec.start)
        self.exact_done = False
        self.calls_in_file = 0

    # -- one response ---------------------------------------------------------------------

    def _usage(self, ctx: _Context, output: int, web: int) -> tuple[ClaudeUsage, bool]:
        inp, read, write, exact = ctx.take(self.spec.exact_200k and not self.exact_done)
        self.exact_done |= exact
        u = self.env.rng.random()
        if not self.split or u < 0.88:
            w5, w1 = 0, write  # Claude Code on a subscription writes the 1h tier
        elif u < 0.96:
            w5, w1 = write, 0
        else:
            w5 = write // 3
            w1 = write - w5
        return ClaudeUsage(inp, output, read, w5, w1, web), exact

    def _call(
        self,
        writer: ClaudeSessionWriter,
        ctx: _Context,
        at: datetime,
        model: str,
        tools: list[ToolUse],
        *,
        role: Role,
        sidechain: bool | None = None,
        web: int = 0,
    ) -> tuple[ClaudeCall, WrittenCall]:
        env, rng = self.env, self.env.rng
        think = rng.random() < 0.5
        output = rng.randrange(40, 1400) + (rng.randrange(100, 2500) if think else 0)
        usage, exact = self._usage(ctx, output, web)
        call = ClaudeCall(
            at=at,
            model=model,
            usage=usage,
            thinking=env.pool.pick_prose(rng) if think else None,
            signature=env.pool.pick_blob(rng) if think else "",
            text=env.pool.pick_prose(rng) if (not tools or rng.random() < 0.6) else None,
            tools=tuple(tools),
            duration_s=rng.uniform(1.5, 25.0),
        )
        written = writer.write_call(call, sidechain=sidechain)
        tokens = usage.tokens(split=self.split)
        env.truth.call(
            machine=env.machine,
            profile=env.profile,
            agent=Agent.CLAUDE_CODE.value,
            session_id=self.session_id,
            model=model,
            role=role.value,
            at=written.final_at,
            tokens=tokens,
        )
        self.calls_in_file += writer is self.writer
        self._note(call, written, tokens, exact, writer.sink.path)
        ctx.grow(output + sum(t.context_tokens for t in tools))
        return call, written

    def _note(
        self, call: ClaudeCall, written: WrittenCall, tokens: Tokens, exact: bool, path: Path
    ) -> None:
        truth = self.env.truth
        ids = {"message_id": written.message_id, "request_id": written.request_id}
        if written.lines > 1:
            truth.example("claude.content_block_lines", path, lines=written.lines, **ids)
        if exact or tokens.prompt > 200_000:
            if exact:
                item = "claude.prompt_exactly_200k"
            elif call.model == SONNET:
                item = "claude.long_context_sonnet"
            else:
                item = "claude.over_200k_flat_priced"
            cost = prices.call_cost(call.model, tokens, written.final_at)
            shown = None if cost is None else money(cost)
            truth.example(
                item, path, model=call.model, tokens=tokens_to_json(tokens), cost=shown, **ids
            )
        if not self.split:
            truth.example("claude.cache_write_unsplit", path, **ids)
        elif tokens.cache_write_5m and tokens.cache_write_1h:
            truth.example("claude.cache_write_5m_and_1h", path, **ids)
        elif tokens.cache_write_5m:
            truth.example("claude.cache_write_5m_only", path, **ids)
        if tokens.web_search_requests:
            truth.example("claude.web_search", path, **ids)

    # -- subagents ------------------------------------------------------------------------

    def _subagent_writer(self, agent_id: str) -> ClaudeSessionWriter:
        env, spec = self.env, self.spec
        sub_dir = self.path.parent / self.session_id / "subagents"
        writer = ClaudeSessionWriter(
            LineSink(
                sub_dir / f"agent-{agent_id}.jsonl",
                counter=env.counter,
                flush_each=env.flush_each,
            ),
            session_id=self.session_id,  # subagent lines carry the parent's sessionId
            cwd=spec.project.cwd,
            version=self.version,
            git_branch=spec.project.branch,
            rng=env.rng,
            agent_id=agent_id,
            sidechain=True,
        )
        meta = sub_dir / f"agent-{agent_id}.meta.json"
        meta.write_bytes(orjson.dumps({"agentType": "general-purpose", "spawnDepth": 1}))
        env.counter.total += meta.stat().st_size
        env.truth.example("claude.subagent_file", writer.sink.path, agent_id=agent_id)
        return writer

    def _subagent(
        self, at: datetime, prompt: str
    ) -> Generator[datetime, None, tuple[datetime, dict[str, Any]]]:
        """Run a Task subagent from `at`; returns its end and the parent's toolUseResult."""
        env, spec, rng = self.env, self.spec, self.env.rng
        inline = not self.split  # 1.x: sidechain lines in the parent file
        reuse = spec.agent_id is not None and not self.result.agent_ids
        agent_id = spec.agent_id if reuse and spec.agent_id else hexid(rng, 7)
        self.result.agent_ids.append(agent_id)
        writer = self.writer if inline else self._subagent_writer(agent_id)
        ctx = _Context(rng, 0, 160_000)
        ctx.grow(approx_tokens(prompt))
        writer.write_prompt(at, prompt, sidechain=True)
        t = after(at, rng.uniform(0.5, 3))
        n = rng.randrange(2, 7)
        last: WrittenCall | None = None
        tool_count = 0
        for k in range(n):
            tools = _tools(env, spec.project.cwd, rng.randrange(1, 3)) if k < n - 1 else []
            tool_count += len(tools)
            call, last = self._call(
                writer, ctx, t, spec.subagent_model, tools, role=Role.SUBAGENT, sidechain=True
            )
            if inline:
                env.truth.example(
                    "claude.inline_sidechain_1x", writer.sink.path, message_id=last.message_id
                )
            yield last.final_at
            t = writer.write_tool_results(call, last, sidechain=True)
            t = after(t, rng.uniform(0.3, 4))
        if not inline:
            writer.close()
        assert last is not None
        usage = last.message["usage"]
        # toolUseResult.totalTokens is the last response's context size, not the subagent's
        # spend: a trap for parsers that would bill from it.
        context_keys = (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        )
        result = {
            "status": "completed",
            "prompt": prompt,
            "agentId": agent_id,
            "agentType": "general-purpose",
            "content": [{"type": "text", "text": env.pool.pick_prose(rng)}],
            "totalDurationMs": int((t - at).total_seconds() * 1000),
            "totalTokens": sum(usage[k] for k in context_keys),
            "totalToolUseCount": tool_count,
            "usage": usage,
        }
        return t, result

    # -- the session ----------------------------------------------------------------------

    def steps(self) -> Steps:
        """Write the session, yielding the simulated time after each model call."""
        env, spec, rng, truth = self.env, self.spec, self.env.rng, self.env.truth
        w = self.writer
        if spec.fork_of is not None:
            copied = w.write_forked_history(spec.fork_of.path, spec.fork_of.session_id)
            truth.example(
                "claude.fork_copy",
                self.path,
                forked_from=spec.fork_of.session_id,
                copied_assistant_lines=copied,
            )
        ctx = _Context(rng, spec.start_context, spec.context_limit)
        t = spec.start
        subagent_turns = set(rng.sample(range(spec.turns), min(spec.subagents, spec.turns)))
        replay_source: WrittenCall | None = None
        garbage_line = 0
        for turn in range(spec.turns):
            prompt = env.pool.pick_prompt(rng)
            w.write_prompt(t, prompt)
            ctx.grow(approx_tokens(prompt))
            t = after(t, rng.uniform(1, 6))
            n_calls = rng.randrange(2, 8)
            for k in range(n_calls):
                last = k == n_calls - 1
                tools = [] if last else _tools(env, spec.project.cwd, rng.choice((1, 1, 1, 2, 3)))
                spawn = turn in subagent_turns and k == 0 and not last
                if spawn:
                    task_input = {
                        "description": "Explore the code",
                        "prompt": env.pool.pick_prompt(rng),
                        "subagent_type": "general-purpose",
                    }
                    tools = [ToolUse("Task", task_input, "", {}, 0.0, 0)]
                # 1.x lines have no server_tool_use, so no web search can be logged there.
                web = int(self.split and spec.web_search and turn == spec.turns - 1 and k == 0)
                call, written = self._call(w, ctx, t, spec.model, tools, role=Role.MAIN, web=web)
                yield written.final_at
                if replay_source is None and spec.btw_replay and turn == 0:
                    replay_source = written
                if spawn:
                    sub_end, result = yield from self._subagent(
                        after(written.final_at, 0.4), tools[0].input["prompt"]
                    )
                    text = result["content"][0]["text"]
                    runtime = (sub_end - written.final_at).total_seconds() + 0.5
                    task = ToolUse(
                        "Task", tools[0].input, text, result, runtime, approx_tokens(text)
                    )
                    call = replace(call, tools=(task,))
                    ctx.grow(task.context_tokens)
                t = w.write_tool_results(call, written)
                t = after(t, rng.uniform(0.5, 8))
            if spec.torn and turn == spec.turns // 2:
                # A crash left NUL padding where a line should have been: the scan must report
                # it and keep every call around it.
                w.write_raw(b"\x00" * rng.randrange(40, 400) + b"\n")
                garbage_line = w.sink.lines
            if replay_source is not None and turn == min(1, spec.turns - 1):
                w.write_replay(after(t, 2), replay_source)
                truth.example(
                    "claude.btw_sidechain_replay",
                    self.path,
                    message_id=replay_source.message_id,
                    original_request_id=replay_source.request_id,
                )
                replay_source = None
            if spec.no_response_line and turn == 0:
                w.write_synthetic(after(t, 1), "No response requested.")
                truth.count("synthetic_lines")
                truth.example("claude.synthetic_no_response", self.path)
            t = after(t, rng.uniform(20, 900))
        if spec.limit is not None:
            self._limit_line(t)
        if spec.torn:
            self._torn_tail(t, garbage_line)
        w.close()
        self.result.end = t

    def _torn_tail(self, at: datetime, garbage_line: int) -> None:
        """The process died mid-write: the first line of the next response, unterminated. That
        response never completed, so truth does not count it."""
        spec, truth, w = self.spec, self.env.truth, self.writer
        mid, rid = anthropic_ids(self.env.rng)
        line = orjson.dumps(
            {
                "parentUuid": None,
                "isSidechain": False,
                "userType": "external",
                "cwd": spec.project.cwd,
                "sessionId": self.session_id,
                "version": self.version,
                "type": "assistant",
                "timestamp": iso_ms(at),
                "requestId": rid,
                "message": {"id": mid, "model": spec.model},
            }
        )
        w.write_raw(line[: len(line) * 2 // 3])
        intact = self.calls_in_file
        truth.problem(self.path, garbage_line, "garbage_line", "NUL padding", intact_calls=intact)
        truth.problem(
            self.path,
            w.sink.lines + 1,
            "torn_tail",
            f"unterminated first line of response {mid}/{rid} (not a call in truth)",
            intact_calls=intact,
        )
        self.result.forkable = False

    def _limit_line(self, at: datetime) -> None:
        env, spec, rng = self.env, self.spec, self.env.rng
        zone = env.tz.key
        local = at.astimezone(env.tz)
        resets: datetime | None
        if spec.limit == "session":
            resets = _round_up(local + timedelta(minutes=rng.randrange(20, 290)), 20)
            text = f"You've hit your session limit · resets {_clock(resets)} ({zone})"
            window, item = "5h", "claude.synthetic_session_limit"
        elif spec.limit == "weekly":
            later = timedelta(days=rng.randrange(1, 6), hours=rng.randrange(0, 23))
            resets = _round_up(local + later, 60)
            when = f"{resets.strftime('%b')} {resets.day} at {_clock(resets)}"
            text = f"You've hit your weekly limit · resets {when} ({zone})"
            window, item = "weekly", "claude.synthetic_weekly_limit"
        else:
            resets = None
            text = "API Error: Rate limit reached"
            window, item = "unknown", "claude.synthetic_api_error"
        self.writer.write_synthetic(at, text, error="rate_limit", status=429)
        env.truth.count("synthetic_lines")
        env.truth.rate_limit_hit(
            machine=env.machine,
            profile=env.profile,
            agent=Agent.CLAUDE_CODE.value,
            session_id=self.session_id,
            at=at,
            window=window,
            resets_at=resets,
            message=text,
            path=self.path,
        )
        env.truth.example(item, self.path, text=text)


def _round_up(local: datetime, minutes: int) -> datetime:
    base = local.replace(second=0, microsecond=0)
    return base + timedelta(minutes=(-base.minute) % minutes)


def _clock(local: datetime) -> str:
    """Claude Code's reset clock: `9pm`, `5:40pm`."""
    hour = local.hour % 12 or 12
    suffix = "am" if local.hour < 12 else "pm"
    return f"{hour}{suffix}" if local.minute == 0 else f"{hour}:{local.minute:02d}{suffix}"


def iter_session(
    env: SessionEnv, spec: ClaudeSessionSpec
) -> Generator[datetime, None, ClaudeSessionResult]:
    """Write one Claude Code session step by step (plus its subagent files), recording truth.

    Yields the simulated time after each model call, so a live fake agent can sleep until
    then (with `env.flush_each` set the lines are on disk at each yield); returns the result.
    """
    session = _Session(env, spec)
    yield from session.steps()
    return session.result


def run_session(env: SessionEnv, spec: ClaudeSessionSpec) -> ClaudeSessionResult:
    """Write one whole Claude Code session at once."""
    return drain(iter_session(env, spec))

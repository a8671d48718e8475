"""A real stand-in for a coding agent: a process that looks like Claude Code or Codex to the
process inventory and writes real-format session logs in real time.

    CLAUDE_CONFIG_DIR=/tmp/a python -m node_agent.simulate.fake_agent --agent claude-code \\
        --home /tmp/a --pace 1 --children 2 --truth /tmp/a.truth.jsonl

What it does, so tests and the demo can rely on it:
- Names itself `claude` or `codex` (Linux prctl PR_SET_NAME), as a native agent's comm reads.
- The CALLER sets the profile's variable (CLAUDE_CONFIG_DIR / CODEX_HOME) in this process's
  environment, as a profile switcher would; the fake agent never sets it. It writes under
  `--home` (default: that variable; it refuses to guess the real ~/.claude or ~/.codex).
- Starts `--children` tool subprocesses (`bash -c 'sleep 1000 & wait'`: a shell with a child
  of its own), so halting must handle a tree of three levels.
- Writes one model call every `--pace` seconds, stamped with the wall clock, through the
  simulator's own writers (ClaudeSessionWriter, CodexRolloutWriter), flushed per record, and
  keeps its session log open for writing while it runs (the inventory reads the session id
  from open files). The step-wise drivers (`iter_session`) are not used: they stamp simulated
  time (minutes between turns) and choose the token mix themselves.
- `--subagents N`: every Nth call of a Claude agent also runs a Task subagent (Haiku, one call)
  written where Claude Code 2.x writes them, `<session>/subagents/agent-<id>.jsonl`, its lines
  carrying the parent's sessionId (0, the default: none).
- Modes: `normal` (a growing, cached context), `runaway` (cache thrash: every call writes a
  large prompt to the cache and reads none back), `ratelimit` (after `--calls` calls, 3 by
  default, the agent's real limit record, then no more calls).
- `--first-call-after S`: it waits S seconds at its prompt before its first call (started and
  not asked anything yet: a process its node reports before it has spent a cent).
- After its calls (`--calls`, 0 = no end) it idles like an agent at its prompt, or exits with
  `--then exit`. On SIGTERM/SIGINT it closes its files and exits 0, leaving its tool
  subprocesses to whoever kills the tree (real agents orphan them).
- Prints one JSON line on stdout once its session file and its whole tool tree exist
  (`{"ready": true, "pid", "agent", "session_id", "path", "children"}`).

Truth (`--truth FILE`): one JSON line per call (and per rate-limit hit), appended and flushed
right after the call's log lines, not at exit: a killed agent has accounted for the calls it
logged. SIGTERM/SIGINT are held while a call and its truth line are written, so a terminated
agent's truth equals its log exactly; only a SIGKILL landing between the two writes (a few
microseconds) can leave one logged call out. A line holds exactly what `TruthBuilder.call`
(or `.rate_limit_hit`) takes; `load_truth(FILE)` replays the lines through a TruthBuilder and
returns the same `Truth` a generated corpus has, with its per-group totals and prices.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final, Literal, Protocol

import orjson
import psutil

from shared.events import Agent, Role, Tokens

from .agent_commits import commit, init_repository
from .claude import (
    HAIKU,
    SONNET,
    VERSION_2X,
    ClaudeCall,
    ClaudeSessionWriter,
    ClaudeUsage,
    ToolUse,
    _round_up,
)
from .claude import _clock as claude_clock  # the generator's own reset wording
from .codex import (
    GPT5_CODEX,
    CodexCall,
    CodexPlan,
    CodexRolloutWriter,
    CodexUsage,
    ShellCall,
    rollout_name,
    session_meta,
)
from .codex import _Limits as CodexLimits  # the generator's rate_limits snapshots
from .common import LineSink, claude_project_slug, hexid, iso_ms, ms, uuid4, uuid7
from .truth import Truth, TruthBuilder, tokens_from_json, tokens_to_json

Mode = Literal["normal", "runaway", "ratelimit"]
PROCESS_NAMES: Final = {Agent.CLAUDE_CODE: "claude", Agent.CODEX: "codex"}
HOME_VARIABLES: Final = {Agent.CLAUDE_CODE: "CLAUDE_CONFIG_DIR", Agent.CODEX: "CODEX_HOME"}
TURN: Final = 3  # calls per user turn
LIMIT_AFTER: Final = 3  # ratelimit mode: calls before the limit hits, unless --calls says
PR_SET_NAME: Final = 15
MODULE: Final = "node_agent.simulate.fake_agent"


def now() -> datetime:
    return ms(datetime.now(UTC))


# ---- truth ------------------------------------------------------------------------------------


class TruthJournal:
    """Appends the truth of each call as it happens: one flushed JSON line per record."""

    def __init__(self, path: Path | None, *, machine: str, profile: str) -> None:
        self.machine = machine
        self.profile = profile
        self._fh: IO[bytes] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("ab")

    def _write(self, record: dict[str, Any]) -> None:
        if self._fh is not None:
            # One write() of a short line: an append that a kill cannot tear in practice.
            self._fh.write(orjson.dumps(record) + b"\n")
            self._fh.flush()

    def call(
        self,
        *,
        agent: Agent,
        session_id: str,
        model: str,
        at: datetime,
        tokens: Tokens,
        role: Role = Role.MAIN,
    ) -> None:
        self._write(
            {
                "kind": "call",
                "machine": self.machine,
                "profile": self.profile,
                "agent": agent.value,
                "session_id": session_id,
                "model": model,
                "role": role.value,
                "at": iso_ms(at),
                "tokens": tokens_to_json(tokens),
            }
        )

    def rate_limit_hit(
        self,
        *,
        agent: Agent,
        session_id: str,
        at: datetime,
        window: str,
        resets_at: datetime | None,
        message: str,
        path: Path,
    ) -> None:
        self._write(
            {
                "kind": "rate_limit_hit",
                "machine": self.machine,
                "profile": self.profile,
                "agent": agent.value,
                "session_id": session_id,
                "at": iso_ms(at),
                "window": window,
                "resets_at": None if resets_at is None else iso_ms(resets_at),
                "message": message,
                "path": str(path),
            }
        )

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def load_truth(path: Path, root: Path = Path("/")) -> Truth:
    """The truth of one or more fake agents' journals (`path` may be shared by several),
    built by TruthBuilder. Rate-limit paths come out relative to `root`."""
    builder = TruthBuilder(root)
    for raw in path.read_bytes().splitlines():
        try:
            rec = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # a line torn by SIGKILL mid-write: its call is not complete either
        common = {
            "machine": rec["machine"],
            "profile": rec["profile"],
            "agent": rec["agent"],
            "session_id": rec["session_id"],
            "at": datetime.fromisoformat(rec["at"]),
        }
        if rec["kind"] == "call":
            builder.call(
                **common,
                model=rec["model"],
                role=rec["role"],
                tokens=tokens_from_json(rec["tokens"]),
            )
        elif rec["kind"] == "rate_limit_hit":
            resets = rec["resets_at"]
            builder.rate_limit_hit(
                **common,
                window=rec["window"],
                resets_at=None if resets is None else datetime.fromisoformat(resets),
                message=rec["message"],
                path=Path(rec["path"]),
            )
    return builder.build({"journal": str(path)}, {})


# ---- the agents -------------------------------------------------------------------------------


class FakeSession(Protocol):
    session_id: str
    path: Path

    def call(self) -> None: ...

    def limit_hit(self) -> None: ...

    def close(self) -> None: ...


PROMPT = "Run the tests and fix what fails."
TASK_PROMPT = "Find where the price table is loaded and list its callers."
REPLY = "The failing test expected the old price table; updated it and the suite passes."
TEST_OUTPUT = "........................................ [100%]\n40 passed in 1.92s\n"


class FakeClaude:
    """Claude Code lines (2.x era, 1h cache tier as a subscription writes it)."""

    def __init__(
        self,
        home: Path,
        project: str,
        rng: random.Random,
        mode: Mode,
        model: str,
        journal: TruthJournal,
        subagents: int = 0,
        entrypoint: str | None = None,
    ) -> None:
        self.rng = rng
        self.mode = mode
        self.model = model
        self.journal = journal
        self.subagents = subagents  # every Nth call runs a subagent too (0: never)
        self.project = project
        self.session_id = uuid4(rng)
        self.path = home / "projects" / claude_project_slug(project) / f"{self.session_id}.jsonl"
        self.writer = ClaudeSessionWriter(
            LineSink(self.path, flush_each=True),
            session_id=self.session_id,
            cwd=project,
            version=VERSION_2X[-1],
            git_branch="main",
            rng=rng,
            entrypoint=entrypoint,
        )
        self.calls = 0
        self.cached = 0
        self.pending = rng.randrange(14_000, 22_000)  # system prompt and tools: the first write

    def _usage(self) -> ClaudeUsage:
        rng = self.rng
        inp = rng.randrange(3, 13)
        if self.mode == "runaway":
            # Cache thrash: a large prompt written to the cache every call and never read back.
            return ClaudeUsage(inp, rng.randrange(200, 2000), 0, 0, rng.randrange(60_000, 180_000))
        usage = ClaudeUsage(inp, rng.randrange(60, 1400), self.cached, 0, self.pending)
        self.cached += self.pending
        self.pending = usage.output + rng.randrange(200, 4000)
        if self.cached + self.pending > 160_000:  # auto-compaction
            self.cached = rng.randrange(14_000, 22_000)
            self.pending = rng.randrange(6_000, 16_000)
        return usage

    def call(self) -> None:
        at = now()
        turn_ends = self.calls % TURN == TURN - 1
        if self.calls % TURN == 0:
            self.writer.write_prompt(at, PROMPT)
        tool = ToolUse("Bash", {"command": "pytest -q"}, TEST_OUTPUT, {"stdout": TEST_OUTPUT}, 0)
        call = ClaudeCall(
            at=at,
            model=self.model,
            usage=self._usage(),
            text=REPLY if turn_ends else None,
            tools=() if turn_ends else (tool,),
            duration_s=0.0,
        )
        written = self.writer.write_call(call)
        if call.tools:
            self.writer.write_tool_results(call, written)
        self.journal.call(
            agent=Agent.CLAUDE_CODE,
            session_id=self.session_id,
            model=self.model,
            at=written.final_at,
            tokens=call.usage.tokens(split=True),
        )
        self.calls += 1
        if self.subagents and self.calls % self.subagents == 0:
            self._subagent()

    def _subagent(self) -> None:
        """A Task subagent's transcript in a file of its own, as Claude Code 2.x writes it."""
        rng = self.rng
        agent_id = hexid(rng, 7)
        folder = self.path.parent / self.session_id / "subagents"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"agent-{agent_id}.meta.json").write_bytes(
            orjson.dumps({"agentType": "general-purpose", "spawnDepth": 1})
        )
        writer = ClaudeSessionWriter(
            LineSink(folder / f"agent-{agent_id}.jsonl", flush_each=True),
            session_id=self.session_id,  # subagent lines carry the parent's sessionId
            cwd=self.project,
            version=VERSION_2X[-1],
            git_branch="main",
            rng=rng,
            agent_id=agent_id,
            sidechain=True,
        )
        try:
            at = now()
            writer.write_prompt(at, TASK_PROMPT)
            usage = ClaudeUsage(rng.randrange(3, 13), rng.randrange(200, 1500), 0, 0, 12_000)
            call = ClaudeCall(at=at, model=HAIKU, usage=usage, text=REPLY, tools=(), duration_s=0)
            written = writer.write_call(call)
        finally:
            writer.close()
        self.journal.call(
            agent=Agent.CLAUDE_CODE,
            session_id=self.session_id,
            model=HAIKU,
            at=written.final_at,
            tokens=usage.tokens(split=True),
            role=Role.SUBAGENT,
        )

    def limit_hit(self) -> None:
        """Claude Code's synthetic 429 line (research/log-formats.md §1.5)."""
        at = now()
        resets = _round_up(at + timedelta(hours=2), 20)
        text = f"You've hit your session limit · resets {claude_clock(resets)} (UTC)"
        self.writer.write_synthetic(at, text, error="rate_limit", status=429)
        self.journal.rate_limit_hit(
            agent=Agent.CLAUDE_CODE,
            session_id=self.session_id,
            at=at,
            window="5h",
            resets_at=resets,
            message=text,
            path=self.path,
        )

    def close(self) -> None:
        self.writer.close()


class FakeCodex:
    """A records-era Codex rollout: token_count (with rate_limits) + token_usage_record."""

    def __init__(
        self,
        home: Path,
        project: str,
        rng: random.Random,
        mode: Mode,
        model: str,
        journal: TruthJournal,
    ) -> None:
        self.rng = rng
        self.mode = mode
        self.model = model
        self.project = project
        self.journal = journal
        start = now()
        self.session_id = uuid7(rng, start)
        local = start.astimezone()  # Codex names its dirs and files in local time
        name = rollout_name(local, self.session_id)
        self.path = home / "sessions" / local.strftime("%Y/%m/%d") / name
        meta = session_meta(thread_id=self.session_id, at=start, cwd=project, records=True)
        git = {"commit_hash": hexid(rng, 40), "branch": "main", "repository_url": ""}
        self.writer = CodexRolloutWriter(
            LineSink(self.path, flush_each=True),
            meta=meta,
            at=start,
            rng=rng,
            records=True,
            git=git,
        )
        self.limits = CodexLimits(CodexPlan(), start, rng)
        self.writer.write_token_count(start, self.limits.snapshot())  # `info: null` first
        self.calls = 0
        self.context = rng.randrange(9_000, 16_000)
        self.cached_prefix = 0

    def _usage(self) -> CodexUsage:
        rng = self.rng
        output = rng.randrange(120, 3200)
        reasoning = int(output * rng.uniform(0.2, 0.85))
        if self.mode == "runaway":
            # Cache thrash, OpenAI style: huge prompts, nothing served from the cache.
            return CodexUsage(rng.randrange(100_000, 250_000), 0, output, reasoning)
        prompt = self.context
        cached = min(prompt, self.cached_prefix // 128 * 128)
        self.cached_prefix = prompt
        self.context = prompt + output + rng.randrange(200, 4000)
        if self.context > 220_000:  # auto-compaction
            self.context = rng.randrange(14_000, 30_000)
            self.cached_prefix = 0
        return CodexUsage(prompt, cached, output, reasoning)

    def call(self) -> None:
        at = now()
        turn_ends = self.calls % TURN == TURN - 1
        w = self.writer
        if self.calls % TURN == 0:
            w.write_turn_context(at, model=self.model, effort="medium", cwd=self.project)
            w.write_user_message(at, PROMPT)
        shell = ShellCall(("bash", "-lc", "pytest -q"), TEST_OUTPUT, 0.0)
        call = CodexCall(
            at=at,
            usage=self._usage(),
            duration_s=0.0,
            message=REPLY if turn_ends else None,
            shells=() if turn_ends else (shell,),
        )
        self.limits.bump()
        written = w.write_call(call, rate_limits=self.limits.snapshot(), cwd=self.project)
        if call.shells:
            w.write_tool_outputs(call, written)
        if turn_ends:
            w.write_task_complete(written.completed_at, message=REPLY)
        self.journal.call(
            agent=Agent.CODEX,
            session_id=self.session_id,
            model=self.model,
            at=written.completed_at,
            tokens=call.usage.tokens(),
        )
        self.calls += 1

    def limit_hit(self) -> None:
        """A reached `rate_limits` snapshot, then task_complete with usage_limit_exceeded
        (research/log-formats.md §2.5)."""
        at = now()
        self.writer.write_token_count(at, self.limits.snapshot(reached=True))
        window, resets = self.limits.primary_reset()
        clock = resets.astimezone().strftime("%I:%M %p").lstrip("0")
        text = (
            "You've hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro)"
            f" or try again at {clock}."
        )
        error = {"message": text, "codex_error_info": "usage_limit_exceeded"}
        self.writer.write_task_complete(at, message=None, error=error)
        self.journal.rate_limit_hit(
            agent=Agent.CODEX,
            session_id=self.session_id,
            at=at,
            window=window,
            resets_at=resets,
            message=text,
            path=self.path,
        )

    def close(self) -> None:
        self.writer.close()


# ---- the process ------------------------------------------------------------------------------


class _Stop(BaseException):
    """SIGTERM or SIGINT arrived: leave the run loop (BaseException: nothing swallows it)."""


def _on_stop(signum: int, frame: FrameType | None) -> None:
    # Further signals while closing files are ignored: one clean exit is enough.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise _Stop


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """Hold SIGTERM/SIGINT while one call is written, so its log lines and its truth line
    are both on disk or neither is started (SIGKILL aside)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def set_process_name(name: str) -> bool:
    """Set this process's comm (what `ps` and psutil's name() show). Linux only."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)) == 0


def spawn_tools(n: int) -> list[subprocess.Popen[bytes]]:
    """Tool subprocesses as an agent's Bash tool runs them: a shell with a child of its own
    (`& wait` keeps the shell from exec-ing into sleep)."""
    shell = shutil.which("bash") or "/bin/sh"
    tools = [
        subprocess.Popen(
            [shell, "-c", "sleep 1000 & wait"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]
    # Wait for each shell's child: "ready" then means the whole tree exists, and ending the
    # tools cannot race a shell that has not forked yet (its child would be orphaned).
    deadline = time.monotonic() + 10
    for tool in tools:
        with suppress(psutil.Error):
            shell_proc = psutil.Process(tool.pid)
            while not shell_proc.children() and time.monotonic() < deadline:
                time.sleep(0.005)
    return tools


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m node_agent.simulate.fake_agent",
        description="A live stand-in agent process writing real-format logs.",
    )
    p.add_argument("--agent", required=True, choices=[a.value for a in PROCESS_NAMES])
    p.add_argument("--home", type=Path, help="agent home (default: CLAUDE_CONFIG_DIR/CODEX_HOME)")
    p.add_argument("--session-seed", type=int, help="seed for ids and token counts")
    p.add_argument("--pace", type=float, default=1.0, help="seconds between calls")
    p.add_argument("--mode", choices=("normal", "runaway", "ratelimit"), default="normal")
    p.add_argument("--children", type=int, default=1, help="tool subprocesses to start")
    p.add_argument("--calls", type=int, help="calls to make (default: no end; ratelimit: 3)")
    p.add_argument(
        "--subagents", type=int, default=0, help="Claude: every Nth call runs a subagent too"
    )
    p.add_argument("--project", help="the session's cwd (default: the current directory)")
    p.add_argument("--truth", type=Path, help="append one JSON line per call here")
    p.add_argument("--model", help="model to log (default: Sonnet 4.5 / gpt-5-codex)")
    p.add_argument("--machine", default=socket.gethostname(), help="machine name in truth")
    p.add_argument("--profile", help="profile name in truth (default: the home's dir name)")
    p.add_argument("--then", choices=("idle", "exit"), default="idle", help="after the calls")
    p.add_argument(
        "--entrypoint", help='Claude: how Claude Code says it was started ("cli", "sdk-cli", ...)'
    )
    p.add_argument(
        "--first-call-after",
        type=float,
        default=0.0,
        help="seconds at the prompt before the first call (default: at once)",
    )
    p.add_argument(
        "--commit-every",
        type=int,
        default=0,
        help="commit every N calls as an agent does, in the project's git repository (made if"
        " missing; 0: never)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    agent = Agent(args.agent)
    home: Path | None = args.home
    if home is None:
        variable = HOME_VARIABLES[agent]
        if not os.environ.get(variable):
            print(f"fake_agent: give --home or set {variable}", file=sys.stderr)
            return 2
        home = Path(os.environ[variable])
    home = home.expanduser().absolute()
    truth: Path | None = args.truth.absolute() if args.truth else None  # before chdir
    project = os.path.abspath(args.project) if args.project else os.getcwd()
    if os.path.isdir(project):
        os.chdir(project)  # an agent runs in its project: the inventory reports this cwd
    signal.signal(signal.SIGTERM, _on_stop)
    signal.signal(signal.SIGINT, _on_stop)
    set_process_name(PROCESS_NAMES[agent])
    rng = random.Random(args.session_seed)
    journal = TruthJournal(truth, machine=args.machine, profile=args.profile or home.name)
    model = args.model or (SONNET if agent is Agent.CLAUDE_CODE else GPT5_CODEX)
    mode: Mode = args.mode
    tools: list[subprocess.Popen[bytes]] = []
    session: FakeSession | None = None
    try:
        tools = spawn_tools(args.children)  # not while signals are blocked: they inherit that
        with _uninterrupted():
            if agent is Agent.CLAUDE_CODE:
                session = FakeClaude(
                    home, project, rng, mode, model, journal, args.subagents, args.entrypoint
                )
            else:
                session = FakeCodex(home, project, rng, mode, model, journal)
        _announce(session, agent, tools)
        commits = _Commits(Path(project), agent, session.session_id, args.commit_every)
        if args.commit_every > 0:
            init_repository(Path(project))  # made once; agents sharing the project share it
        time.sleep(max(0.0, args.first_call_after))  # at its prompt, not asked yet
        _run(session, mode, args.calls, args.pace, commits)
        if args.then == "exit":
            _end_tools(tools)  # a finished agent ends its tools
            return 0
        while True:  # at its prompt, until stopped
            time.sleep(3600)
    except _Stop:
        return 0  # real agents leave their tool subprocesses to whoever kills the tree
    finally:
        if session is not None:
            session.close()
        journal.close()


def _end_tools(tools: list[subprocess.Popen[bytes]]) -> None:
    procs: list[psutil.Process] = []
    for tool in tools:
        with suppress(psutil.Error):
            shell = psutil.Process(tool.pid)
            procs += [shell, *shell.children(recursive=True)]
    for proc in procs:
        with suppress(psutil.Error):
            proc.terminate()
    for tool in tools:
        tool.wait()


@dataclass(slots=True)
class _Commits:
    """Every `every` calls, a commit in the project's repository (none when 0)."""

    project: Path
    agent: Agent
    session_id: str
    every: int
    made: int = 0

    def after_call(self, calls: int) -> None:
        if self.every > 0 and calls % self.every == 0:
            self.made += commit(self.project, self.agent, self.session_id, self.made + 1)


def _run(
    session: FakeSession, mode: Mode, calls: int | None, pace: float, commits: _Commits
) -> None:
    limit = (calls or LIMIT_AFTER) if mode == "ratelimit" else calls
    made = 0
    while limit is None or limit <= 0 or made < limit:
        if made:
            time.sleep(pace)
        with _uninterrupted():
            session.call()
        made += 1
        with _uninterrupted():  # a commit is whole or not made: no index lock left behind
            commits.after_call(made)
    if mode == "ratelimit":
        time.sleep(pace)
        with _uninterrupted():
            session.limit_hit()


def _announce(session: FakeSession, agent: Agent, tools: list[subprocess.Popen[bytes]]) -> None:
    ready = {
        "ready": True,
        "pid": os.getpid(),
        "agent": agent.value,
        "session_id": session.session_id,
        "path": str(session.path),
        "children": [t.pid for t in tools],
    }
    with suppress(OSError):  # nobody reads our stdout
        print(json.dumps(ready), flush=True)


# ---- launching one (tests, demo) --------------------------------------------------------------


@dataclass(slots=True)
class LaunchedAgent:
    """A fake agent started by `launch`, with what its ready line said."""

    popen: subprocess.Popen[bytes]
    pid: int
    session_id: str
    path: Path
    children: list[int]
    _seen: dict[int, psutil.Process] = field(default_factory=dict)

    def tree(self) -> list[psutil.Process]:
        """The agent and its live descendants now (remembered for `destroy`)."""
        found: list[psutil.Process] = []
        for proc in list(self._seen.values()):
            try:
                if proc.is_running():
                    found.append(proc)
                    found.extend(proc.children(recursive=True))
            except psutil.Error:
                continue
        unique = {p.pid: p for p in found}
        self._seen.update(unique)
        return list(unique.values())

    def destroy(self) -> None:
        """SIGKILL the agent and every descendant it ever had here, orphans included."""
        procs = self.tree() + list(self._seen.values())
        for proc in procs:
            with suppress(psutil.Error):
                proc.kill()  # psutil checks the start time: a recycled pid is not hit
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        # Dead is enough: an orphan's zombie waits for init, which may reap it late.
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def launch(
    agent: Agent,
    home: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
    timeout: float = 30.0,
) -> LaunchedAgent:
    """Start a fake agent with its home variable set to `home` (as a profile switcher would)
    and wait for its ready line. `args` are further CLI options; `env` replaces os.environ;
    `prefix` runs it under a wrapper command (e.g. a stand-in for Codex's node launcher)."""
    environ = {**(os.environ if env is None else env), HOME_VARIABLES[agent]: str(home)}
    command = [*prefix, sys.executable, "-m", MODULE, "--agent", agent.value, "--home", str(home)]
    command += args
    popen = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=environ)
    launched = LaunchedAgent(popen, popen.pid, "", home, [])
    launched._seen[popen.pid] = psutil.Process(popen.pid)
    assert popen.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([popen.stdout], [], [], left)[0]:
            launched.destroy()
            raise TimeoutError(f"fake {agent.value} agent not ready after {timeout:g} s")
        chunk = os.read(popen.stdout.fileno(), 4096)
        if not chunk:
            launched.destroy()
            raise RuntimeError(f"fake {agent.value} agent exited with {popen.wait()}")
        line += chunk
    ready = json.loads(line)
    launched.session_id = ready["session_id"]
    launched.path = Path(ready["path"])
    launched.children = ready["children"]
    launched.tree()
    return launched


if __name__ == "__main__":
    raise SystemExit(main())

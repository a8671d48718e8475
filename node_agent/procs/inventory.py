"""Which coding agents run on this machine right now, under which profile, in which session.

One sweep reads (ppid, name, status) of every process from /proc (`proc_table`); agents are
matched by `identify`, and only the top-most process of an agent's own tree is reported (a
Codex node wrapper and its native `codex` child, or Gemini's relaunched child, are one agent).
Static facts (command line, home, profile, cwd) are read once per process identity (pid,
create_time); status, CPU and memory are read every scan. The node-agent must run as the
agents' owner: where the kernel refuses a read (AccessDenied), that field is None and the scan
goes on.

Not thread-safe: one caller scans at a time.
"""

from __future__ import annotations

import pwd
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import psutil

from shared.config import NodeConfig
from shared.events import Agent

from .identify import SessionFile, agent_of, home_of, session_file
from .proc_table import ProcRow as _Row
from .proc_table import cmdline as _cmdline
from .proc_table import sweep as _sweep

State = Literal["running", "paused", "zombie"]
T = TypeVar("T")
_SESSION_SEARCH_LIMIT = 64  # descendants whose open files are read, per agent and scan


@dataclass(frozen=True, slots=True)
class AgentProcess:
    pid: int
    create_time: float  # psutil's; with pid, the process's identity in commands
    agent: Agent
    profile: str | None  # the configured profile whose home the agent uses
    session_id: str | None  # from a session log held open by the agent or a descendant
    cwd: str | None
    cmdline: tuple[str, ...]
    state: State
    cpu_percent: float  # since the previous scan (0.0 on the first)
    rss: int  # bytes
    children: int  # live (non-zombie) descendants
    home: str | None = None  # the agent's data home as its environment names it


@dataclass(slots=True)
class _Known:
    """What is kept about one agent process between scans."""

    proc: psutil.Process  # kept so cpu_percent has its previous sample
    cmdline: tuple[str, ...]
    home: Path | None
    profile: str | None
    cwd: str | None
    session: SessionFile | None = None  # sticky: the last session seen open


class ProcessInventory:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        # (pid, create_time, name) -> (agent, cmdline); name is in the key because exec()
        # keeps pid and start time but changes comm (a forked tool child renames itself).
        self._classes: dict[tuple[int, float, str], tuple[Agent | None, tuple[str, ...]]] = {}
        self._known: dict[tuple[int, float], _Known] = {}

    def scan(self) -> list[AgentProcess]:
        rows = {row.pid: row for row in _sweep()}
        kids: dict[int, list[int]] = {}
        for row in rows.values():
            kids.setdefault(row.ppid, []).append(row.pid)
        matched = self._classify(rows)
        found: list[AgentProcess] = []
        for pid, agent in matched.items():
            if _has_ancestor(pid, agent, rows, matched):
                continue
            row = rows[pid]
            known = self._known.get((pid, row.create_time))
            if known is None:
                known = self._learn(row, agent)
                if known is None:
                    continue
                self._known[(pid, row.create_time)] = known
            descendants = list(_descendants(pid, rows, kids))
            found.append(self._report(row, agent, known, descendants))
        live = {(row.pid, row.create_time) for row in rows.values()}
        self._known = {key: k for key, k in self._known.items() if key in live}
        return sorted(found, key=lambda p: p.pid)

    # -- identification ----------------------------------------------------------------------

    def _classify(self, rows: Mapping[int, _Row]) -> dict[int, Agent]:
        classes: dict[tuple[int, float, str], tuple[Agent | None, tuple[str, ...]]] = {}
        matched: dict[int, Agent] = {}
        for row in rows.values():
            key = (row.pid, row.create_time, row.name)
            cls = self._classes.get(key)
            if cls is None:
                cmdline = _cmdline(row.pid)
                cls = (agent_of(row.name, cmdline), cmdline)
            classes[key] = cls
            if cls[0] is not None:
                matched[row.pid] = cls[0]
        self._classes = classes  # forget processes that are gone
        return matched

    def _learn(self, row: _Row, agent: Agent) -> _Known | None:
        try:
            proc = psutil.Process(row.pid)
            if abs(proc.create_time() - row.create_time) > 0.005:
                return None  # the pid was recycled since the sweep
        except psutil.Error:
            return None
        cmdline = self._classes.get((row.pid, row.create_time, row.name), (None, ()))[1]
        cwd = _read(proc.cwd)
        environ = _read(proc.environ)
        home: Path | None = None
        if environ is not None:
            home = home_of(agent, environ, _user_home(proc), cwd)
        profile = self._profile(agent, home) if home else None
        return _Known(proc, cmdline, home, profile, cwd)

    def _profile(self, agent: Agent, path: Path) -> str | None:
        try:
            profile = self.config.profile_for(path)
        except (OSError, RuntimeError):  # unreadable dirs, symlink loops
            return None
        return profile.name if profile is not None and profile.agent is agent else None

    # -- dynamic facts ---------------------------------------------------------------------------

    def _report(
        self, row: _Row, agent: Agent, known: _Known, descendants: list[_Row]
    ) -> AgentProcess:
        proc = known.proc
        state: State = "running"
        if row.status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            state = "zombie"
        elif row.status == psutil.STATUS_STOPPED:
            state = "paused"
        cpu = 0.0
        rss = 0
        if state != "zombie":
            try:
                with proc.oneshot():
                    cpu = proc.cpu_percent(None)
                    rss = proc.memory_info().rss
            except psutil.Error:
                pass
            session = _open_session(agent, [row, *descendants])
            if session is not None:
                known.session = session
        profile = known.profile
        if profile is None and known.home is None and known.session is not None:
            # The environment was unreadable: the session log's place names the profile.
            profile = self._profile(agent, Path(known.session.path))
        return AgentProcess(
            pid=row.pid,
            create_time=row.create_time,
            agent=agent,
            profile=profile,
            session_id=known.session.session_id if known.session else None,
            cwd=known.cwd,
            cmdline=known.cmdline,
            state=state,
            cpu_percent=cpu,
            rss=rss,
            children=sum(d.status != psutil.STATUS_ZOMBIE for d in descendants),
            home=str(known.home) if known.home else None,
        )


def _has_ancestor(
    pid: int, agent: Agent, rows: Mapping[int, _Row], matched: Mapping[int, Agent]
) -> bool:
    """True when an ancestor runs the same agent (then this process is part of that one).

    Another agent above (Claude Code running `codex exec` as a tool) does not hide it: that is
    a second agent with its own profile and costs."""
    seen = {pid}
    parent = rows[pid].ppid
    while parent in rows and parent not in seen:
        if matched.get(parent) is agent:
            return True
        seen.add(parent)
        parent = rows[parent].ppid
    return False


def _descendants(
    pid: int, rows: Mapping[int, _Row], kids: Mapping[int, list[int]]
) -> Iterator[_Row]:
    queue = deque(kids.get(pid, ()))
    seen = {pid}
    while queue:
        child = queue.popleft()
        if child in seen:
            continue
        seen.add(child)
        row = rows[child]
        # A child cannot predate its parent: if it seems to, the parent's pid was recycled.
        if row.create_time >= rows[row.ppid].create_time:
            yield row
            queue.extend(kids.get(child, ()))


def _open_session(agent: Agent, tree: list[_Row]) -> SessionFile | None:
    """The session log held open for writing by the agent (or, for wrappers whose child does
    the work, by a descendant); None when nothing readable is open."""
    for row in tree[:_SESSION_SEARCH_LIMIT]:
        try:
            files = psutil.Process(row.pid).open_files()
        except psutil.Error:
            continue
        candidates = [
            found
            for f in files
            if f.mode != "r" and (found := session_file(agent, f.path)) is not None
        ]
        if candidates:
            return min(candidates)
    return None


def _read(getter: Callable[[], T]) -> T | None:
    try:
        return getter()
    except psutil.Error:
        return None


def _user_home(proc: psutil.Process) -> Path | None:
    try:
        return Path(pwd.getpwuid(proc.uids().real).pw_dir)
    except (psutil.Error, KeyError):
        return None

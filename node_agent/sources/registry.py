"""The sources a node knows, in one place. Each source's module is loaded when its source is
first asked for: a scan finds its homes with `all_homes` (`sources.homes`) and loads the
readers of the agents it found only."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Final

from node_agent.sources.homes import HOMES, Homes
from shared.events import Agent

if TYPE_CHECKING:
    from node_agent.sources.base import Source

# Each agent's source: its module and class.
_SOURCES: Final[dict[Agent, tuple[str, str]]] = {
    Agent.CLAUDE_CODE: ("node_agent.sources.claude", "ClaudeSource"),
    Agent.CODEX: ("node_agent.sources.codex", "CodexSource"),
    Agent.GEMINI: ("node_agent.sources.gemini", "GeminiSource"),
    Agent.OPENCODE: ("node_agent.sources.opencode", "OpenCodeSource"),
    Agent.CURSOR: ("node_agent.sources.cursor", "CursorSource"),
}


def all_homes() -> list[Homes]:
    """Each agent's homes, in the order of `all_sources`."""
    return [cls() for cls in HOMES]


def source_type(agent: Agent) -> type[Source]:
    module, name = _SOURCES[agent]
    found: type[Source] = getattr(import_module(module), name)
    return found


def all_sources() -> list[Source]:
    """Fresh instances (sources hold per-read dedupe state)."""
    return [source_type(cls.agent)() for cls in HOMES]


def source_for(agent: Agent) -> Source:
    """A fresh instance of the source of `agent`."""
    return source_type(agent)()

"""The sources a node knows, in one place."""

from __future__ import annotations

from typing import Final

from node_agent.sources.base import Source
from node_agent.sources.claude import ClaudeSource
from node_agent.sources.codex import CodexSource
from node_agent.sources.cursor import CursorSource
from node_agent.sources.gemini import GeminiSource
from node_agent.sources.opencode import OpenCodeSource
from shared.events import Agent

SOURCE_TYPES: Final[tuple[type[Source], ...]] = (
    ClaudeSource,
    CodexSource,
    GeminiSource,
    OpenCodeSource,
    CursorSource,
)


def all_sources() -> list[Source]:
    """Fresh instances (sources hold per-read dedupe state)."""
    return [cls() for cls in SOURCE_TYPES]


def source_for(agent: Agent) -> Source:
    """A fresh instance of the source of `agent`."""
    return next(cls for cls in SOURCE_TYPES if cls.agent is agent)()

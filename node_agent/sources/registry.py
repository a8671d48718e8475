"""The sources a node knows, in one place."""

from __future__ import annotations

from node_agent.sources.base import Source
from node_agent.sources.claude import ClaudeSource
from node_agent.sources.codex import CodexSource
from node_agent.sources.cursor import CursorSource
from node_agent.sources.gemini import GeminiSource
from node_agent.sources.opencode import OpenCodeSource


def all_sources() -> list[Source]:
    """Fresh instances (sources hold per-read dedupe state)."""
    return [ClaudeSource(), CodexSource(), GeminiSource(), OpenCodeSource(), CursorSource()]

"""Which logged commits are the agent's: the rule that matched, or None.

- `trailer`: a `Co-authored-by:` naming an agent (Claude Code adds `Co-Authored-By: Claude
  <noreply@anthropic.com>`; Cursor, Aider, OpenCode and others name themselves the same way);
- `identity`: the commit's author is an agent's identity (a bot account or address), or one of
  the identities the operator named (agents that commit as the user, such as Codex CLI);
- `marker`: the message carries an agent's signature line (`Generated with [Claude Code]`).

Only commits whose author time falls within the session (first call - MARGIN_BEFORE, last
call + MARGIN_AFTER) are considered at all.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from node_agent.outcomes.parse import LoggedCommit

# A commit is written after the call that decided it (the call's time is when its answer came)
# and before the call that reads the commit's result.
MARGIN_BEFORE: Final = 60.0
MARGIN_AFTER: Final = 300.0
AGENT_WORDS: Final = (
    "claude",
    "anthropic.com",
    "codex",
    "openai.com",
    "gemini",
    "opencode",
    "cursoragent",
    "cursor agent",
    "aider",
    "copilot",
)
# Author addresses agents commit under (a person called Claude is not an agent: names alone
# only count with a bot suffix).
AGENT_EMAIL_ENDINGS: Final = (
    "@anthropic.com",
    "@openai.com",
    "cursoragent@cursor.com",
    "@opencode.ai",
    "noreply@aider.chat",
)
MARKERS: Final = ("generated with [claude code]", "generated with claude code", "🤖 generated with")


def _names_agent(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in AGENT_WORDS)


def rule_for(commit: LoggedCommit, identities: Collection[str] = ()) -> str | None:
    """The rule by which `commit` is an agent's work, or None. `identities`: further author
    names or emails (lower case) that commit on an agent's behalf."""
    if any(_names_agent(value) for value in commit.co_authors):
        return "trailer"
    name, email = commit.author_name.lower(), commit.author_email.lower()
    bot = name.endswith("[bot]") and _names_agent(name)
    if bot or email.endswith(AGENT_EMAIL_ENDINGS) or name in identities or email in identities:
        return "identity"
    if any(marker in commit.body.lower() for marker in MARKERS):
        return "marker"
    return None


def within(commit: LoggedCommit, first: float, last: float) -> bool:
    return first - MARGIN_BEFORE <= commit.author_ts <= last + MARGIN_AFTER

"""Commits made the way coding agents make them, for the fake agents of the demo and tests: a
small change in the session's project and a commit carrying the agent's `Co-authored-by`
trailer, so that cost per commit (`--by commit`, the dashboard's `o`) has something to show.

Git runs with a fixed identity and no user or system config, so the demo neither depends on
nor touches the machine's git setup. A failed git (none installed, another agent holding the
index lock of a shared project) costs one commit, never the agent's calls."""

from __future__ import annotations

import os
import shutil
import subprocess
import zlib
from pathlib import Path
from typing import Final

from shared.events import Agent

TRAILERS: Final = {
    Agent.CLAUDE_CODE: "Co-Authored-By: Claude <noreply@anthropic.com>",
    Agent.CODEX: "Co-authored-by: Codex <noreply@openai.com>",
}
SUBJECTS: Final = (
    "fix the retry loop in the sync worker",
    "add tests for the invoice rounding",
    "teach the parser about empty lines",
    "speed up the report query",
    "handle a missing config file",
    "rename the cache helpers",
)
REMOTE_OWNER: Final = "example-org"  # a made-up owner: the demo's nodes have no forge token
GIT_TIMEOUT_S: Final = 10.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Demo Developer",
        "GIT_AUTHOR_EMAIL": "dev@example.org",
        "GIT_COMMITTER_NAME": "Demo Developer",
        "GIT_COMMITTER_EMAIL": "dev@example.org",
    }
    return env


def _git(project: Path, *args: str) -> bool:
    if shutil.which("git") is None:
        return False
    try:
        done = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", *args],
            cwd=project,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def init_repository(project: Path) -> bool:
    """Make `project` a repository on branch main with a person's first commit and an origin
    remote (so it has a name like a real one); True if it is one afterwards."""
    if (project / ".git").exists():
        return True
    if not _git(project, "init", "-q", "-b", "main"):
        return False
    (project / "README.md").write_text(f"# {project.name}\n")
    return (
        _git(
            project, "remote", "add", "origin", f"https://github.com/{REMOTE_OWNER}/{project.name}"
        )
        and _git(project, "add", "README.md")
        and _git(project, "commit", "-q", "-m", "start the project")
    )


def commit(project: Path, agent: Agent, session_id: str, number: int) -> bool:
    """The agent's `number`th commit of session `session_id` in `project` (a repository);
    False when it could not be made (no repository, git failed or is missing)."""
    if not (project / ".git").exists():
        return False
    change = project / "src" / f"{session_id[:8]}.txt"
    change.parent.mkdir(parents=True, exist_ok=True)
    with change.open("a") as out:
        out.write(f"step {number}\n")
    subject = SUBJECTS[(zlib.crc32(session_id.encode()) + number) % len(SUBJECTS)]
    trailer = TRAILERS.get(agent, TRAILERS[Agent.CLAUDE_CODE])
    relative = str(change.relative_to(project))
    return _git(project, "add", relative) and _git(
        project, "commit", "-q", "-m", subject, "-m", trailer, "--", relative
    )

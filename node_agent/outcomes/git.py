"""Running git read-only: the only place this package starts a process.

Nothing here may change a repository: no command that writes, optional locks off (`git status`
would otherwise refresh the index), no fsmonitor daemon started, no hooks, no pager, no
prompt for credentials, and a timeout so that a huge history or a hung filesystem costs
seconds, not the daemon. Every failure is a `GitError` with a status word and a sentence.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

TIMEOUT_S: Final = 10.0
MAX_OUTPUT: Final = 16 << 20  # a history larger than this is cut (and said so)
SAFE_OPTIONS: Final = (
    "--no-pager",
    "--no-optional-locks",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "log.showSignature=false",
    "-c",
    "color.ui=false",
)


class GitError(Exception):
    """git could not answer: `status` is one of shared.outcomes.STATUSES."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_OPTIONAL_LOCKS="0",
        GIT_TERMINAL_PROMPT="0",
        GIT_PAGER="cat",
        PAGER="cat",
        LC_ALL="C",
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


def run_git(cwd: Path, args: Sequence[str], *, timeout: float = TIMEOUT_S) -> str:
    """git's standard output for `args` run in `cwd`; raises GitError when it fails."""
    try:
        # its own process group: a timeout ends whatever it started too (a wrapper script's
        # children would hold its pipes open)
        proc = subprocess.Popen(
            ["git", *SAFE_OPTIONS, *args],
            cwd=cwd,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        if not cwd.is_dir():
            raise GitError("no_dir", f"{cwd}: no such folder (anymore)") from exc
        raise GitError("no_git", "git is not installed (no git on PATH)") from exc
    except NotADirectoryError as exc:
        raise GitError("no_dir", f"{cwd}: not a folder") from exc
    except PermissionError as exc:
        raise GitError("error", f"{cwd}: permission denied") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise GitError("timeout", f"git {args[0]} took over {timeout:g} s in {cwd}") from exc
    if proc.returncode != 0:
        words = err.decode(errors="replace").strip().splitlines()
        why = words[-1] if words else f"exit status {proc.returncode}"
        if "not a git repository" in why:
            raise GitError("not_a_repo", f"{cwd} is not in a git repository")
        raise GitError("error", f"git {args[0]} in {cwd}: {why}")
    return out[:MAX_OUTPUT].decode(errors="replace")

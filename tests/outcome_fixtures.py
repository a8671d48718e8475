"""Real git repositories and Claude Code logs for the cost-per-outcome tests, and a forge
(GitHub's REST shapes) served on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()
MODEL = "claude-sonnet-4-5-20250929"
CLAUDE_TRAILER = "Co-Authored-By: Claude <noreply@anthropic.com>"


def git(
    repo: Path,
    *args: str,
    when: float | None = None,
    author: str = "Dev <dev@example.com>",
) -> str:
    name, _, email = author.partition(" <")
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME=name,
        GIT_AUTHOR_EMAIL=email.rstrip(">"),
        GIT_COMMITTER_NAME=name,
        GIT_COMMITTER_EMAIL=email.rstrip(">"),
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_CONFIG_NOSYSTEM="1",
    )
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{int(when)} +0000"
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def make_repo(
    path: Path, remote: str | None = "git@github.com:acme/widget.git", branch: str = "feature/x"
) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    if remote:
        git(path, "remote", "add", "origin", remote)
    (path / "README").write_text("start\n")
    git(path, "add", "README")
    git(path, "commit", "-q", "-m", "start", when=T0 - 86400)
    git(path, "checkout", "-q", "-b", branch)
    return path


def commit(
    repo: Path,
    when: float,
    subject: str,
    *,
    lines: int = 3,
    trailer: str | None = CLAUDE_TRAILER,
    author: str = "Dev <dev@example.com>",
    file: str = "work.txt",
) -> str:
    target = repo / file
    old = target.read_text() if target.exists() else ""
    target.write_text(old + "".join(f"{subject} {i}\n" for i in range(lines)))
    git(repo, "add", file)
    message = subject + (f"\n\n{trailer}\n" if trailer else "\n")
    git(repo, "commit", "-q", "-m", message, when=when, author=author)
    return git(repo, "rev-parse", "HEAD")


def claude_call(
    session: str,
    cwd: Path,
    branch: str,
    at: float,
    n: int,
    *,
    tool: tuple[str, dict[str, Any]] | None = None,
    output: int = 1000,
    sidechain: bool = False,
) -> dict[str, Any]:
    """One assistant line: a priced call of 10,000 input and `output` output tokens."""
    content: list[dict[str, Any]] = [{"type": "text", "text": "ok"}]
    if tool is not None:
        content = [
            {"type": "tool_use", "id": f"toolu_{session[:4]}{n}", "name": tool[0], "input": tool[1]}
        ]
    line: dict[str, Any] = {
        "parentUuid": None,
        "isSidechain": sidechain,
        "userType": "external",
        "cwd": str(cwd),
        "sessionId": session,
        "version": "2.0.30",
        "gitBranch": branch,
        "type": "assistant",
        "uuid": f"{session}-{n}",
        "timestamp": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
        "requestId": f"req_{session}_{n}",
        "message": {
            "id": f"msg_{session}_{n}",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": content,
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 10_000,
                "output_tokens": output,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        },
    }
    if sidechain:
        line["agentId"] = "a1b2c3"
    return line


def write_session(home: Path, session: str, lines: list[dict[str, Any]]) -> Path:
    """A Claude Code home holding one session's transcript (appended to if it exists)."""
    slug = "-" + str(lines[0]["cwd"]).strip("/").replace("/", "-")
    path = home / "projects" / slug / f"{session}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for line in lines:
            fh.write(json.dumps(line) + "\n")
    return path


# ---- the forge -------------------------------------------------------------------------


Route = Callable[[str, dict[str, list[str]], dict[str, str]], tuple[int, dict[str, str], Any]]


@contextmanager
def forge(route: Route) -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server answering GETs through `route(path, query, headers)`; yields its
    base URL and the list of request paths (with queries) it saw."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.path)
            parts = urlsplit(self.path)
            status, headers, body = route(parts.path, parse_qs(parts.query), dict(self.headers))
            blob = json.dumps(body).encode()
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def pull(
    number: int, branch: str, *, state: str = "closed", merged: bool = True, owner: str = "acme"
) -> dict[str, Any]:
    """A pull request in the shape of GitHub's `GET /repos/{o}/{r}/pulls` items (the fields
    read, and some others as GitHub sends them)."""
    return {
        "url": f"https://api.github.com/repos/{owner}/widget/pulls/{number}",
        "html_url": f"https://github.com/{owner}/widget/pull/{number}",
        "number": number,
        "state": state,
        "title": f"PR {number}",
        "user": {"login": "dev", "type": "User"},
        "created_at": "2026-12-01T09:00:00Z",
        "merged_at": "2026-12-01T12:00:00Z" if merged else None,
        "merge_commit_sha": "f" * 40 if merged else None,
        "draft": False,
        "head": {"label": f"{owner}:{branch}", "ref": branch, "sha": "a" * 40},
        "base": {"label": f"{owner}:main", "ref": "main", "sha": "b" * 40},
    }

"""Pure parsers of git's answers: a remote URL to a stable repository id, `git log` records to
commits. No I/O here (see `git`), so each is tested on text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

# Fields of one `git log` record, after its \x1e start: hash, author time, author name and
# email, subject, Co-authored-by values (\x1c between them), body; \x1f between them, and one
# more \x1f before the --numstat lines.
LOG_FORMAT: Final = "%x1e%H%x1f%at%x1f%an%x1f%ae%x1f%s%x1f" + (
    "%(trailers:key=Co-authored-by,valueonly,separator=%x1c)%x1f%b%x1f"
)
_SCP_LIKE: Final = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>[^/].*)$")


@dataclass(frozen=True, slots=True)
class LoggedCommit:
    sha: str
    author_ts: float
    author_name: str
    author_email: str
    subject: str
    co_authors: tuple[str, ...]
    body: str
    lines_added: int
    lines_deleted: int


def normalise_remote(url: str) -> str | None:
    """`host/owner/repo` for a remote URL in any of git's spellings (https, ssh, scp-like
    `git@host:owner/repo.git`), without user, password, port or `.git`; None when it is a
    local path or not a URL."""
    url = url.strip()
    if not url:
        return None
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme == "file" or not parts.hostname:
            return None
        host, path = parts.hostname, parts.path
    elif match := _SCP_LIKE.match(url):
        host, path = match["host"], match["path"]
    else:
        return None
    path = path.strip("/").removesuffix(".git").strip("/")
    if not path:
        return None
    return f"{host.lower()}/{path}"


def github_slug(repo: str, host: str = "github.com") -> tuple[str, str] | None:
    """(owner, name) of a normalised remote on `host`, else None."""
    head, _, rest = repo.partition("/")
    owner, _, name = rest.partition("/")
    if head != host or not owner or not name or "/" in name:
        return None
    return owner, name


def _lines(numstat: str) -> tuple[int, int]:
    added = deleted = 0
    for line in numstat.splitlines():
        fields = line.split("\t", 2)
        if len(fields) != 3:
            continue
        # a binary file shows "-": it has no lines
        added += int(fields[0]) if fields[0].isdigit() else 0
        deleted += int(fields[1]) if fields[1].isdigit() else 0
    return added, deleted


def parse_log(text: str) -> list[LoggedCommit]:
    """The commits of `git log --numstat --format=LOG_FORMAT` output; a damaged record is
    skipped (git wrote it, but a cut at MAX_OUTPUT can leave half of one)."""
    commits = []
    for record in text.split("\x1e")[1:]:
        head = record.split("\x1f", 6)
        if len(head) != 7 or "\x1f" not in head[6]:
            continue
        sha, at, name, email, subject, trailers, rest = head
        body, numstat = rest.rsplit("\x1f", 1)
        try:
            author_ts = float(at)
        except ValueError:
            continue
        added, deleted = _lines(numstat)
        co_authors = tuple(t.strip() for t in trailers.split("\x1c") if t.strip())
        commits.append(
            LoggedCommit(sha, author_ts, name, email, subject, co_authors, body, added, deleted)
        )
    return commits

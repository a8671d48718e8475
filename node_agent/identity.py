"""Who is logged in to an agent home, for homes that several profiles (accounts) share.

When one `CLAUDE_CONFIG_DIR` or `CODEX_HOME` is logged in to different accounts over time, the
directory no longer tells the profile; the account recorded by the agent does. Only
non-secret identity fields are copied out (research/log-formats.md §1.5, §2.5, §3.4):

- Claude Code: `<home>/.claude.json` (with `CLAUDE_CONFIG_DIR`), else `.claude.json` beside a
  home named `.claude` (the default `~/.claude` keeps it in `~`): `oauthAccount.accountUuid`,
  `.emailAddress`, `.organizationUuid`. That file can also hold `primaryApiKey`: it is parsed in
  memory, the three fields are copied, the rest is dropped at once and never logged.
- Codex: `<home>/auth.json`: `tokens.account_id` and `auth_mode`, plus a top-level plain `email`
  if a release writes one. The email otherwise exists only inside `tokens.id_token`, a signed
  JWT: it is a credential, so it is never decoded; Codex identities are told by account id.
  `OPENAI_API_KEY` and every token are never copied; an API-key login has no account identity
  (None), so give API-key profiles their own home.
- Gemini CLI: `<home>/google_accounts.json` -> `active` (an email; the file holds no secret).

Errors never quote file contents (a malformed credential file is still a credential file).
A file that cannot be parsed keeps the last identity read; a missing file or a file without
an account means "nobody identifiable is logged in" (None).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from shared.config import Profile
from shared.events import Agent

log = logging.getLogger(__name__)

MAX_BYTES: Final = 64 << 20  # .claude.json grows with project history; a bound, not a target


@dataclass(frozen=True, slots=True)
class Identity:
    """The account an agent home is logged in to: ids and an email, never a credential."""

    account_id: str | None
    email: str | None = None
    organization: str | None = None

    def matches(self, account: str) -> bool:
        """True when a profile's configured `account` names this identity."""
        if account == self.account_id:
            return True
        return self.email is not None and account.casefold() == self.email.casefold()


@dataclass(frozen=True, slots=True)
class IdentitySwitch:
    """The identity of a home as first seen, or after it changed."""

    agent: Agent
    home: Path
    identity: Identity | None
    ts: float  # the identity file's mtime: when the login was written
    origin: str


class IdentityError(ValueError):
    """An identity file that cannot be parsed; the message names the file, never its content."""


def identity_files(agent: Agent, home: Path) -> list[Path]:
    """Where `agent` records the logged-in account of `home`, most specific first."""
    if agent is Agent.CLAUDE_CODE:
        files = [home / ".claude.json"]
        if home.name == ".claude":
            files.append(home.parent / ".claude.json")
        return files
    if agent is Agent.CODEX:
        return [home / "auth.json"]
    if agent is Agent.GEMINI:
        return [home / "google_accounts.json"]
    return []


def _field(holder: object, key: str) -> str | None:
    if not isinstance(holder, dict):
        return None
    value = holder.get(key)
    return value if isinstance(value, str) and value else None


def parse_identity(agent: Agent, data: bytes, where: str) -> Identity | None:
    """The identity in one file's bytes. Raises IdentityError for unparsable content."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise IdentityError(f"{where}: not valid JSON (line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise IdentityError(f"{where}: not a JSON object")
    if agent is Agent.CLAUDE_CODE:
        account = doc.get("oauthAccount")
        found = Identity(
            account_id=_field(account, "accountUuid"),
            email=_field(account, "emailAddress"),
            organization=_field(account, "organizationUuid"),
        )
    elif agent is Agent.CODEX:
        # Only the plain account id; id_token/access_token/refresh_token stay untouched.
        email = _field(doc, "email")
        found = Identity(
            account_id=_field(doc.get("tokens"), "account_id"),
            email=email if email is not None and "@" in email else None,
        )
    elif agent is Agent.GEMINI:
        found = Identity(account_id=None, email=_field(doc, "active"))
    else:
        return None
    return found if found.account_id is not None or found.email is not None else None


@dataclass(slots=True)
class IdentityWatcher:
    """Polls one home's identity file; `poll()` reports the first reading and every change."""

    home: Path
    agent: Agent
    identity: Identity | None = field(default=None, init=False)
    error: str | None = field(default=None, init=False)
    _read: bool = field(default=False, init=False)
    _signature: tuple[str, int, int, int] | None = field(default=None, init=False)
    _logged: set[str] = field(default_factory=set, init=False)

    def poll(self) -> IdentitySwitch | None:
        found = self._current_file()
        if found is None:
            if self._read and self._signature is None:
                return None
            # No file to date the logout by: it is seen now.
            return self._settle(None, None, time.time(), str(self.home))
        path, info = found
        signature = (str(path), info.st_mtime_ns, info.st_size, info.st_ino)
        if self._read and signature == self._signature:
            return None
        if not stat.S_ISREG(info.st_mode):  # opening a FIFO would block the node's reader
            self._fail(f"{path}: not a regular file")
            return None
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise IdentityError(f"{path}: larger than {MAX_BYTES} bytes")
            identity = parse_identity(self.agent, data, str(path))
        except OSError as exc:
            self._fail(f"{path}: cannot read: {exc.strerror or type(exc).__name__}")
            return None
        except IdentityError as exc:
            # Possibly a write in progress: keep the last identity, look again on change.
            self._signature = signature
            self._fail(str(exc))
            return None
        return self._settle(identity, signature, info.st_mtime, str(path))

    def _current_file(self) -> tuple[Path, os.stat_result] | None:
        for path in identity_files(self.agent, self.home):
            try:
                return path, path.stat()
            except OSError:
                continue
        return None

    def _settle(
        self,
        identity: Identity | None,
        signature: tuple[str, int, int, int] | None,
        ts: float,
        origin: str,
    ) -> IdentitySwitch | None:
        self._signature, self.error = signature, None
        first, self._read = not self._read, True
        if not first and identity == self.identity:
            return None
        self.identity = identity
        return IdentitySwitch(self.agent, self.home, identity, ts, origin)

    def _fail(self, message: str) -> None:
        self.error = message
        if message not in self._logged and len(self._logged) < 100:
            self._logged.add(message)
            log.warning("%s (keeping the last identity read)", message)


def shared_homes(profiles: Iterable[Profile]) -> list[tuple[Agent, Path]]:
    """(agent, home) pairs that more than one profile uses: only there does identity matter."""
    counts = Counter((p.agent, p.home.expanduser().resolve()) for p in profiles)
    return sorted((key for key, n in counts.items() if n > 1), key=lambda k: (k[0], str(k[1])))


def identity_watchers(profiles: Iterable[Profile]) -> list[IdentityWatcher]:
    """One watcher per shared home of an agent that records its login (Claude, Codex, Gemini)."""
    return [
        IdentityWatcher(home, agent)
        for agent, home in shared_homes(profiles)
        if identity_files(agent, home)
    ]

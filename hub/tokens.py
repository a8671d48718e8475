"""The API's bearer tokens: a name, a role and a hash, in a file beside the hub's config.

Only a SHA-256 of each token is kept (tokens are 256 random bits, so a fast hash is as good as
a slow one: nothing to guess). The file is replaced atomically under an advisory lock, so
`fleet-hub token create` works while `fleet-hub serve` runs: the server looks at the file's
mtime and size on each request and reads it again when they change.

Roles: `viewer` reads everything, `operator` also pauses, resumes and kills, `agent` reads only
what concerns the session, profile and machine it is bound to.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import orjson

from shared.config import ConfigError

TOKENS_NAME: Final = "api-tokens.json"
ADMIN_TOKEN_NAME: Final = "admin.token"  # the local admin's token, in clear, mode 600
ADMIN: Final = "local-admin"
TOKEN_PREFIX: Final = "fmt_"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    name: str
    role: Role
    sha256: str
    created: float
    session: str | None = None  # an agent token's binding
    profile: str | None = None
    machine: str | None = None


def tokens_path(config_path: Path) -> Path:
    return config_path.parent / TOKENS_NAME


def admin_token_path(config_path: Path) -> Path:
    return config_path.parent / ADMIN_TOKEN_NAME


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenBook:
    """The tokens file: read again whenever it changed on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._by_hash: dict[str, TokenRecord] = {}

    # -- reading (the server) ------------------------------------------------------------------

    def lookup(self, token: str) -> TokenRecord | None:
        """The record of a presented token, None when it is unknown or revoked."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        with self._lock:
            self._refresh()
            return self._by_hash.get(digest(token))

    def records(self) -> list[TokenRecord]:
        with self._lock:
            self._refresh()
            return sorted(self._by_hash.values(), key=lambda r: r.name)

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._by_hash = None, {}
            return
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read the API tokens: {exc.strerror}") from exc
        seen = (st.st_mtime_ns, st.st_size)
        if seen != self._seen:
            self._by_hash = {r.sha256: r for r in _read(self.path)}
            self._seen = seen

    # -- writing (the CLI) ---------------------------------------------------------------------

    def create(
        self,
        name: str,
        role: Role,
        *,
        session: str | None = None,
        profile: str | None = None,
        machine: str | None = None,
    ) -> str:
        """A new token for `name` (returned once, never stored); refuses a name in use."""
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(
                f"token name {name!r}: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
            )
        binding = (session, profile, machine)
        if role is Role.AGENT and not any(binding):
            raise ConfigError(
                "an agent token must be bound: give --session, --profile and/or --machine"
            )
        if role is not Role.AGENT and any(binding):
            raise ConfigError("--session/--profile/--machine bind agent tokens only")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(name, role, digest(token), time.time(), session, profile, machine)
        with self._locked() as records:
            if any(r.name == name for r in records):
                raise ConfigError(
                    f"a token named {name!r} exists: revoke it first "
                    f"(fleet-hub token revoke {name})"
                )
            records.append(record)
        return token

    def revoke(self, name: str) -> bool:
        """Remove the token `name`; False when there was none."""
        with self._locked() as records:
            kept = [r for r in records if r.name != name]
            found = len(kept) != len(records)
            records[:] = kept
        return found

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[TokenRecord]]:
        """The records, to change in place; written back atomically under the lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = _read(self.path) if self.path.exists() else []
            yield records
            _write(self.path, records)


def _read(path: Path) -> list[TokenRecord]:
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the API tokens: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not a tokens file ({exc}); move it aside and create the tokens again"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise ConfigError(f"{path}: not a tokens file; move it aside and create the tokens again")
    try:
        return [_record(item) for item in data["tokens"]]
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{path}: a damaged token entry ({exc}); revoke and create it again"
        ) from exc


def _record(item: Any) -> TokenRecord:
    if not isinstance(item, dict):
        raise TypeError("an entry is not an object")
    return TokenRecord(
        name=str(item["name"]),
        role=Role(item["role"]),
        sha256=str(item["sha256"]),
        created=float(item["created"]),
        session=item.get("session"),
        profile=item.get("profile"),
        machine=item.get("machine"),
    )


def _write(path: Path, records: list[TokenRecord]) -> None:
    body = orjson.dumps({"version": 1, "tokens": [asdict(r) for r in records]})
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def ensure_admin_token(config_path: Path) -> str:
    """The local admin's operator token: read from its mode-600 file beside the config, or
    created there (and registered in the tokens file). Whoever can read that directory holds
    the fleet secret already, so the file gives them nothing more."""
    path = admin_token_path(config_path)
    if path.exists():
        token = path.read_text(encoding="ascii").strip()
        book = TokenBook(tokens_path(config_path))
        if book.lookup(token) is not None:
            return token
        book.revoke(ADMIN)  # a stale admin token (the tokens file was reset): make a new one
    book = TokenBook(tokens_path(config_path))
    book.revoke(ADMIN)
    token = book.create(ADMIN, Role.OPERATOR)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(token + "\n")
    os.replace(tmp, path)
    return token


def read_admin_token(config_path: Path) -> str | None:
    """The local admin token when this user can read it; None otherwise."""
    try:
        return admin_token_path(config_path).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None

"""Logged-in identities of agent homes: only non-secret fields, never a token in any output."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from node_agent.identity import (
    Identity,
    IdentityWatcher,
    identity_watchers,
    parse_identity,
)
from shared.config import Profile
from shared.events import Agent

SECRETS = (
    "sk-ant-api03-SECRETPRIMARYKEY",
    "ACCESS-TOKEN-SECRET-1",
    "REFRESH-TOKEN-SECRET-2",
    "sk-proj-OPENAI-SECRET-KEY",
    "hidden@inside-the-jwt.example",
)


def jwt_with_email() -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'email': SECRETS[4]})}.c2lnbmF0dXJl"


def claude_json(email: str, uuid: str, **extra: Any) -> dict[str, Any]:
    return {
        "numStartups": 12,
        "primaryApiKey": SECRETS[0],
        "oauthAccount": {
            "accountUuid": uuid,
            "emailAddress": email,
            "organizationUuid": "org-1",
            "organizationName": "Acme",
            "displayName": "Ops",
        },
        **extra,
    }


def codex_auth(account_id: str | None) -> dict[str, Any]:
    tokens: dict[str, Any] = {
        "id_token": jwt_with_email(),
        "access_token": SECRETS[1],
        "refresh_token": SECRETS[2],
    }
    if account_id is not None:
        tokens["account_id"] = account_id
    return {"auth_mode": "chatgpt", "OPENAI_API_KEY": SECRETS[3], "tokens": tokens}


def put(path: Path, doc: dict[str, Any] | str, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def assert_no_secret(*outputs: object) -> None:
    for output in outputs:
        text = repr(output) + str(output)
        for secret in SECRETS:
            assert secret not in text


def test_claude_identity_from_config_dir(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "claude-shared"
    put(home / ".claude.json", claude_json("a@example.com", "uuid-a"), mtime=1_790_000_000)
    watcher = IdentityWatcher(home, Agent.CLAUDE_CODE)
    with caplog.at_level(logging.DEBUG):
        switch = watcher.poll()
    assert switch is not None
    assert switch.identity == Identity("uuid-a", "a@example.com", "org-1")
    assert switch.ts == 1_790_000_000 and switch.origin == str(home / ".claude.json")
    assert_no_secret(switch, watcher, caplog.text)


def test_claude_default_home_reads_the_file_beside_it(tmp_path: Path) -> None:
    put(tmp_path / ".claude.json", claude_json("b@example.com", "uuid-b"))
    (tmp_path / ".claude").mkdir()
    switch = IdentityWatcher(tmp_path / ".claude", Agent.CLAUDE_CODE).poll()
    assert switch is not None and switch.identity is not None
    assert switch.identity.email == "b@example.com"


def test_codex_reads_the_account_id_and_never_the_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put(tmp_path / "auth.json", codex_auth("acct-123"))
    watcher = IdentityWatcher(tmp_path, Agent.CODEX)
    with caplog.at_level(logging.DEBUG):
        switch = watcher.poll()
    assert switch is not None
    # The email exists only inside the id_token (a JWT): it is not decoded.
    assert switch.identity == Identity("acct-123", None, None)
    assert_no_secret(switch, watcher, caplog.text)


def test_a_pipe_in_place_of_the_login_file_is_named_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO blocks until someone writes: the node's reader stopped for good."""
    os.mkfifo(tmp_path / "auth.json")
    watcher = IdentityWatcher(tmp_path, Agent.CODEX)
    assert watcher.poll() is None
    assert watcher.error == f"{tmp_path / 'auth.json'}: not a regular file"


def test_codex_api_key_login_has_no_identity(tmp_path: Path) -> None:
    put(tmp_path / "auth.json", {"auth_mode": "apikey", "OPENAI_API_KEY": SECRETS[3]})
    switch = IdentityWatcher(tmp_path, Agent.CODEX).poll()
    assert switch is not None and switch.identity is None
    assert_no_secret(switch)


def test_gemini_active_account(tmp_path: Path) -> None:
    put(tmp_path / "google_accounts.json", {"active": "g@example.com", "old": ["x@example.com"]})
    switch = IdentityWatcher(tmp_path, Agent.GEMINI).poll()
    assert switch is not None and switch.identity == Identity(None, "g@example.com")


def test_watcher_reports_first_reading_and_changes_only(tmp_path: Path) -> None:
    path = tmp_path / ".claude.json"
    put(path, claude_json("a@example.com", "uuid-a"), mtime=1000)
    watcher = IdentityWatcher(tmp_path, Agent.CLAUDE_CODE)
    assert watcher.poll() is not None
    assert watcher.poll() is None  # unchanged file
    # Claude Code rewrites the file all the time; the same login is no switch.
    put(path, claude_json("a@example.com", "uuid-a", numStartups=13), mtime=2000)
    assert watcher.poll() is None
    put(path, claude_json("b@example.com", "uuid-b"), mtime=3000)
    switch = watcher.poll()
    assert switch is not None and switch.identity is not None and switch.ts == 3000
    assert switch.identity.account_id == "uuid-b"
    path.unlink()  # logged out (or the home was reset)
    gone = watcher.poll()
    assert gone is not None and gone.identity is None and gone.ts > 3000  # seen now
    assert watcher.poll() is None


def test_a_torn_file_keeps_the_last_identity_and_quotes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "auth.json"
    put(path, codex_auth("acct-1"))
    watcher = IdentityWatcher(tmp_path, Agent.CODEX)
    assert watcher.poll() is not None
    put(path, json.dumps(codex_auth("acct-2"))[:-40])  # cut inside the secrets
    with caplog.at_level(logging.WARNING):
        assert watcher.poll() is None
    assert watcher.identity == Identity("acct-1")
    assert watcher.error is not None and watcher.error.startswith(f"{path}: not valid JSON")
    assert "keeping the last identity" in caplog.text
    assert_no_secret(watcher, watcher.error, caplog.text)
    put(path, codex_auth("acct-2"))
    switch = watcher.poll()
    assert switch is not None and switch.identity == Identity("acct-2")


def test_parse_identity_ignores_secret_fields_of_any_shape() -> None:
    # A release that put a token where an id is expected must not leak it as an id.
    doc = {"oauthAccount": {"accountUuid": {"token": SECRETS[1]}, "emailAddress": None}}
    assert parse_identity(Agent.CLAUDE_CODE, json.dumps(doc).encode(), "f") is None
    weird = {"email": SECRETS[1], "tokens": {"account_id": "a1"}}  # not an email
    assert parse_identity(Agent.CODEX, json.dumps(weird).encode(), "f") == Identity("a1")


def test_watchers_only_for_shared_homes(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    profiles = [
        Profile("a", Agent.CLAUDE_CODE, shared),
        Profile("b", Agent.CLAUDE_CODE, shared),
        Profile("c", Agent.CLAUDE_CODE, tmp_path / "own"),
        Profile("d", Agent.OPENCODE, tmp_path / "oc"),
        Profile("e", Agent.OPENCODE, tmp_path / "oc"),  # shared, but no identity file known
    ]
    watchers = identity_watchers(profiles)
    assert [(w.agent, w.home) for w in watchers] == [(Agent.CLAUDE_CODE, shared.resolve())]

"""The node's configuration file: who this machine is and which auth profiles live on it.

Read with tomllib (strict: an error names the file and the key); `node-agent init` writes it
with tomlkit so an operator's comments survive. Example:

    node = "spark01"                  # default: the host name

    [[profiles]]
    name = "claude-max-a"             # unique on this node
    agent = "claude-code"             # claude-code | codex | gemini | opencode | cursor
    home = "~/.claude-max-a"          # the CLAUDE_CONFIG_DIR / CODEX_HOME / ... of this profile
    account = "ops-a@example.com"     # provider account, for rollups (optional)
    billing = "subscription"          # subscription | api
    plan = "max_20x"                  # for subscriptions (optional)
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared.events import Agent


class Billing(StrEnum):
    API = "api"  # metered: every call is paid at the provider's rates
    SUBSCRIPTION = "subscription"  # covered by a plan: marginal cost zero


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    agent: Agent
    home: Path
    billing: Billing = Billing.API
    account: str | None = None
    plan: str | None = None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node: str = field(default_factory=socket.gethostname)
    profiles: tuple[Profile, ...] = ()
    path: Path | None = None  # where it was read from, for messages

    def profile_for(self, path: Path) -> Profile | None:
        """The profile whose home contains `path` (the deepest one if homes nest)."""
        resolved = path.expanduser().resolve()
        best: Profile | None = None
        for profile in self.profiles:
            home = profile.home.expanduser().resolve()
            if (resolved == home or home in resolved.parents) and (
                best is None or len(home.parts) > len(best.home.expanduser().resolve().parts)
            ):
                best = profile
        return best


def default_config_paths() -> list[Path]:
    """Where a node looks for its config, most specific first."""
    paths: list[Path] = []
    if env := os.environ.get("FLEETMETER_CONFIG"):
        paths.append(Path(env))
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    paths.append(Path(xdg) / "fleetmeter" / "node.toml")
    paths.append(Path("/etc/fleetmeter/node.toml"))
    return paths


def find_config() -> Path | None:
    return next((p for p in default_config_paths() if p.is_file()), None)


def load_config(path: Path) -> NodeConfig:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: Path | None = None) -> NodeConfig:
    where = str(path) if path else "<config>"
    node = data.get("node", socket.gethostname())
    if not isinstance(node, str) or not node:
        raise ConfigError(f"{where}: 'node' must be a non-empty string")
    raw_profiles = data.get("profiles", [])
    if not isinstance(raw_profiles, list):
        raise ConfigError(f"{where}: 'profiles' must be an array of tables ([[profiles]])")
    profiles: list[Profile] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_profiles):
        here = f"{where}: profiles[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{here} must be a table")
        profile = _parse_profile(raw, here)
        if profile.name in seen:
            raise ConfigError(f"{here}: duplicate profile name {profile.name!r}")
        seen.add(profile.name)
        profiles.append(profile)
    return NodeConfig(node=node, profiles=tuple(profiles), path=path)


def _parse_profile(raw: dict[str, Any], here: str) -> Profile:
    def text(key: str, *, required: bool) -> str | None:
        value = raw.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{here}: missing required key {key!r}")
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{here}.{key} must be a non-empty string")
        return value

    name = text("name", required=True)
    agent_name = text("agent", required=True)
    home = text("home", required=True)
    assert name is not None and agent_name is not None and home is not None
    try:
        agent = Agent(agent_name)
    except ValueError:
        choices = ", ".join(a.value for a in Agent)
        raise ConfigError(
            f"{here}.agent: unknown agent {agent_name!r} (one of {choices})"
        ) from None
    billing_name = text("billing", required=False) or Billing.API.value
    try:
        billing = Billing(billing_name)
    except ValueError:
        raise ConfigError(
            f"{here}.billing: {billing_name!r} is not 'subscription' or 'api'"
        ) from None
    known = {"name", "agent", "home", "billing", "account", "plan"}
    if extra := sorted(set(raw) - known):
        raise ConfigError(f"{here}: unknown key(s) {', '.join(extra)}")
    return Profile(
        name=name,
        agent=agent,
        home=Path(home).expanduser(),
        billing=billing,
        account=text("account", required=False),
        plan=text("plan", required=False),
    )

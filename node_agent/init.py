"""`node-agent init`: write (or update) the node's config file and install its key.

A new file starts from a commented template; an existing one is edited in place with tomlkit,
so the operator's comments, order and other keys survive: only what was asked changes (the
node name, the hub addresses, the state dir, the key file, profiles by name). `force` starts
over from the template. Nothing is written unless the result parses as a valid config. With no
profile given, a new file gets one profile per agent home found at its default place.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import tomlkit
from tomlkit.items import AoT, Table

from node_agent.sources.registry import source_for
from shared.config import (
    MIN_NODE_KEY_BYTES,
    Billing,
    ConfigError,
    NodeConfig,
    default_config_paths,
    parse_config,
    plan_problem,
    read_config_text,
    read_node_key,
)
from shared.events import Agent

# Agents whose default home init looks for (Cursor has no home: its usage is a CSV export).
DETECTED_AGENTS: Final = (Agent.CLAUDE_CODE, Agent.CODEX, Agent.GEMINI, Agent.OPENCODE)

TEMPLATE: Final = """\
# fleetmeter node configuration, read by node-agent.
# Written by `node-agent init`; edit freely: a later `node-agent init` keeps your comments and
# changes only what it is asked to. Relative paths are relative to this file.

# This machine's name in the fleet (default: the host name).
node = ""

# Where the outbox and read positions live. Leave it unset for the systemd service, which
# provides /var/lib/fleet-node ($STATE_DIRECTORY); by hand: ~/.local/state/fleetmeter.
# state_dir = "/var/lib/fleet-node"

# The profile heartbeat that a subscription-rotation scheduler writes (format: README).
# status_file = "~/.local/state/fleetmeter/profiles.json"

# Seconds between reads of the log files being written, and between directory rescans.
# poll_interval = 0.5
# rescan_interval = 5.0

# Report (and let the hub halt) only the agent processes whose home is one of the profiles
# below (the default); false reports every coding agent running on this machine.
# only_profile_processes = true

[hub]
# Where the hub listens: events = "tcp://HOST:7461" and commands = "tcp://HOST:7462"
# (tls+tcp:// for TLS). Without them the node finds the hub on the local network (zeroconf).
# The node's key from `fleet-hub enroll NODE`: hex, readable by its owner only (chmod 600).
key_file = "node.key"
# TLS: the CA that signed the hub's certificate, the name in that certificate (default: the
# address's host), and this node's certificate + key in one PEM file if the hub asks for one.
# ca_file = "ca.pem"
# server_name = "hub.lan"
# cert_key_file = "node.pem"

# One [[profiles]] table per auth identity (a login or an API key) on this machine:
#   name     unique on this node
#   agent    claude-code | codex | gemini | opencode | cursor
#   home     its CLAUDE_CONFIG_DIR / CODEX_HOME / ~/.gemini / OpenCode data dir
#   billing  "subscription" (covered by a plan) or "api" (metered, the default)
#   plan     the plan of a subscription (e.g. "max_20x", "pro")
#   account  the provider account (email or account id): rollups, and which login is this
#            profile when several profiles share one home
"""


class InitError(ValueError):
    """Init cannot do what was asked; nothing was written."""


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    name: str
    agent: Agent
    home: str
    billing: Billing | None = None  # None: leave as is (new profiles: api)
    plan: str | None = None
    account: str | None = None
    detected: bool = False  # found at a default place, not named by the operator


def parse_profile_spec(spec: str) -> ProfileSpec:
    """NAME:AGENT:HOME[:BILLING[:PLAN[:ACCOUNT]]]; empty fields are left unset."""
    parts = spec.split(":")
    if len(parts) < 3 or len(parts) > 6:
        raise InitError(f"--profile {spec!r}: expected NAME:AGENT:HOME[:BILLING[:PLAN[:ACCOUNT]]]")
    name, agent_name, home, *rest = parts
    rest += [""] * (3 - len(rest))
    if not name or not home:
        raise InitError(f"--profile {spec!r}: NAME and HOME must not be empty")
    try:
        agent = Agent(agent_name)
    except ValueError:
        choices = ", ".join(a.value for a in Agent)
        raise InitError(f"--profile {spec!r}: unknown agent {agent_name!r} ({choices})") from None
    billing: Billing | None = None
    if rest[0]:
        try:
            billing = Billing(rest[0])
        except ValueError:
            raise InitError(
                f"--profile {spec!r}: billing {rest[0]!r} is not 'subscription' or 'api'"
            ) from None
    if rest[1] and (problem := plan_problem(agent, rest[1])):
        raise InitError(f"--profile {spec!r}: {problem}")
    return ProfileSpec(name, agent, home, billing, rest[1] or None, rest[2] or None)


def default_homes() -> list[str]:
    """Where `detect_profiles` looks, as the operator would write it."""
    return [_tilde(h) for agent in DETECTED_AGENTS for h in source_for(agent).default_homes()]


def detect_profiles() -> list[ProfileSpec]:
    """One profile per existing default agent home on this machine."""
    found: list[ProfileSpec] = []
    for agent in DETECTED_AGENTS:
        homes = [h for h in source_for(agent).default_homes() if h.is_dir()]
        for index, home in enumerate(homes):
            name = agent.value if index == 0 else f"{agent.value}-{index + 1}"
            found.append(ProfileSpec(name, agent, _tilde(home), detected=True))
    return found


def commands_address(events: str) -> str:
    """The commands address beside an events address: same host, the next port."""
    parts = urlsplit(events)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or not parts.hostname:
        raise InitError(f"--hub {events!r}: expected an address like tcp://HOST:PORT")
    return f"{parts.scheme}://{parts.netloc.rsplit(':', 1)[0]}:{port + 1}"


@dataclass(slots=True)
class InitRequest:
    path: Path
    node: str | None = None
    hub_events: str | None = None
    hub_commands: str | None = None  # default: the events port + 1
    state_dir: str | None = None
    key_hex: str | None = None
    profiles: Sequence[ProfileSpec] = ()
    force: bool = False


@dataclass(slots=True)
class InitResult:
    path: Path
    created: bool
    changes: list[str] = field(default_factory=list)
    key_file: Path | None = None  # where the key was written, if it was
    profiles: int = 0  # how many the file holds now


def default_path() -> Path:
    return default_config_paths()[0]


def run_init(request: InitRequest) -> InitResult:
    """Write or update the config (and the key); raises InitError/ConfigError, writing nothing."""
    path = request.path.expanduser().absolute()
    existing = None if request.force else _read(path)
    if existing is not None and not existing.strip():
        existing = None  # an empty file holds nothing to keep: write the template
    created = existing is None
    doc = tomlkit.parse(existing if existing is not None else TEMPLATE)
    result = InitResult(path, created)
    if created:
        _set(doc, "node", request.node or socket.gethostname())
        _set(_hub(doc), "key_file", str(path.parent / "node.key"))
    elif request.node:
        result.changes += _set(doc, "node", request.node)
    if request.hub_events:
        hub = _hub(doc)
        commands = request.hub_commands or commands_address(request.hub_events)
        before = _first_key_index(hub)
        result.changes += _set(hub, "events", request.hub_events, at=before)
        result.changes += _set(hub, "commands", commands, at=before + 1 if before >= 0 else -1)
    elif request.hub_commands:
        raise InitError("--commands needs --hub (the events address) too")
    if request.state_dir:
        result.changes += _set(doc, "state_dir", request.state_dir)
    specs = list(request.profiles) or (detect_profiles() if created else [])
    for spec in specs:
        result.changes += _upsert_profile(doc, spec)

    text = doc.as_string()
    config = parse_config(tomllib.loads(text), path)  # refuse to write what cannot be read
    _check_homes(config, {spec.name for spec in request.profiles})
    result.profiles = len(config.profiles)
    key_hex = request.key_hex
    if key_hex is not None:
        _check_key(key_hex)
    if created or result.changes or request.force:
        write_atomic(path, text.encode(), mode=_mode_of(path, 0o644))
    if key_hex is not None:
        write_node_key(config.key_file, key_hex)
        result.key_file = config.key_file
    return result


def _check_homes(config: NodeConfig, named: set[str]) -> None:
    """A home the operator typed must exist: a typo would leave its profile reading nothing."""
    for profile in config.profiles:
        if profile.name in named and not profile.home.exists():
            raise InitError(
                f"--profile {profile.name}: its home {profile.home} does not exist; check the "
                "path (an agent creates its home the first time it runs)"
            )


def _read(path: Path) -> str | None:
    """The existing file's text, None when there is none."""
    return read_config_text(path) if path.exists() or path.is_symlink() else None


def _hub(doc: tomlkit.TOMLDocument) -> Table:
    if "hub" not in doc:
        doc.add(tomlkit.nl())
        doc.add("hub", tomlkit.table())
    hub = doc["hub"]
    if not isinstance(hub, Table):
        raise InitError("'hub' in the existing file is not a table")
    return hub


def _first_key_index(table: Table) -> int:
    return next((i for i, (key, _) in enumerate(table.value.body) if key is not None), -1)


def _set(
    container: tomlkit.TOMLDocument | Table, key: str, value: str, *, at: int = -1
) -> list[str]:
    """Set `key`, keeping its place and comment; a new key goes at `at` (else at the end)."""
    old = container.get(key)
    if old is not None and str(old) == value:
        return []
    if old is not None or at < 0:
        container[key] = value
    else:
        # tomlkit appends after trailing comments; put it among the keys instead.
        body = container.value if isinstance(container, Table) else container
        body._insert_at(at, key, value)
    return [f'{key} = "{value}"' + (f' (was "{old}")' if old is not None else "")]


def _upsert_profile(doc: tomlkit.TOMLDocument, spec: ProfileSpec) -> list[str]:
    profiles = doc.get("profiles")
    if profiles is not None and not isinstance(profiles, AoT):
        raise InitError("'profiles' in the existing file is not an array of tables")
    table = next((t for t in profiles or [] if t.get("name") == spec.name), None)
    values = {"agent": spec.agent.value, "home": spec.home}
    if spec.billing is not None:
        values["billing"] = spec.billing.value
    for key, value in (("plan", spec.plan), ("account", spec.account)):
        if value is not None:
            values[key] = value
    if table is not None:
        changed = [c for k, v in values.items() for c in _set(table, k, v)]
        return [f"profile {spec.name}: {c}" for c in changed]
    table = tomlkit.table()
    table.add("name", spec.name)
    for key, value in values.items():
        table.add(key, value)
    if "billing" not in values:
        table.add("billing", Billing.API.value)
        if spec.detected:
            table["billing"].comment('found by init: "subscription" if this login is a plan')
    if profiles is None:
        doc.append("profiles", tomlkit.aot())
        profiles = doc["profiles"]
    elif len(profiles) and not profiles[-1].as_string().endswith("\n\n"):
        table.trivia.indent = "\n"  # a blank line before the new table
    profiles.append(table)
    where = "found" if spec.detected else "added"
    return [f"profile {spec.name}: {where} ({spec.agent.value} at {spec.home})"]


def _check_key(key_hex: str) -> bytes:
    try:
        key = bytes.fromhex(key_hex.strip())
    except ValueError:
        raise InitError("the node key is not a hex string") from None  # never echo a secret
    if len(key) < MIN_NODE_KEY_BYTES:
        raise InitError(f"the node key is too short ({len(key)} bytes, need {MIN_NODE_KEY_BYTES})")
    return key


def write_node_key(path: Path, key_hex: str) -> None:
    """Install the node key as hex in a file only its owner may read (0600)."""
    key = _check_key(key_hex)
    write_atomic(path, key.hex().encode() + b"\n", mode=0o600)
    read_node_key(path)  # the daemon's own check, so that init never leaves a key it refuses


def _mode_of(path: Path, default: int) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return default


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created with its final mode: a secret is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # the umask may have taken bits away
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _tilde(path: Path) -> str:
    """`~/...` for paths in the home directory: the file reads the same for every user."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


__all__ = [
    "ConfigError",
    "InitError",
    "InitRequest",
    "InitResult",
    "ProfileSpec",
    "commands_address",
    "default_homes",
    "default_path",
    "detect_profiles",
    "parse_profile_spec",
    "run_init",
    "write_atomic",
    "write_node_key",
]

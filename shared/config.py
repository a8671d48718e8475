"""The node's configuration file: who this machine is, where its hub is, which auth profiles
live on it.

Read with tomllib (strict: an error names the file and the key); `node-agent init` writes it
with tomlkit so an operator's comments survive. Relative paths are taken from the config
file's directory; `~` is expanded. Example:

    node = "spark01"                  # default: the host name
    state_dir = "/var/lib/fleet-node" # default: $STATE_DIRECTORY (systemd), else
                                      #   $XDG_STATE_HOME/fleetmeter or ~/.local/state/fleetmeter
    status_file = "~/.local/state/fleetmeter/profiles.json"  # profile heartbeat (default shown)
    poll_interval = 0.5               # seconds between reads of hot log files
    rescan_interval = 5.0             # seconds between directory rescans
    only_profile_processes = true     # report (and let the hub halt) only agent processes whose
                                      #   home is one of this node's profiles (default; without
                                      #   profiles: the watched default homes); false: every agent

    [hub]                             # no events/commands: find the hub with zeroconf
    events = "tcp://hub.lan:7461"     # tcp://HOST:PORT or tls+tcp://HOST:PORT
    commands = "tcp://hub.lan:7462"   # set both addresses or neither
    key_file = "node.key"             # from `fleet-hub enroll NODE`; default <config dir>/node.key
    ca_file = "ca.pem"                # TLS: the CA that signed the hub's certificate
    server_name = "hub.lan"           # TLS: name in the hub's certificate (default: address host)
    cert_key_file = "node.pem"        # TLS: this node's client certificate + key (mutual TLS)

    [[profiles]]
    name = "claude-max-a"             # unique on this node
    agent = "claude-code"             # claude-code | codex | gemini | opencode | cursor
    home = "~/.claude-max-a"          # the CLAUDE_CONFIG_DIR / CODEX_HOME / ... of this profile
    account = "ops-a@example.com"     # provider account: rollups, and which login is this
                                      #   profile when several share one home (optional)
    billing = "subscription"          # subscription | api
    plan = "max_20x"                  # for subscriptions (optional)

The status file lives in the owner's own state dir even under systemd (where `state_dir`
moves to /var/lib/fleet-node): the scheduler that writes it runs as that user, and one fixed
place serves both a service and a node-agent started by hand.
"""

from __future__ import annotations

import math
import os
import re
import stat
from enum import StrEnum
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from shared.events import Agent

DEFAULT_POLL_INTERVAL: Final = 0.5
DEFAULT_RESCAN_INTERVAL: Final = 5.0
MIN_NODE_KEY_BYTES: Final = 16
# nng transports a node may dial; tcp-like ones need HOST:PORT.
_TCP_SCHEMES: Final = frozenset({"tcp", "tcp4", "tcp6", "tls+tcp", "tls+tcp4", "tls+tcp6"})
_OTHER_SCHEMES: Final = frozenset({"ipc", "inproc", "abstract"})
_TOP_KEYS: Final = frozenset(
    {
        "node",
        "profiles",
        "hub",
        "state_dir",
        "status_file",
        "poll_interval",
        "rescan_interval",
        "only_profile_processes",
        "hook_port",
        "commit_identities",
    }
)
_HUB_KEYS: Final = frozenset(
    {"events", "commands", "key_file", "ca_file", "server_name", "cert_key_file"}
)


class Billing(StrEnum):
    API = "api"  # metered: every call is paid at the provider's rates
    SUBSCRIPTION = "subscription"  # covered by a plan: marginal cost zero


# The subscription plans each agent can run under (research/pricing-billing.md §2; Codex's
# names are its logs' `rate_limits.plan_type`). OpenCode signs in with a Claude or ChatGPT plan.
_CLAUDE_PLANS: Final = ("pro", "max_5x", "max_20x", "team", "enterprise")
_CHATGPT_PLANS: Final = ("plus", "pro", "team", "business", "enterprise", "edu")
PLANS: Final[dict[Agent, tuple[str, ...]]] = {
    Agent.CLAUDE_CODE: _CLAUDE_PLANS,
    Agent.CODEX: _CHATGPT_PLANS,
    Agent.GEMINI: ("free", "ai_pro", "ai_ultra", "code_assist_standard", "code_assist_enterprise"),
    Agent.OPENCODE: tuple(dict.fromkeys(_CLAUDE_PLANS + _CHATGPT_PLANS)),
    Agent.CURSOR: ("hobby", "pro", "pro_plus", "ultra", "teams", "enterprise"),
}
# A node's name: in every frame, the hub's tables and shell commands that `fleet-hub enroll`
# prints, so a host-name-like word.
# A pattern, compiled by `re` at its first use: most scans check no node name.
_NODE_NAME: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"


def plan_problem(agent: Agent, plan: str) -> str | None:
    """Why `plan` is no plan of `agent`, or None when it is one."""
    if plan in PLANS[agent]:
        return None
    return f"unknown {agent.value} plan {plan!r} (one of {', '.join(PLANS[agent])})"


def node_name_problem(name: str) -> str | None:
    """Why `name` cannot name a node, or None when it can."""
    if re.fullmatch(_NODE_NAME, name):
        return None
    return (
        f"{name!r} is not a node name: 1 to 63 letters, digits, '.', '-' or '_', "
        "starting with a letter or digit"
    )


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


class Profile(msgspec.Struct, frozen=True):
    name: str
    agent: Agent
    home: Path
    billing: Billing = Billing.API
    account: str | None = None
    plan: str | None = None


def user_config_dir() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "fleetmeter"


def user_state_dir() -> Path:
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "fleetmeter"


def default_state_dir() -> Path:
    """systemd's StateDirectory= when running as the unit, else the user's state dir."""
    # systemd joins several StateDirectory= entries with ':'; the first is ours.
    if env := os.environ.get("STATE_DIRECTORY", "").split(":")[0]:
        return Path(env)
    return user_state_dir()


def default_status_file() -> Path:
    return user_state_dir() / "profiles.json"


def _hostname() -> str:
    if hasattr(os, "uname"):
        return os.uname().nodename  # what gethostname() returns, without importing socket
    import socket

    return socket.gethostname()


class NodeConfig(msgspec.Struct, frozen=True):
    node: str = msgspec.field(default_factory=_hostname)
    profiles: tuple[Profile, ...] = ()
    path: Path | None = None  # where it was read from, for messages
    # [hub]; both addresses None = discover the hub with zeroconf
    hub_events: str | None = None
    hub_commands: str | None = None
    key_file: Path = msgspec.field(default_factory=lambda: user_config_dir() / "node.key")
    ca_file: Path | None = None
    server_name: str | None = None
    cert_key_file: Path | None = None
    state_dir: Path = msgspec.field(default_factory=default_state_dir)
    status_file: Path | None = msgspec.field(default_factory=default_status_file)
    poll_interval: float = DEFAULT_POLL_INTERVAL
    rescan_interval: float = DEFAULT_RESCAN_INTERVAL
    # Only the agents of this node's profiles: another user's (or a newcomer's own) session
    # elsewhere on the machine is neither listed nor haltable. False: every agent here.
    only_profile_processes: bool = True
    # A loopback TCP port for Claude Code's `http` hooks (token in state_dir/hook.token); None:
    # the unix socket only.
    hook_port: int | None = None
    # Authors (names or emails) whose commits are an agent's: agents that commit as the user
    # (Codex CLI) leave no trailer (cost per outcome, node_agent.outcomes.match).
    commit_identities: tuple[str, ...] = ()

    @property
    def discover_hub(self) -> bool:
        return self.hub_events is None and self.hub_commands is None

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
    paths.append(user_config_dir() / "node.toml")
    paths.append(Path("/etc/fleetmeter/node.toml"))
    return paths


def find_config() -> Path | None:
    return next((p for p in default_config_paths() if p.is_file()), None)


def load_config(path: Path) -> NodeConfig:
    fix = f"write one with `node-agent init --config {path}`, or remove it to use the defaults"
    return parse_config(read_toml(path, if_empty=fix), path)


def read_toml(path: Path, *, if_empty: str) -> dict[str, Any]:
    """A TOML file's table; ConfigError names the file and what is wrong with it. An empty
    file is refused too (`if_empty` says what to do): it is a mistake far more often than a
    wish for every default."""
    import tomllib  # only when there is a file to read

    try:
        data = tomllib.loads(read_config_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if not data:
        raise ConfigError(f"{path}: the file is empty (it sets nothing): {if_empty}")
    return data


def read_config_text(path: Path) -> str:
    """A config file's text; ConfigError says why it cannot be read."""
    if path.exists() and not path.is_file() and not path.is_dir():
        # A FIFO would block the command for good, /dev/zero fill its memory.
        raise ConfigError(f"{path}: not a regular file (a pipe or a device?), not a config file")
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "TOML files must be UTF-8: save it as UTF-8"
        ) from None


def parse_config(data: dict[str, Any], path: Path | None = None) -> NodeConfig:
    where = str(path) if path else "<config>"
    base = path.parent if path else Path.cwd()
    if extra := sorted(set(data) - _TOP_KEYS):
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}")
    node = data.get("node") if "node" in data else _hostname()
    if not isinstance(node, str) or not node:
        raise ConfigError(f"{where}: 'node' must be a non-empty string")
    if problem := node_name_problem(node):
        raise ConfigError(f"{where}: 'node' = {problem}")
    raw_profiles = data.get("profiles", [])
    if not isinstance(raw_profiles, list):
        raise ConfigError(f"{where}: 'profiles' must be an array of tables ([[profiles]])")
    profiles: list[Profile] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_profiles):
        here = f"{where}: profiles[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{here} must be a table")
        profile = _parse_profile(raw, here, base)
        if profile.name in seen:
            raise ConfigError(f"{here}: duplicate profile name {profile.name!r}")
        seen.add(profile.name)
        profiles.append(profile)

    def path_key(key: str, default: Path | None) -> Path | None:
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {key!r} must be a non-empty string (a path)")
        return _path(value, base)

    state_dir = path_key("state_dir", None) or default_state_dir()
    hub = _parse_hub(data.get("hub", {}), where, base, path)
    return NodeConfig(
        node=node,
        profiles=tuple(profiles),
        path=path,
        state_dir=state_dir,
        status_file=path_key("status_file", default_status_file()),
        poll_interval=_interval(data, "poll_interval", DEFAULT_POLL_INTERVAL, where),
        rescan_interval=_interval(data, "rescan_interval", DEFAULT_RESCAN_INTERVAL, where),
        only_profile_processes=_flag(data, "only_profile_processes", where, default=True),
        hook_port=_port(data, "hook_port", where),
        commit_identities=_identities(data.get("commit_identities", []), where),
        hub_events=hub.events,
        hub_commands=hub.commands,
        key_file=hub.key_file,
        ca_file=hub.ca_file,
        server_name=hub.server_name,
        cert_key_file=hub.cert_key_file,
    )


def _path(value: str, base: Path) -> Path:
    expanded = Path(value).expanduser()
    return expanded if expanded.is_absolute() else base / expanded


def _interval(data: dict[str, Any], key: str, default: float, where: str) -> float:
    value = data.get(key, default)
    # TOML booleans are Python ints: refuse them explicitly.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: {key!r} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: {key!r} must be a positive number of seconds, not {value}")
    return float(value)


def _port(data: dict[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{where}: {key!r} must be a TCP port 1..65535, not {value!r}")
    return value


def _identities(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(
            f"{where}: 'commit_identities' must be an array of author names or emails, "
            'e.g. ["me@example.com"]'
        )
    return tuple(v.strip() for v in value)


def _flag(data: dict[str, Any], key: str, where: str, *, default: bool = False) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key!r} must be true or false, not {value!r}")
    return value


class _Hub(msgspec.Struct, frozen=True):  # (a NamedTuple's definition costs ~0.2 ms a start)
    events: str | None
    commands: str | None
    key_file: Path
    ca_file: Path | None
    server_name: str | None
    cert_key_file: Path | None


def _parse_hub(raw: object, where: str, base: Path, path: Path | None) -> _Hub:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'hub' must be a table ([hub])")
    if extra := sorted(set(raw) - _HUB_KEYS):
        raise ConfigError(f"{where}: hub: unknown key(s) {', '.join(extra)}")

    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: hub.{key} must be a non-empty string")
        return value

    events, commands = text("events"), text("commands")
    if (events is None) != (commands is None):
        raise ConfigError(
            f"{where}: hub: set both 'events' and 'commands', or neither "
            "(neither = find the hub on the local network with zeroconf)"
        )
    hosts = [
        _check_address(a, f"{where}: hub.{k}")
        for k, a in (("events", events), ("commands", commands))
    ]
    key_file = text("key_file")
    ca_file, cert_key_file = text("ca_file"), text("cert_key_file")
    server_name = text("server_name")
    tls = [a for a in (events, commands) if a is not None and a.startswith("tls+")]
    if tls and ca_file is None:
        raise ConfigError(
            f"{where}: hub.ca_file is required for {tls[0]} "
            "(the CA that signed the hub's certificate)"
        )
    if tls and server_name is None:
        # Mbed TLS refuses to verify a certificate without a name to check it against.
        server_name = next(h for a, h in zip((events, commands), hosts, strict=True) if a in tls)
    config_dir = path.parent if path else user_config_dir()
    return _Hub(
        events=events,
        commands=commands,
        key_file=_path(key_file, base) if key_file else config_dir / "node.key",
        ca_file=_path(ca_file, base) if ca_file else None,
        server_name=server_name,
        cert_key_file=_path(cert_key_file, base) if cert_key_file else None,
    )


def _check_address(address: str | None, here: str) -> str | None:
    """The host of a tcp-like address (None for ipc/inproc or no address); errors name `here`."""
    if address is None:
        return None
    scheme, sep, rest = address.partition("://")
    if not sep or not rest:
        raise ConfigError(f"{here}: {address!r} is not an address like tcp://HOST:PORT")
    if scheme in _OTHER_SCHEMES:
        return None
    if scheme not in _TCP_SCHEMES:
        raise ConfigError(
            f"{here}: unknown transport {scheme!r} in {address!r} (use tcp:// or tls+tcp://)"
        )
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or port == 0:
        raise ConfigError(f"{here}: {address!r} needs a host and a port (tcp://HOST:PORT)")
    return parts.hostname


def read_node_key(path: Path) -> bytes:
    """The node's key (hex in a file only its owner may read), as bytes.

    Refuses a file that group or others can read: the key signs everything the node says.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the node key: {exc.strerror or exc} "
            "(get one with `fleet-hub enroll NODE` and install it with `node-agent init --key`)"
        ) from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: the node key must be a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{path}: the node key is readable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the node key: {exc.strerror or exc}") from exc
    except ValueError:
        # Never echo the content: it is a secret, even when malformed.
        raise ConfigError(f"{path}: the node key is not a hex string") from None
    if len(key) < MIN_NODE_KEY_BYTES:
        raise ConfigError(
            f"{path}: the node key is too short ({len(key)} bytes, need {MIN_NODE_KEY_BYTES})"
        )
    return key


def _parse_profile(raw: dict[str, Any], here: str, base: Path) -> Profile:
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
    plan = text("plan", required=False)
    if plan is not None and (problem := plan_problem(agent, plan)):
        raise ConfigError(f"{here}.plan: {problem}")
    return Profile(
        name=name,
        agent=agent,
        home=_path(home, base),
        billing=billing,
        account=text("account", required=False),
        plan=plan,
    )

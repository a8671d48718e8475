"""The hub's configuration file and its fleet secret.

Read with tomllib (strict: unknown keys and bad values raise ConfigError naming the file and the
key); written with tomlkit, so that updating a key keeps the operator's comments. Relative paths
in the file are relative to the file's directory.

The fleet secret is the root of every node key (`shared.wire.derive_node_key`): it is created
once, as hex in a mode-0600 file, and never overwritten.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import tomlkit
from tomlkit.exceptions import TOMLKitError

from hub.alerts.settings import AlertSettings, parse_alerts
from hub.budgets.config_io import parse_budgets
from hub.budgets.model import Budget
from hub.credit_settings import SubscriptionSettings, parse_subscriptions
from hub.reconcile.settings import ReconcileSettings, parse_reconcile
from shared.config import ConfigError, node_name_problem, read_toml
from shared.tls import is_tls
from shared.wire import KEY_BYTES, create_key_file, derive_node_key, read_key_file

DEFAULT_EVENTS: Final = "tcp://0.0.0.0:7461"
DEFAULT_COMMANDS: Final = "tcp://0.0.0.0:7462"
DEFAULT_STALE_AFTER: Final = 15.0
DEFAULT_RETAIN_DAYS: Final = 90
DEFAULT_API_LISTEN: Final = "127.0.0.1:7463"
API_KEYS: Final = ("listen", "tls_cert_key_file")  # the [api] table
SECRET_NAME: Final = "fleet.secret"
_NETWORK_SCHEMES: Final = ("tcp", "tcp4", "tcp6", "tls+tcp", "tls+tcp4", "tls+tcp6")
_SCHEMES: Final = (*_NETWORK_SCHEMES, "ipc", "abstract", "inproc")
KEYS: Final = (
    "name",
    "events",
    "commands",
    "data_dir",
    "secret_file",
    "advertise",
    "tls_cert_key_file",
    "tls_ca_file",
    "stale_after",
    "allow_plaintext",
    "retain_days",
    "api",
    "alerts",
)
READ_KEYS: Final = (
    *KEYS,
    "budgets",
    "reconcile",
    "subscriptions",
)  # [[budgets]]: written by hub.budgets.config_io
_LOCAL_SCHEMES: Final = ("ipc", "abstract", "inproc")


@dataclass(frozen=True, slots=True)
class HubConfig:
    name: str
    events: str  # listen address for node batches (Rep0)
    commands: str  # listen address for commands (Surveyor0)
    data_dir: Path
    secret_file: Path
    advertise: bool = True
    tls_cert_key_file: Path | None = None
    tls_ca_file: Path | None = None  # set: nodes must present a certificate signed by it
    stale_after: float = DEFAULT_STALE_AFTER
    allow_plaintext: bool = False  # listen on the network without TLS (see check_plaintext)
    retain_days: int = DEFAULT_RETAIN_DAYS  # raw events older than this are pruned
    api_listen: str = DEFAULT_API_LISTEN  # HOST:PORT of the HTTP API ([api] listen)
    api_tls_cert_key_file: Path | None = None  # set: the API speaks HTTPS
    budgets: tuple[Budget, ...] = ()  # [[budgets]] (see hub.budgets)
    alerts: AlertSettings = AlertSettings()  # [alerts]: sinks and delivery (hub.alerts)
    reconcile: ReconcileSettings = ReconcileSettings()  # [reconcile] (hub.reconcile)
    # [[subscriptions]]: Agent SDK credit, extra usage, month zone (hub.credit_settings)
    subscriptions: tuple[SubscriptionSettings, ...] = ()
    path: Path | None = None  # where it was read from, for messages


def default_hub_config_path() -> Path:
    if env := os.environ.get("FLEETMETER_HUB_CONFIG"):
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "fleetmeter" / "hub.toml"


def default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "fleetmeter"


# --- reading ------------------------------------------------------------------------------


def load_hub_config(path: Path, *, missing_ok: bool = False) -> HubConfig:
    """The config at `path`; with `missing_ok`, the defaults when there is no file."""
    if not path.exists():
        if missing_ok:
            return parse_hub_config({}, path)
        raise ConfigError(f"{path}: no such file (run `fleet-hub init` to create it)")
    fix = f"run `fleet-hub init --config {path} --force` to write one (the secret is kept)"
    return parse_hub_config(read_toml(path, if_empty=fix), path)


def parse_hub_config(data: Mapping[str, Any], path: Path) -> HubConfig:
    where = str(path)
    if extra := sorted(set(data) - set(READ_KEYS)):
        known = ", ".join(READ_KEYS)
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)} (known: {known})")
    base = path.parent

    def text(key: str, default: str | None) -> str | None:
        return text_in(where, data, key, default)

    def file(key: str, default: Path | None) -> Path | None:
        return _relative_to(base, text(key, None)) or default

    name = text("name", socket.gethostname())
    assert name is not None
    if len(name.encode()) > 63 or "\0" in name:
        raise ConfigError(f"{where}: 'name' must be at most 63 bytes (an mDNS instance name)")
    events = _address(where, "events", text("events", DEFAULT_EVENTS))
    commands = _address(where, "commands", text("commands", DEFAULT_COMMANDS))
    if events == commands and not _any_port(events):
        raise ConfigError(f"{where}: 'events' and 'commands' must be different addresses")
    advertise = data.get("advertise", True)
    if not isinstance(advertise, bool):
        raise ConfigError(f"{where}: 'advertise' must be true or false")
    allow_plaintext = data.get("allow_plaintext", False)
    if not isinstance(allow_plaintext, bool):
        raise ConfigError(f"{where}: 'allow_plaintext' must be true or false")
    stale_after = data.get("stale_after", DEFAULT_STALE_AFTER)
    if (
        not isinstance(stale_after, int | float)
        or isinstance(stale_after, bool)
        or not math.isfinite(stale_after)
        or stale_after <= 0
    ):
        raise ConfigError(f"{where}: 'stale_after' must be a positive number of seconds")
    retain_days = data.get("retain_days", DEFAULT_RETAIN_DAYS)
    if not isinstance(retain_days, int) or isinstance(retain_days, bool) or retain_days < 1:
        raise ConfigError(f"{where}: 'retain_days' must be a whole number of days, at least 1")
    api = data.get("api", {})
    if not isinstance(api, Mapping):
        raise ConfigError(f"{where}: 'api' must be a table ([api] with listen = \"HOST:PORT\")")
    if extra := sorted(set(api) - set(API_KEYS)):
        raise ConfigError(
            f"{where}: unknown key(s) in [api]: {', '.join(extra)} (known: {', '.join(API_KEYS)})"
        )
    api_listen = text_in(where, api, "listen", DEFAULT_API_LISTEN) or DEFAULT_API_LISTEN
    if problem := listen_problem(api_listen):
        raise ConfigError(f"{where}: [api] listen = {api_listen!r}: {problem}")
    api_tls = text_in(where, api, "tls_cert_key_file", None)
    config = HubConfig(
        name=name,
        events=events,
        commands=commands,
        data_dir=file("data_dir", default_data_dir()) or default_data_dir(),
        secret_file=file("secret_file", base / SECRET_NAME) or base / SECRET_NAME,
        advertise=advertise,
        tls_cert_key_file=file("tls_cert_key_file", None),
        tls_ca_file=file("tls_ca_file", None),
        stale_after=float(stale_after),
        allow_plaintext=allow_plaintext,
        retain_days=retain_days,
        api_listen=api_listen,
        api_tls_cert_key_file=_relative_to(base, api_tls),
        budgets=parse_budgets(data.get("budgets"), where),
        alerts=parse_alerts(where, data.get("alerts", {}), base),
        reconcile=parse_reconcile(where, data.get("reconcile", {}), base),
        subscriptions=parse_subscriptions(where, data.get("subscriptions")),
        path=path,
    )
    _check_consistent(config, where)
    return config


def text_in(where: str, table: Mapping[str, Any], key: str, default: str | None) -> str | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{where}: {key!r} must be a non-empty string")
    return value


def _relative_to(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    resolved = Path(value).expanduser()
    return resolved if resolved.is_absolute() else base / resolved


def split_listen(listen: str) -> tuple[str, int]:
    """(host, port) of a HOST:PORT listen address ([::1]:7463 for IPv6); raises ValueError."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("not HOST:PORT (e.g. 127.0.0.1:7463)")
    return host.removeprefix("[").removesuffix("]"), int(port)


def listen_problem(listen: str) -> str | None:
    try:
        split_listen(listen)
    except ValueError as exc:
        return str(exc)
    return None


def _address(where: str, key: str, value: str | None) -> str:
    assert value is not None
    scheme, sep, _ = value.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(
            f"{where}: {key!r} = {value!r} is not an nng address "
            f"({', '.join(s + '://' for s in _SCHEMES)})"
        )
    if scheme in _NETWORK_SCHEMES:
        try:
            port = urlsplit(value).port
        except ValueError:
            port = None
        if port is None:
            raise ConfigError(f"{where}: {key!r} = {value!r} needs a host and a port")
    return value


def _any_port(address: str) -> bool:
    """tcp://host:0 and the like: every listener on it gets a free port of its own."""
    return address.partition("://")[0] in _NETWORK_SCHEMES and urlsplit(address).port == 0


def check_plaintext(config: HubConfig) -> None:
    """Refuse to listen on the network without TLS unless `allow_plaintext = true`.

    Signatures stop forged frames but hide nothing: any peer that dials the command port hears
    every command (node, action, pid), and the events show every call. Loopback, ipc:// and
    inproc:// never leave the machine.
    """
    exposed = [
        f"{key} = {address!r}"
        for key in ("events", "commands")
        if not is_tls(address := getattr(config, key)) and not _stays_on_this_machine(address)
    ]
    if exposed and not config.allow_plaintext:
        raise ConfigError(
            f"{config.path or 'hub config'}: {' and '.join(exposed)} would listen on the network "
            "without TLS: anyone who dials the command port reads every command (node, action, "
            "pid) and the usage travels readable. Use tls+tcp:// addresses with "
            "tls_cert_key_file (and tls_ca_file), listen on 127.0.0.1, or set "
            "allow_plaintext = true on a network you trust"
        )
    host = split_listen(config.api_listen)[0]
    api_exposed = config.api_tls_cert_key_file is None and not _is_loopback(host)
    if api_exposed and not config.allow_plaintext:
        raise ConfigError(
            f"{config.path or 'hub config'}: [api] listen = {config.api_listen!r} would serve "
            "the API on the network without TLS: bearer tokens and every figure would travel "
            "readable. Set [api] tls_cert_key_file, listen on 127.0.0.1, or set "
            "allow_plaintext = true on a network you trust"
        )


def _stays_on_this_machine(address: str) -> bool:
    scheme = address.partition("://")[0]
    if scheme in _LOCAL_SCHEMES:
        return True
    return _is_loopback(urlsplit(address).hostname or "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or empty (every interface)
        return False


def _check_consistent(config: HubConfig, where: str) -> None:
    tls = [k for k in ("events", "commands") if is_tls(getattr(config, k))]
    if tls and config.tls_cert_key_file is None:
        raise ConfigError(
            f"{where}: {' and '.join(tls)} use tls+tcp:// but tls_cert_key_file is unset"
        )
    if not tls and config.tls_cert_key_file is not None:
        raise ConfigError(f"{where}: tls_cert_key_file is set but no address uses tls+tcp://")
    if config.tls_ca_file is not None and config.tls_cert_key_file is None:
        raise ConfigError(f"{where}: tls_ca_file needs tls_cert_key_file")
    schemes = {a.partition("://")[0] for a in (config.events, config.commands)}
    if config.advertise and not schemes <= set(_NETWORK_SCHEMES):
        raise ConfigError(
            f"{where}: advertise = true needs tcp:// or tls+tcp:// addresses (or advertise = false)"
        )


# --- writing ------------------------------------------------------------------------------

_TEMPLATE: Final = """\
# fleet-hub configuration. Written by `fleet-hub init`; edits and comments here are kept.
# Relative paths are relative to this file's directory.

# This hub's name, as nodes see it when they find it on the LAN (default: the host name).
{name}

# Where nodes send events (their Req0 dials this Rep0) and get commands (Surveyor0).
# tls+tcp://host:port encrypts the links; it needs tls_cert_key_file below.
{events}
{commands}

# Announce this hub over zeroconf (mDNS), so nodes with no hub address find it.
{advertise}

# Seconds without a batch or heartbeat after which a node is shown as stale.
{stale_after}

# Without TLS, signatures stop forged frames but hide nothing: anyone who can dial the command
# port reads every command (node, action, pid). So the hub refuses plain tcp:// on any address
# but loopback unless this says true (for a network you trust).
{allow_plaintext}

# Where the hub keeps its database (default: $XDG_DATA_HOME/fleetmeter).
{data_dir}

# Days of raw events the database keeps; older ones are pruned, their daily sums kept for good
# (reports and the dashboard still show those days).
{retain_days}

# The fleet secret: hex, mode 600, never shared. Every node key derives from it
# (`fleet-hub enroll NODE` prints one). Default: fleet.secret beside this file.
{secret_file}

# TLS: the hub's certificate and private key in one PEM file, and the CA that signs node
# certificates (when set, every node must present one: mutual TLS).
{tls_cert_key_file}
{tls_ca_file}

# The HTTP API (the CLI, scripts, Prometheus at /metrics): HOST:PORT. Anything but loopback
# needs tls_cert_key_file here (a PEM with the certificate and its key), or allow_plaintext.
[api]
{api_listen}
{api_tls_cert_key_file}

# Alerts (budgets, detectors) go to [[alerts.sinks]] tables: a signed webhook, Slack, ntfy or a
# program, by severity, scope and kind. See README, Alerts.
"""

_EXAMPLES: Final[dict[str, object]] = {
    "name": "ops-workstation",
    "data_dir": "~/.local/share/fleetmeter",
    "secret_file": SECRET_NAME,
    "tls_cert_key_file": "/etc/fleetmeter/hub.pem",
    "tls_ca_file": "/etc/fleetmeter/fleet-ca.pem",
    "allow_plaintext": True,
}
_WRITTEN_DEFAULTS: Final[dict[str, object]] = {
    "events": DEFAULT_EVENTS,
    "commands": DEFAULT_COMMANDS,
    "advertise": True,
    "stale_after": int(DEFAULT_STALE_AFTER),
    "retain_days": DEFAULT_RETAIN_DAYS,
}


def write_hub_config(path: Path, overrides: Mapping[str, object] | None = None) -> HubConfig:
    """Set `overrides` in the config at `path`, keeping its comments, or write the commented
    template when there is none. The result is checked before anything is written."""
    if path.exists():
        try:
            doc = tomlkit.parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, TOMLKitError) as exc:
            raise ConfigError(f"{path}: cannot update: {exc}") from exc
        for key, value in _toml_values(path, overrides or {}).items():
            doc[key] = value
        return _save(path, doc)
    return _save(path, _template(path, overrides or {}))


def _template(path: Path, overrides: Mapping[str, object]) -> tomlkit.TOMLDocument:
    values = _toml_values(path, overrides)
    lines: dict[str, str] = {}
    api = values.pop("api", None)
    api_values: Mapping[str, object] = api if isinstance(api, Mapping) else {}
    api_defaults = {"listen": DEFAULT_API_LISTEN, "tls_cert_key_file": None}
    examples = {"tls_cert_key_file": "/etc/fleetmeter/api.pem"}
    for key, default in api_defaults.items():
        value = api_values.get(key, default)
        line = f"{key} = {tomlkit.item(value or examples.get(key, '')).as_string()}"
        lines[f"api_{key}"] = line if value is not None else f"# {line}"
    for key in KEYS:
        if key in ("api", "alerts"):  # tables: written above, or by hand (see the template)
            continue
        if key in values or key in _WRITTEN_DEFAULTS:
            value = values.get(key, _WRITTEN_DEFAULTS.get(key))
            lines[key] = f"{key} = {tomlkit.item(value).as_string()}"
        else:
            lines[key] = f"# {key} = {tomlkit.item(_EXAMPLES[key]).as_string()}"
    return tomlkit.parse(_TEMPLATE.format(**lines))


def _toml_values(path: Path, overrides: Mapping[str, object]) -> dict[str, object]:
    if extra := sorted(set(overrides) - set(KEYS)):
        raise ConfigError(f"{path}: unknown key(s) {', '.join(extra)} (known: {', '.join(KEYS)})")
    return {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items() if v is not None}


def _save(path: Path, doc: tomlkit.TOMLDocument) -> HubConfig:
    config = parse_hub_config(doc.unwrap(), path)  # never write a file we would refuse to read
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(tomlkit.dumps(doc), encoding="utf-8")
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return config


# --- the fleet secret ---------------------------------------------------------------------


def init_hub(
    path: Path, *, force: bool = False, overrides: Mapping[str, object] | None = None
) -> tuple[Path, Path]:
    """Write a fresh config and create the fleet secret; returns (config path, secret path).

    An existing config is rewritten only with `force`. An existing secret is never replaced:
    without `force` it is an error, with it the secret is kept (after checking it) so that every
    enrolled node keeps working.
    """
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists (use --force to rewrite it)")
    doc = _template(path, overrides or {})
    config = parse_hub_config(doc.unwrap(), path)
    secret = config.secret_file
    if secret.exists():
        if not force:
            raise ConfigError(
                f"{secret}: a fleet secret already exists; refusing to replace it (every node "
                "key derives from it). Use --force to keep it and rewrite only the config"
            )
        read_secret(secret)
    else:
        create_key_file(secret, secrets.token_bytes(KEY_BYTES))
    _save(path, doc)
    return path, secret


def read_secret(path: Path) -> bytes:
    """The fleet secret; refuses a missing, malformed or group/other-accessible file."""
    return read_key_file(path, what="fleet secret")


def enroll_key(config: HubConfig, node: str) -> str:
    """The hex key to install on `node` (its only credential; it cannot sign as another)."""
    if problem := node_name_problem(node):
        raise ConfigError(f"cannot enroll: {problem}")
    try:
        return derive_node_key(read_secret(config.secret_file), node).hex()
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot enroll {node!r}: {exc}") from exc

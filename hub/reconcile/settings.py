"""The `[reconcile]` table of hub.toml: which providers to ask, with which key, and how often.

```toml
[reconcile]
interval = 3600.0          # seconds between runs of `fleet-hub serve` (0: only by hand)
days = 3                   # each run re-checks this many UTC days back (providers finalise late)
threshold_percent = 1.0    # a row drifts when it is off by more than this percent...
threshold_usd = 1.0        # ...and by more than this many dollars
fleet_tz = "Europe/Berlin" # the fleet's own zone, stated beside the UTC buckets

[reconcile.anthropic]      # an Admin API key (sk-ant-admin...), mode 600
key_file = "anthropic-admin.key"
base_url = "https://api.anthropic.com"

[reconcile.openai]         # an Admin key, mode 600
key_file = "openai-admin.key"

[[reconcile.keys]]         # which fleet profiles bill to which provider key
provider = "anthropic"
key = "apikey_01AbC"       # the provider's API key id
profiles = ["spark01/claude", "spark0*/claude-max2"]   # MACHINE/PROFILE globs
```

Claude Enterprise's analytics cost report (Claude Code spend per user) is asked too with
`analytics = true` in `[reconcile.anthropic]` (an Analytics API key with `read:analytics`,
`analytics_key_file`, by default the same key file); `[[reconcile.actors]]` names which fleet
profiles are which user (`actor`: the user's email or `user_...` id, `profiles`: globs).
"""

from __future__ import annotations

import fnmatch
import math
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.reconcile.imports import IMPORT_PROVIDERS  # billed by `fleet-hub reconcile import`
from shared.config import ConfigError

PROVIDERS: Final = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com",
}
RECONCILE_KEYS: Final = (
    "interval",
    "days",
    "threshold_percent",
    "threshold_usd",
    "fleet_tz",
    "keys",
    "actors",
    *PROVIDERS,
)
PROVIDER_KEYS: Final = ("key_file", "base_url", "timeout", "retries")
ANALYTICS_KEYS: Final = ("analytics", "analytics_key_file")  # [reconcile.anthropic] only
MAPPING_KEYS: Final = ("provider", "key", "profiles")
ACTOR_KEYS: Final = ("actor", "profiles")


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    key_file: Path
    base_url: str
    timeout: float = 30.0  # seconds per request
    retries: int = 5  # attempts after a 429, a 5xx or a dropped connection
    analytics: bool = False  # Anthropic: also the Enterprise analytics cost report
    analytics_key_file: Path | None = None  # its key (read:analytics); None: key_file

    def read_key(self) -> str:
        """The admin key: a file only its owner can read; its content is never echoed."""
        return read_api_key(self.key_file, self.name)

    def read_analytics_key(self) -> str:
        return read_api_key(self.analytics_key_file or self.key_file, f"{self.name} analytics")


@dataclass(frozen=True, slots=True)
class KeyMapping:
    provider: str
    key: str  # the provider's API key id
    profiles: tuple[str, ...]  # MACHINE/PROFILE globs

    def covers(self, machine: str, profile: str) -> bool:
        name = f"{machine}/{profile}"
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.profiles)


@dataclass(frozen=True, slots=True)
class ActorMapping:
    """Fleet profiles that are one Claude Enterprise user (the analytics report's actor)."""

    actor: str  # the user's email address or tagged id (user_...)
    profiles: tuple[str, ...]  # MACHINE/PROFILE globs

    def covers(self, machine: str, profile: str) -> bool:
        name = f"{machine}/{profile}"
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.profiles)


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    interval: float = 3600.0
    days: int = 3
    threshold_percent: Decimal = Decimal(1)
    threshold_usd: Decimal = Decimal(1)
    fleet_tz: str = "UTC"
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    keys: tuple[KeyMapping, ...] = ()
    actors: tuple[ActorMapping, ...] = ()

    @property
    def holds_bills(self) -> bool:
        """Whether a run has a bill to hold the fleet against: a provider to ask, or one whose
        bills are imported (`[[reconcile.keys]]` naming it)."""
        return bool(self.providers) or any(k.provider in IMPORT_PROVIDERS for k in self.keys)

    def mapping_of(self, machine: str, profile: str) -> KeyMapping | None:
        """The provider key a fleet profile bills to (the first mapping naming it), or None."""
        return next((m for m in self.keys if m.covers(machine, profile)), None)

    def actor_of(self, machine: str, profile: str) -> str | None:
        """The Enterprise user a fleet profile is (the first mapping naming it), or None."""
        return next((m.actor for m in self.actors if m.covers(machine, profile)), None)


def parse_reconcile(where: str, data: object, base: Path) -> ReconcileSettings:
    """The [reconcile] table; relative key files against `base`; ConfigError names the key."""
    table = _table(where, "reconcile", data)
    if extra := sorted(set(table) - set(RECONCILE_KEYS)):
        raise ConfigError(
            f"{where}: unknown key(s) in [reconcile]: {', '.join(extra)} "
            f"(known: {', '.join(RECONCILE_KEYS)})"
        )
    interval = _number(where, "reconcile.interval", table.get("interval", 3600.0), zero_ok=True)
    days = table.get("days", 3)
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 31:
        raise ConfigError(f"{where}: reconcile.days must be a whole number from 1 to 31")
    fleet_tz = table.get("fleet_tz", "UTC")
    try:
        ZoneInfo(fleet_tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(
            f"{where}: reconcile.fleet_tz = {fleet_tz!r} is not an IANA zone (e.g. Europe/Berlin)"
        ) from None
    providers = {
        name: _provider(where, name, table[name], base) for name in PROVIDERS if name in table
    }
    mappings = table.get("keys", [])
    if not isinstance(mappings, list):
        raise ConfigError(
            f"{where}: reconcile.keys must be an array of tables ([[reconcile.keys]])"
        )
    actors = table.get("actors", [])
    if not isinstance(actors, list):
        raise ConfigError(
            f"{where}: reconcile.actors must be an array of tables ([[reconcile.actors]])"
        )
    return ReconcileSettings(
        interval=interval,
        days=days,
        threshold_percent=_decimal(where, "reconcile.threshold_percent", table, 1),
        threshold_usd=_decimal(where, "reconcile.threshold_usd", table, 1),
        fleet_tz=fleet_tz,
        providers=providers,
        keys=tuple(_mapping(where, i, m) for i, m in enumerate(mappings)),
        actors=tuple(_actor(where, i, m) for i, m in enumerate(actors)),
    )


def _table(where: str, name: str, data: object) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: '{name}' must be a table ([{name}])")
    return data


def _number(where: str, key: str, value: object, *, zero_ok: bool = False) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        least = "0 or more" if zero_ok else "more than 0"
        raise ConfigError(f"{where}: {key} must be a number of seconds, {least}")
    return float(value)


def _decimal(where: str, key: str, table: Mapping[str, Any], default: int) -> Decimal:
    value = table.get(key.rpartition(".")[2], default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1e9:
        raise ConfigError(f"{where}: {key} must be a number, 0 or more")
    return Decimal(str(value))


def _provider(where: str, name: str, data: object, base: Path) -> ProviderSettings:
    table = _table(where, f"reconcile.{name}", data)
    known = (*PROVIDER_KEYS, *ANALYTICS_KEYS) if name == "anthropic" else PROVIDER_KEYS
    if extra := sorted(set(table) - set(known)):
        raise ConfigError(
            f"{where}: unknown key(s) in [reconcile.{name}]: {', '.join(extra)} "
            f"(known: {', '.join(known)})"
        )
    key_file = table.get("key_file")
    if not isinstance(key_file, str) or not key_file:
        raise ConfigError(
            f'{where}: [reconcile.{name}] needs key_file = "PATH" (a file holding the '
            "provider's admin key, mode 600)"
        )
    path = Path(key_file).expanduser()
    base_url = table.get("base_url", PROVIDERS[name])
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{where}: reconcile.{name}.base_url must be an http(s) URL (default {PROVIDERS[name]})"
        )
    retries = table.get("retries", 5)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 20:
        raise ConfigError(f"{where}: reconcile.{name}.retries must be a whole number from 0 to 20")
    analytics = table.get("analytics", False)
    if not isinstance(analytics, bool):
        raise ConfigError(f"{where}: reconcile.{name}.analytics must be true or false")
    analytics_key = table.get("analytics_key_file")
    if analytics_key is not None and (not isinstance(analytics_key, str) or not analytics_key):
        raise ConfigError(
            f'{where}: reconcile.{name}.analytics_key_file must be "PATH" (an Analytics API '
            "key with the read:analytics scope, mode 600)"
        )
    return ProviderSettings(
        name=name,
        key_file=_under(base, path),
        base_url=base_url.rstrip("/"),
        timeout=_number(where, f"reconcile.{name}.timeout", table.get("timeout", 30.0)),
        retries=retries,
        analytics=analytics,
        analytics_key_file=None if analytics_key is None else _under(base, Path(analytics_key)),
    )


def _under(base: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def _mapping(where: str, index: int, data: object) -> KeyMapping:
    at = f"{where}: reconcile.keys[{index}]"
    table = _table(where, f"reconcile.keys[{index}]", data)
    if extra := sorted(set(table) - set(MAPPING_KEYS)):
        raise ConfigError(
            f"{at}: unknown key(s) {', '.join(extra)} (known: provider, key, profiles)"
        )
    provider = table.get("provider")
    if provider not in PROVIDERS and provider not in IMPORT_PROVIDERS:
        known = ", ".join((*PROVIDERS, *IMPORT_PROVIDERS))
        raise ConfigError(f"{at}: provider must be one of {known}")
    key = table.get("key")
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"{at}: key must be the provider's API key id (e.g. apikey_01AbC)")
    return KeyMapping(provider, key.strip(), tuple(_globs(at, table.get("profiles"))))


def _actor(where: str, index: int, data: object) -> ActorMapping:
    at = f"{where}: reconcile.actors[{index}]"
    table = _table(where, f"reconcile.actors[{index}]", data)
    if extra := sorted(set(table) - set(ACTOR_KEYS)):
        raise ConfigError(f"{at}: unknown key(s) {', '.join(extra)} (known: actor, profiles)")
    actor = table.get("actor")
    if not isinstance(actor, str) or not actor.strip() or any(c.isspace() for c in actor.strip()):
        raise ConfigError(f"{at}: actor must be the user's email address or id (e.g. user_01AbC)")
    return ActorMapping(actor.strip(), tuple(_globs(at, table.get("profiles"))))


def _globs(at: str, profiles: object) -> list[str]:
    if (
        not isinstance(profiles, list)
        or not profiles
        or not all(isinstance(p, str) and "/" in p for p in profiles)
    ):
        raise ConfigError(
            f'{at}: profiles must be a list of MACHINE/PROFILE globs (e.g. ["spark01/claude"])'
        )
    return profiles


def read_api_key(path: Path, provider: str) -> str:
    """A provider's admin key from `path`, refusing a file that group or others can read."""
    what = f"the {provider} admin key file"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: {what} must be a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"{path}: {what} can be read by group or others; run: chmod 600 {path}"
            )
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: {what} does not exist ([reconcile.{provider}] key_file)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read {what}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not key or any(c.isspace() or not c.isprintable() for c in key):
        raise ConfigError(f"{path}: {what} must hold one key on one line")
    return key

"""The `[alerts]` table of hub.toml: where findings go and how hard delivery tries.

```toml
[alerts]
retry_first = 5.0          # seconds before the first retry; each next one waits twice as long
retry_max = 3600.0         # ... but never more than this (plus or minus 20 % jitter)
give_up_after = 86400.0    # then the delivery is dead-lettered (retry it by hand)
concurrency = 4            # deliveries in flight at once

[[alerts.sinks]]
name = "ops-hook"
type = "webhook"           # webhook | slack | ntfy | program
url = "https://hooks.example.com/fleetmeter"
secret_file = "ops-hook.secret"   # whsec_<base64>, mode 600: signs per Standard Webhooks
min_severity = "warning"   # info | warning | critical
scopes = ["machine=spark*"]       # default: every scope
kinds = ["budget", "cache_*"]     # default: every kind
timeout = 15.0
```

A `program` sink has `command = ["/usr/local/bin/page-me", "--team", "ops"]` instead of `url`:
it gets the webhook body on stdin; exit 0 means delivered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from hub.alerts.match import ANY, kind_matches, kind_problem, scope_matches, scope_problem
from hub.findings import Severity
from shared.config import ConfigError

RANK: Final = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
ALERTS_KEYS: Final = ("retry_first", "retry_max", "give_up_after", "concurrency", "sinks")
SINK_KEYS: Final = (
    "name",
    "type",
    "url",
    "command",
    "secret_file",
    "min_severity",
    "scopes",
    "kinds",
    "timeout",
)


class SinkType(StrEnum):
    WEBHOOK = "webhook"  # the Standard Webhooks JSON body, signed
    SLACK = "slack"  # a Slack incoming webhook (text + blocks)
    NTFY = "ntfy"  # ntfy's publish: the text as body, title/priority/tags as headers
    PROGRAM = "program"  # a command run with the webhook body on stdin


@dataclass(frozen=True, slots=True)
class SinkSettings:
    name: str
    type: SinkType
    url: str | None = None
    command: tuple[str, ...] = ()
    secret_file: Path | None = None
    min_severity: Severity = Severity.INFO
    scopes: tuple[str, ...] = (ANY,)
    kinds: tuple[str, ...] = (ANY,)
    timeout: float = 15.0

    def routes(self, severity: Severity, kind: str, scope: str) -> bool:
        """Whether a finding of this severity, kind and scope goes to this sink."""
        return (
            RANK[severity] >= RANK[self.min_severity]
            and any(scope_matches(p, scope) for p in self.scopes)
            and any(kind_matches(p, kind) for p in self.kinds)
        )


@dataclass(frozen=True, slots=True)
class AlertSettings:
    sinks: tuple[SinkSettings, ...] = ()
    retry_first: float = 5.0
    retry_max: float = 3600.0
    give_up_after: float = 86400.0
    concurrency: int = 4

    def sink(self, name: str) -> SinkSettings | None:
        return next((s for s in self.sinks if s.name == name), None)


def parse_alerts(where: str, data: object, base: Path) -> AlertSettings:
    """The [alerts] table (`data`), relative paths against `base`; ConfigError names the key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: 'alerts' must be a table ([alerts], [[alerts.sinks]])")
    if extra := sorted(set(data) - set(ALERTS_KEYS)):
        raise ConfigError(
            f"{where}: unknown key(s) in [alerts]: {', '.join(extra)} "
            f"(known: {', '.join(ALERTS_KEYS)})"
        )
    sinks_data = data.get("sinks", [])
    if not isinstance(sinks_data, list):
        raise ConfigError(f"{where}: alerts.sinks must be an array of tables ([[alerts.sinks]])")
    sinks = tuple(_sink(where, i, s, base) for i, s in enumerate(sinks_data))
    names = [s.name for s in sinks]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{where}: alerts.sinks: name {dup[0]!r} is used twice")
    concurrency = data.get("concurrency", 4)
    if (
        not isinstance(concurrency, int)
        or isinstance(concurrency, bool)
        or not 1 <= concurrency <= 64
    ):
        raise ConfigError(f"{where}: alerts.concurrency must be a whole number from 1 to 64")
    return AlertSettings(
        sinks=sinks,
        retry_first=_seconds(where, "alerts.retry_first", data.get("retry_first", 5.0)),
        retry_max=_seconds(where, "alerts.retry_max", data.get("retry_max", 3600.0)),
        give_up_after=_seconds(where, "alerts.give_up_after", data.get("give_up_after", 86400.0)),
        concurrency=concurrency,
    )


def _sink(where: str, index: int, data: object, base: Path) -> SinkSettings:
    at = f"{where}: alerts.sinks[{index}]"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{at} must be a table")
    if extra := sorted(set(data) - set(SINK_KEYS)):
        raise ConfigError(
            f"{at}: unknown key(s) {', '.join(extra)} (known: {', '.join(SINK_KEYS)})"
        )
    name = data.get("name")
    if not isinstance(name, str) or not name or len(name) > 64 or not name.isprintable():
        raise ConfigError(f"{at}: 'name' must be a short printable name (up to 64 characters)")
    at = f"{where}: alerts sink {name!r}"
    try:
        kind = SinkType(str(data.get("type")))
    except ValueError:
        raise ConfigError(
            f"{at}: 'type' must be one of {', '.join(t.value for t in SinkType)}"
        ) from None
    url = data.get("url")
    command: tuple[str, ...] = ()
    if kind is SinkType.PROGRAM:
        raw = data.get("command")
        if url is not None:
            raise ConfigError(f"{at}: a program sink has 'command', not 'url'")
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(w, str) and w and "\0" not in w for w in raw)
        ):
            raise ConfigError(f"{at}: 'command' must be a list of words, e.g. [\"/usr/bin/pager\"]")
        command = tuple(raw)
    else:
        if data.get("command") is not None:
            raise ConfigError(f"{at}: a {kind.value} sink has 'url', not 'command'")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{at}: 'url' must be an http:// or https:// URL")
    secret = data.get("secret_file")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigError(f"{at}: 'secret_file' must be a path")
    secret_file = None
    if secret is not None:
        secret_file = Path(secret).expanduser()
        secret_file = secret_file if secret_file.is_absolute() else base / secret_file
    if kind is SinkType.WEBHOOK and secret_file is None:
        raise ConfigError(
            f"{at}: a webhook sink needs 'secret_file' (whsec_<base64>, mode 600) to sign with"
        )
    try:
        severity = Severity(data.get("min_severity", Severity.INFO))
    except ValueError:
        raise ConfigError(
            f"{at}: 'min_severity' must be one of {', '.join(s.value for s in Severity)}"
        ) from None
    scopes = _patterns(at, "scopes", data.get("scopes", [ANY]), scope_problem)
    kinds = _patterns(at, "kinds", data.get("kinds", [ANY]), kind_problem)
    timeout = _seconds(at, "timeout", data.get("timeout", 15.0))
    return SinkSettings(
        name=name,
        type=kind,
        url=url if isinstance(url, str) else None,
        command=command,
        secret_file=secret_file,
        min_severity=severity,
        scopes=scopes,
        kinds=kinds,
        timeout=timeout,
    )


def _patterns(at: str, key: str, value: Any, problem: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{at}: {key!r} must be a non-empty list of strings")
    for pattern in value:
        if (why := problem(pattern)) is not None:
            raise ConfigError(f"{at}: {key}: {why}")
    return tuple(value)


def _seconds(at: str, key: str, value: Any) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 < value <= 30 * 86400
    ):
        raise ConfigError(f"{at}: {key!r} must be a number of seconds above 0 (at most 30 days)")
    return float(value)

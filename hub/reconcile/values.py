"""Reading a provider's figures strictly: counts as whole numbers, money as exact decimals.

Providers (and proxies in front of them) send numbers as JSON numbers or as strings; both are
read, anything else is a ConnectorError naming the field. Money never goes through a float
that was not already one on the wire (and then through its shortest decimal text).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.reconcile.model import ConnectorError, UsageLine
from shared.events import Tokens

MAX_COUNT = 2**53


def count(value: object, what: str) -> int:
    """A token or request count: an int, an integral float, or a string of digits; null is 0."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ConnectorError(f"{what}: {value!r} is not a count")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ConnectorError(f"{what}: {value!r} is not a whole number of tokens")
    return value


def money(value: object, what: str) -> Decimal:
    """An exact amount from a decimal string or a JSON number (its shortest text)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConnectorError(f"{what}: {value!r} is not an amount")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else repr(value))
    except InvalidOperation:
        raise ConnectorError(f"{what}: {value!r} is not an amount") from None
    if not amount.is_finite():
        raise ConnectorError(f"{what}: {value!r} is not an amount")
    return amount


def day_of_rfc3339(value: object, what: str) -> date:
    """The UTC day a bucket starts on, from its RFC 3339 `starting_at`."""
    if not isinstance(value, str):
        raise ConnectorError(f"{what}: {value!r} is not an RFC 3339 time")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConnectorError(f"{what}: {value!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise ConnectorError(f"{what}: {value!r} has no offset")
    return when.astimezone(UTC).date()


def day_of_epoch(value: object, what: str) -> date:
    seconds = count(value, what)
    return datetime.fromtimestamp(seconds, UTC).date()


def instant_of(value: object, what: str) -> float:
    """Epoch seconds of an RFC 3339 time or an epoch number."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ConnectorError(f"{what}: {value!r} is not a time") from None
    return float(count(value, what))


def text_or_none(value: object, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 500:
        raise ConnectorError(f"{what}: {value!r} is not a name")
    return value


def usage_line(
    day: date,
    result: Mapping[str, Any],
    scope_field: str,
    tokens: Tokens,
    where: str,
    tier: str | None = None,
) -> UsageLine:
    """A usage result's key, workspace or project (`scope_field`) and model, with `tokens`."""
    return UsageLine(
        day=day,
        key=text_or_none(result.get("api_key_id"), f"{where} api_key_id"),
        scope=text_or_none(result.get(scope_field), f"{where} {scope_field}"),
        model=text_or_none(result.get("model"), f"{where} model") or "(no model)",
        tokens=tokens,
        tier=tier,
    )


def tier_of(result: Mapping[str, Any], fields: tuple[str, ...], where: str) -> str | None:
    """The rate tier a result names (e.g. "200k-1M standard"), or None when it names none."""
    parts = [text_or_none(result.get(f), f"{where} {f}") for f in fields]
    named = [p for p in parts if p is not None]
    return " ".join(named) if named else None

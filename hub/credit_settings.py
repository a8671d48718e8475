"""`[[subscriptions]]` in the hub config: a Claude profile's Agent SDK credit, extra usage and
the zone its month turns in, where the plan's defaults do not fit.

    [[subscriptions]]
    profile = "spark01/max-a"     # MACHINE/PROFILE, as the Profiles tab shows it
    sdk_credit = "150"            # USD a month (default: the plan's, $20 Pro, $100/$200 Max)
    extra_usage = true            # overage is billed at API rates (default false)
    tz = "America/New_York"       # the month turns at midnight here (default UTC)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.credit import PLAN_CREDIT, ZERO, CreditTerms
from hub.model import ProfileRecord
from shared.config import Billing, ConfigError
from shared.events import Agent

KEYS: Final = ("profile", "sdk_credit", "extra_usage", "tz")
_AMOUNT: Final = re.compile(r"^\d{1,7}(?:\.\d{1,2})?$")


@dataclass(frozen=True, slots=True)
class SubscriptionSettings:
    profile: str  # MACHINE/PROFILE
    sdk_credit: Decimal | None = None  # None: the plan's
    extra_usage: bool = False
    tz: str = "UTC"


def parse_subscriptions(where: str, data: object) -> tuple[SubscriptionSettings, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(
            f"{where}: 'subscriptions' must be an array of tables ([[subscriptions]])"
        )
    found: dict[str, SubscriptionSettings] = {}
    for i, item in enumerate(data):
        here = f"{where}: subscriptions[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{here} must be a table")
        if extra := sorted(set(item) - set(KEYS)):
            raise ConfigError(
                f"{here}: unknown key(s) {', '.join(extra)} (known: {', '.join(KEYS)})"
            )
        profile = item.get("profile")
        if not isinstance(profile, str) or profile.count("/") != 1 or "" in profile.split("/"):
            raise ConfigError(f'{here}.profile must be "MACHINE/PROFILE", not {profile!r}')
        if profile in found:
            raise ConfigError(f"{here}.profile: {profile!r} is already configured")
        credit = item.get("sdk_credit")
        if credit is not None and (not isinstance(credit, str) or not _AMOUNT.match(credit)):
            raise ConfigError(
                f'{here}.sdk_credit must be dollars as a string like "100" or "150.50", '
                f"not {credit!r}"
            )
        extra_usage = item.get("extra_usage", False)
        if not isinstance(extra_usage, bool):
            raise ConfigError(f"{here}.extra_usage must be true or false")
        tz = item.get("tz", "UTC")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigError(
                f"{here}.tz = {tz!r} is not an IANA zone (e.g. Europe/Berlin)"
            ) from None
        found[profile] = SubscriptionSettings(
            profile, None if credit is None else Decimal(credit), extra_usage, tz
        )
    return tuple(found.values())


def credit_terms(
    record: ProfileRecord, settings: Sequence[SubscriptionSettings]
) -> CreditTerms | None:
    """The credit a profile draws from, or None when it has none: only Claude Code on a
    subscription has one, from an amount configured or its plan; with neither, its terms say
    the credit is not known (its SDK calls are then estimated, never silently included)."""
    if record.agent is not Agent.CLAUDE_CODE or record.billing is not Billing.SUBSCRIPTION:
        return None
    key = f"{record.node}/{record.name}"
    own = next((s for s in settings if s.profile == key), None)
    tz = ZoneInfo(own.tz) if own is not None else ZoneInfo("UTC")
    if own is not None and own.sdk_credit is not None:
        return CreditTerms(own.sdk_credit, own.extra_usage, tz, "hub config [[subscriptions]]")
    extra = own.extra_usage if own is not None else False
    plan_credit = PLAN_CREDIT.get(record.plan or "")
    if plan_credit is None:
        told = f"plan {record.plan!r}" if record.plan else "no plan"
        return CreditTerms(ZERO, extra, tz, f"not known ({told})", known=False)
    return CreditTerms(plan_credit, extra, tz, f"plan {record.plan}")

"""What the hub's store takes in and hands back, besides the events themselves.

`NodeHello` (what a node says about itself with its batches) is part of the wire contract and
lives in `shared.hello`; it is re-exported here for the hub's modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Final

from pricing.sdk_credit import Moved
from shared.config import Billing
from shared.events import Agent, LimitEvent, ProfileEvent, UsageEvent

# A node unseen for this many stale periods is offline rather than stale: it has not merely
# missed a few beats, it is down (or unplugged), and the TUI greys it out.
OFFLINE_AFTER_STALE_PERIODS: Final = 10


class NodeState(StrEnum):
    ONLINE = "online"
    STALE = "stale"  # missed a few beats
    OFFLINE = "offline"  # silent for OFFLINE_AFTER_STALE_PERIODS stale periods, or never seen


@dataclass(frozen=True, slots=True)
class NodeRecord:
    node: str
    first_seen: float
    last_seen: float | None
    version: str | None = None
    boot_time: float | None = None
    os: str | None = None
    cpu_count: int | None = None

    def state(self, now: float, stale_after: float) -> NodeState:
        """ONLINE when seen within `stale_after` seconds; STALE up to 10× that; else OFFLINE."""
        if self.last_seen is None:
            return NodeState.OFFLINE
        silent = now - self.last_seen
        if silent <= stale_after:
            return NodeState.ONLINE
        if silent <= stale_after * OFFLINE_AFTER_STALE_PERIODS:
            return NodeState.STALE
        return NodeState.OFFLINE


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    node: str
    name: str
    agent: Agent
    billing: Billing
    account: str | None
    plan: str | None
    first_seen: float
    last_announced: float  # the last hello that listed it


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    ts: float
    who: str
    action: str
    target: str
    result: str


# A usage event's change in the store: (the version it replaced or None, the version now kept).
Change = tuple[UsageEvent | None, UsageEvent]
# A call's price as the store keeps it: (API-equivalent USD, None when no price is known;
# whether it is an estimate). The cost class follows from the profile's billing.
Price = tuple[Decimal | None, bool]


@dataclass(frozen=True, slots=True)
class Redraw:
    """A call whose moves out of subscription_included changed by `moved` (negative: moved
    back), at the price its roll-up cell was summed at."""

    event: UsageEvent
    price: Price
    moved: Moved


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one batch did. A re-sent batch changes nothing but liveness (every event in it is
    known at its revision): the receiver acks it again."""

    changes: list[Change] = field(default_factory=list)
    # per change: (the price the replaced version was stored at, or None; the new one's)
    prices: list[tuple[Price | None, Price]] = field(default_factory=list)
    limits: list[LimitEvent] = field(default_factory=list)  # newly stored
    profile_events: list[ProfileEvent] = field(default_factory=list)  # newly stored
    ignored: int = 0  # events already known at this or a higher revision
    # events from before the store's retention edge (`Store.pruned_before`): not stored, as a
    # copy of a pruned call could not be told from it (a node reading logs older than
    # `retain_days`, say)
    too_old: int = 0
    # (event_id, why) of events that could not be stored (a non-finite time, say): left out
    # and reported, so that one bad event never blocks the node's stream
    rejected: list[tuple[str, str]] = field(default_factory=list)
    # (event_id, owner) of events another node stored first: rejected, the owner's row untouched
    foreign: list[tuple[str, str]] = field(default_factory=list)
    gap: bool = False  # seq0 skipped past the latest committed batch: batches went missing
    # The hello changed the billing some (node, profile) resolves to (a new subscription profile
    # counts: its events were taken as API before). Ledger figures classified under the old
    # billing are stale: rebuild the ledger instead of applying `changes`.
    billing_changed: bool = False
    # Calls whose part past the Agent SDK credit (or untold part) changed in this batch
    # (`hub._credit_store`): the ledger moves them between classes.
    redraws: list[Redraw] = field(default_factory=list)
    # A profile's credit was drawn again whole (its terms changed), or a move could not be
    # placed: reload the figures from the roll-ups instead of applying `redraws`.
    credit_redrawn: bool = False

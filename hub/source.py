"""What the dashboard reads: `FleetSource`, exactly the part of the hub service that
`hub.dashboard`, `hub.header` and `hub.tui` use.

Two things satisfy it: `FleetService` itself (the embedded hub, in process) and
`hub.remote.RemoteFleet` (a local mirror of a running hub's API). Reads are cheap and never
wait on a network; `session_series` and `profile_history` (the detail view's) may: a screen
calls them off its UI thread when `Connection.remote` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from hub._runrate import FLEET, Scope
from hub._totals import Basis, Totals
from hub.ledger import Dimension, Period, SessionFigures
from hub.model import ProfileRecord
from hub.profile_board import ProfileStanding
from hub.session_series import SessionSeries
from shared.events import ProfileEvent
from shared.hello import ProcessInfo
from shared.outcomes import SessionOutcome

if TYPE_CHECKING:
    from hub.service import Action, CommandOutcome, FeedItem, NodeView, Subscriber


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the figures come from, as the dashboard's header says it."""

    label: str  # "embedded hub", "attached to http://127.0.0.1:7463"
    remote: bool = False  # reads may wait on the network: detail views fetch off the UI thread
    unreachable_since: float | None = None  # the hub stopped answering then (figures are old)
    refused: str | None = None  # the hub answers but refuses the token: its words
    may_halt: bool = True  # False: a viewer token (the halt keys say so)
    who: str | None = None  # the name the hub audits halts under (the token's)


class FleetSource(Protocol):
    def clock(self) -> float: ...

    @property
    def tz(self) -> tzinfo: ...

    def connection(self) -> Connection: ...

    def nodes(self) -> list[NodeView]: ...

    def profiles(self) -> list[ProfileRecord]: ...

    def credits(self) -> dict[str, dict[str, Any]]: ...

    def processes(self, node: str | None = None) -> list[tuple[str, ProcessInfo]]: ...

    def paused_by(self, node: str, process: ProcessInfo) -> tuple[float, str] | None: ...

    def fleet(self, period: Period) -> Totals: ...

    def totals(self, dimension: Dimension, period: Period) -> dict[str | None, Totals]: ...

    def total(self, dimension: Dimension, key: str | None, period: Period) -> Totals: ...

    def sessions(self, keys: Iterable[str] | None = None) -> list[SessionFigures]: ...

    def active_sessions(self, since: float) -> list[SessionFigures]: ...

    def session_label(self, key: str) -> str: ...

    def session_series(self, key: str, bins: int) -> SessionSeries: ...

    def run_rate_bins(self, scope: Scope, bins: int) -> list[Decimal]: ...

    def burn_rate_per_hour(
        self, scope: Scope = FLEET, minutes: int = 15, basis: Basis = Basis.API_EQUIVALENT
    ) -> Decimal: ...

    def first_call(self) -> float | None: ...

    def profile_standing(self, key: str) -> ProfileStanding: ...

    def profile_history(self, key: str) -> list[ProfileEvent]: ...

    def recent_feed(self, limit: int = 100) -> list[FeedItem]: ...

    def outcome_report(self, view: str, period: Period) -> dict[str, Any] | None: ...

    def session_outcome(self, key: str) -> SessionOutcome | None: ...

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]: ...

    async def acommand(
        self, node: str, action: Action, pid: int, create_time: float, *, who: str
    ) -> CommandOutcome: ...

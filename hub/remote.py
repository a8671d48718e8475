"""`RemoteFleet`: a running hub's figures mirrored locally, for a dashboard attached to it.

It satisfies `hub.source.FleetSource` as the embedded service does, so the view model reads
either alike. Reads are answered from the mirror and never wait on the network (the detail
view's extra reads excepted: `session_series`, `profile_history`, and the totals or run
rates of scopes the mirror does not follow, which a screen calls off its UI thread).

Two threads keep it current. The stream thread holds `GET /api/v1/stream` open: at its
`hello` (a new connection) and at a `resync` it asks for a snapshot, and each `update` adds
what changed to a pending `Update`. The fetch thread takes what is pending after a short
burst, fetches the changed rows with one request per kind (`/api/v1/mirror/...`), applies
them and tells the subscribers with the same `Update` the service would publish. A snapshot
replaces the mirror whole, so figures are never added twice, whatever was missed. When the
hub stops answering, the mirror keeps the last figures and says since when
(`Connection.unreachable_since`); the stream thread reconnects with a backoff that doubles
up to `MAX_BACKOFF_S`, and the next snapshot brings everything back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, tzinfo
from decimal import Decimal, localcontext
from typing import Any, Final
from urllib.parse import quote

import httpx
import orjson

from hub import mirror_codec as codec
from hub._outcome_cache import OutcomeRowsCache, first_day
from hub._runrate import FLEET, RunRate, Scope
from hub._sessions import SessionNames
from hub._sse import sse_events
from hub._subscribers import Subscribers
from hub._totals import MONEY, ZERO, Basis, Totals
from hub.ledger import Dimension, Period, SessionFigures, covered, profile_key
from hub.model import ProfileRecord
from hub.profile_board import ProfileStanding
from hub.service import (
    FEED_SIZE,
    Action,
    CommandOutcome,
    FeedItem,
    NodeView,
    Subscriber,
    Update,
)
from hub.session_series import SessionSeries
from hub.source import Connection
from shared.events import Agent, ProfileEvent, ProfileState
from shared.hello import ProcessInfo
from shared.outcomes import SessionOutcome, outcome_from_map

log = logging.getLogger(__name__)

API: Final = "/api/v1"
BURST_S: Final = 0.05  # changes within this of each other are fetched together
REFRESH_S: Final = 5.0  # profiles' standing moves with the clock (resets, idle): read again
FIRST_BACKOFF_S: Final = 0.5
MAX_BACKOFF_S: Final = 10.0
# Keys per request, and their characters: servers and proxies limit a request line (nginx:
# 8 KiB by default; uvicorn buffers 16 KiB of one that comes in pieces).
CHUNK: Final = 200
CHUNK_CHARS: Final = 8000
RUN_RATE_HOURS: Final = 6.0  # the hub ledger's run-rate window
CONNECT_S: Final = 5.0
READ_S: Final = 60.0  # the stream sends a keepalive every 15 s: silence this long is a dead hub
COMMAND_READ_S: Final = 15.0  # a kill is answered within 6.5 s
FOLLOWED: Final = ((Dimension.MACHINE, Period.TODAY), (Dimension.PROFILE, Period.TODAY))


class HubUnavailable(Exception):
    """The hub did not answer as a hub: no connection (`status` None), or an error status
    with the hub's own words."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RemoteFleet:
    """See the module's doc. `start()` connects and waits for the first snapshot; `close()`."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        verify: ssl.SSLContext | bool = True,
        live_window: float = 1800.0,
        clock: Callable[[], float] = time.time,
        event_hooks: dict[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        """`event_hooks`: httpx's, for the requests of the mirror's reads (a test counts them)."""
        self.url = url.rstrip("/")
        self._local_clock = clock
        self._skew = 0.0  # the hub's clock minus ours, as of the last snapshot
        self.live_window = live_window
        headers = {"Authorization": f"Bearer {token}"}
        timeout = httpx.Timeout(READ_S, connect=CONNECT_S)
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            verify=verify,
            timeout=timeout,
            event_hooks=event_hooks,
        )
        # the stream has a connection of its own: closing it must not touch the fetches
        self._stream_http = httpx.Client(
            base_url=self.url, headers=headers, verify=verify, timeout=timeout
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._loaded = threading.Event()
        self._who = ("", "")  # (token name, role)
        # the mirror
        self._nodes: dict[str, NodeView] = {}
        self._pauses: dict[str, dict[tuple[int, float], tuple[float, str]]] = {}
        self._profiles: dict[str, tuple[ProfileRecord, ProfileStanding]] = {}
        self._credits: dict[str, dict[str, Any]] = {}  # MACHINE/PROFILE -> Agent SDK credit
        self._sessions: dict[str, SessionFigures] = {}
        self._fleet: dict[Period, Totals] = {}
        self._totals: dict[tuple[Dimension, Period], dict[str | None, Totals]] = {}
        self._followed: set[tuple[Dimension, Period]] = set(FOLLOWED)
        self._rates: dict[Scope, RunRate] = {}
        self._first_call: float | None = None
        self._tz: tzinfo = UTC
        self._outcomes = OutcomeRowsCache(self._read_outcomes)  # the Spend-by outcome views
        self._feed: deque[FeedItem] = deque(maxlen=FEED_SIZE)
        self._names = SessionNames()  # for sessions the mirror has no row of yet
        # what the fetch thread is to do
        self._pending = Update()
        self._resync = False
        self._down_since: float | None = None
        self._refused: str | None = None  # why the hub refuses this dashboard's token
        self._linked = False  # the stream is open (a snapshot can be read)
        self._response: httpx.Response | None = None  # the open stream (closed to stop)
        self._subscribers = Subscribers[Update]()
        self._threads: list[threading.Thread] = []

    # -- life --------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Check the token, start following the hub and wait for the first snapshot. Raises
        HubUnavailable (with the hub's own words when it answered)."""
        who = self._get("/whoami")
        self._who = (str(who.get("name", "?")), str(who.get("role", "?")))
        for target, name in ((self._follow_stream, "hub-stream"), (self._fetch_loop, "hub-fetch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._loaded.wait(timeout):
            self.close()
            raise HubUnavailable(f"the hub at {self.url} sent no figures within {timeout:g} s")

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._drop_stream()
        for thread in self._threads:
            thread.join(timeout=5)
        self._http.close()
        self._stream_http.close()

    def __enter__(self) -> RemoteFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- FleetSource: where, who, when ---------------------------------------------------------

    def clock(self) -> float:
        """The hub's time: ages, windows and rates match the hub's figures on a workstation
        whose clock is off."""
        return self._local_clock() + self._skew

    @property
    def tz(self) -> tzinfo:
        return self._tz

    def connection(self) -> Connection:
        name, role = self._who
        return Connection(
            f"attached to {self.url}",
            remote=True,
            unreachable_since=self._down_since,
            refused=self._refused,
            may_halt=role == "operator",
            who=name,
        )

    # -- FleetSource: the mirror's reads -----------------------------------------------------

    def nodes(self) -> list[NodeView]:
        with self._lock:
            return list(self._nodes.values())

    def profiles(self) -> list[ProfileRecord]:
        with self._lock:
            return [record for record, _ in self._profiles.values()]

    def credits(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._credits)

    def processes(self, node: str | None = None) -> list[tuple[str, ProcessInfo]]:
        with self._lock:
            return [
                (name, p)
                for name, view in sorted(self._nodes.items())
                if (node is None or name == node) and view.hello is not None
                for p in view.hello.processes
            ]

    def paused_by(self, node: str, process: ProcessInfo) -> tuple[float, str] | None:
        with self._lock:
            return self._pauses.get(node, {}).get((process.pid, process.create_time))

    def fleet(self, period: Period) -> Totals:
        with self._lock:
            return self._fleet.get(period, Totals()).copy()

    def totals(self, dimension: Dimension, period: Period) -> dict[str | None, Totals]:
        """From the mirror; a pair it did not follow yet is followed from now on (empty until
        it has been read: the subscribers are told then)."""
        pair = (dimension, period)
        with self._lock:
            table = self._totals.get(pair)
            if table is None:
                self._followed.add(pair)
                self._pending.machines |= set(self._nodes)  # read the figures again
                self._wake.set()
                return {}
            return {k: t.copy() for k, t in table.items()}

    def total(self, dimension: Dimension, key: str | None, period: Period) -> Totals:
        """From the mirror when it follows the pair; else read from the hub (the detail view's
        other periods: call it off the UI thread)."""
        pair = (dimension, period)
        with self._lock:
            table = self._totals.get(pair)
            if table is not None:
                found = table.get(key)
                return found.copy() if found is not None else Totals()
        figures = self._figures([pair], [])
        return figures.totals.get(pair, {}).get(key) or Totals()

    def sessions(self, keys: Iterable[str] | None = None) -> list[SessionFigures]:
        with self._lock:
            if keys is None:
                return list(self._sessions.values())
            return [row for k in keys if (row := self._sessions.get(k)) is not None]

    def active_sessions(self, since: float) -> list[SessionFigures]:
        with self._lock:
            return [row for row in self._sessions.values() if row.last_ts >= since]

    def session_label(self, key: str) -> str:
        with self._lock:
            row = self._sessions.get(key)
            return row.label if row is not None and row.label else self._names.name(key)

    def run_rate_bins(self, scope: Scope, bins: int) -> list[Decimal]:
        rate = self._rate(scope)
        with localcontext(MONEY):
            return rate.binned(scope, self._minute(), bins, Basis.API_EQUIVALENT)

    def burn_rate_per_hour(
        self, scope: Scope = FLEET, minutes: int = 15, basis: Basis = Basis.API_EQUIVALENT
    ) -> Decimal:
        with self._lock:
            rate = self._rates.get(scope)
            first = self._first_call
        if rate is None:
            return ZERO
        with localcontext(MONEY):
            total = rate.total(scope, self._minute(), minutes, basis)
            return total * 3600 / Decimal(covered(minutes * 60, first, self.clock()))

    def first_call(self) -> float | None:
        with self._lock:
            return self._first_call

    def profile_standing(self, key: str) -> ProfileStanding:
        with self._lock:
            found = self._profiles.get(key)
        return found[1] if found is not None else ProfileStanding(ProfileState.IDLE, None)

    def recent_feed(self, limit: int = 100) -> list[FeedItem]:
        with self._lock:
            return list(self._feed)[-limit:]

    # -- FleetSource: reads that ask the hub (detail views) ----------------------------------

    def outcome_report(self, view: str, period: Period) -> dict[str, Any] | None:
        return self._outcomes.get(view, first_day(period, self.clock(), self._tz))

    def _read_outcomes(self, view: str, since: date) -> dict[str, Any]:
        zone = getattr(self._tz, "key", None) or "UTC"
        got: dict[str, Any] = self._get("/report", by=view, tz=zone, since=since.isoformat())
        return got

    def session_outcome(self, key: str) -> SessionOutcome | None:
        try:
            got = self._get(f"/sessions/{_quote(key)}/outcome")
        except HubUnavailable:
            return None
        found = got.get("outcome")
        return None if found is None else outcome_from_map(found)

    def session_series(self, key: str, bins: int) -> SessionSeries:
        try:
            got = self._get(f"/sessions/{_quote(key)}/series", bins=bins)
        except HubUnavailable:
            return SessionSeries(0.0, 0.0, [ZERO] * bins)
        amounts = [Decimal(a) if a is not None else ZERO for a in got["bins"]]
        rolled = got.get("rolled_up_before")
        return SessionSeries(
            float(got["first_call"]),
            float(got["last_call"]),
            amounts,
            None if rolled is None else float(rolled),
        )

    def profile_history(self, key: str) -> list[ProfileEvent]:
        machine, _, name = key.partition("/")
        try:
            rows = self._get(f"/profiles/{_quote(machine)}/{_quote(name)}/history")
        except HubUnavailable:
            return []
        with self._lock:
            found = self._profiles.get(key)
        agent = found[0].agent if found is not None else Agent.CLAUDE_CODE
        return [
            ProfileEvent(
                "",
                float(r["when"]),
                machine,
                name,
                agent,
                ProfileState(r["state"]),
                r.get("until"),
                r.get("switched_to"),
                r.get("reason"),
            )
            for r in rows
        ]

    # -- FleetSource: changes and commands ---------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        return self._subscribers.add(subscriber)

    async def acommand(
        self, node: str, action: Action, pid: int, create_time: float, *, who: str
    ) -> CommandOutcome:
        """POST the command; `who` is the hub's business (the token's name is audited)."""
        return await asyncio.to_thread(self.command, node, action, pid, create_time)

    def command(self, node: str, action: Action, pid: int, create_time: float) -> CommandOutcome:
        body = {"machine": node, "pid": pid, "create_time": create_time}
        try:
            answer = self._http.post(
                f"{API}/commands/{action}", json=body, timeout=httpx.Timeout(COMMAND_READ_S)
            )
        except httpx.HTTPError as exc:
            return CommandOutcome(False, "no answer", f"the hub does not answer: {exc}", node, pid)
        if answer.status_code == 403:
            return CommandOutcome(False, "refused", "needs an operator token", node, pid)
        if answer.status_code != 200:
            return CommandOutcome(False, "refused", _error(answer), node, pid)
        got = answer.json()
        return CommandOutcome(
            bool(got.get("ok")),
            str(got.get("outcome", "?")),
            str(got.get("detail", "")),
            node,
            pid,
            tuple(p for p in got.get("pids", []) if isinstance(p, int)),
        )

    # -- the stream thread -------------------------------------------------------------------

    def _follow_stream(self) -> None:
        backoff = FIRST_BACKOFF_S
        while not self._stop.is_set():
            refused = None
            try:
                for name, data in self._stream():
                    if name in ("hello", "resync"):
                        with self._lock:
                            self._resync = self._linked = True
                        backoff = FIRST_BACKOFF_S
                    elif name == "update":
                        self._note(orjson.loads(data))
                    self._wake.set()
            except HubUnavailable as exc:
                refused = str(exc) if exc.status in (401, 403) else None
                log.info("hub stream ended: %s", exc)
            except Exception as exc:  # noqa: BLE001 (a bad event ends the stream, not the thread)
                if not self._stop.is_set():
                    log.info("hub stream ended: %s", exc)
            if self._stop.is_set():
                return
            self._went_down(refused)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _stream(self) -> Iterator[tuple[str, str]]:
        with self._stream_http.stream("GET", f"{API}/stream") as response:
            if response.status_code != 200:
                response.read()
                raise HubUnavailable(f"the hub says: {_error(response)}", response.status_code)
            with self._lock:
                self._response = response
            try:
                yield from sse_events(response.iter_lines())
            finally:
                with self._lock:
                    self._response = None
        raise HubUnavailable("the hub closed the stream")

    def _note(self, data: dict[str, Any]) -> None:
        feed = [_feed_item(i) for i in data.get("feed", [])]
        with self._lock:
            p = self._pending
            p.usage += int(data.get("usage", 0))
            p.machines.update(data.get("machines", []))
            p.profiles.update(data.get("profiles", []))
            p.sessions.update(data.get("sessions", []))
            p.feed.extend(feed)
            p.nodes_changed |= bool(data.get("nodes_changed"))
            p.alerts |= bool(data.get("alerts"))

    def _went_down(self, refused: str | None = None) -> None:
        """The stream ended: say since when (and `refused`: why the hub refuses us)."""
        with self._lock:
            self._linked = False
            if self._down_since is not None and self._refused == refused:
                return
            self._refused = refused
            if self._down_since is None:
                self._down_since = self.clock()
        self._publish(Update(nodes_changed=True))  # the header says so at once

    def _drop_stream(self) -> None:
        """End the stream's read (the stream thread then reconnects and says what it finds)."""
        with self._lock:
            response = self._response
        if response is None:
            return
        # A read blocked in another thread is ended by shutting its socket (httpx's documented
        # "network_stream" extension); closing the response would wait for that read.
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- the fetch thread --------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        refreshed = time.monotonic()
        backoff = FIRST_BACKOFF_S
        while not self._stop.is_set():
            self._wake.wait(REFRESH_S)
            self._wake.clear()
            self._stop.wait(BURST_S)
            if self._stop.is_set():
                return
            with self._lock:
                if not self._linked:
                    continue  # the stream thread reconnects; its hello asks for a snapshot
                pending, self._pending = self._pending, Update()
                resync, self._resync = self._resync, False
            due = time.monotonic() - refreshed >= REFRESH_S
            try:
                if resync:
                    change = self._snapshot()
                    refreshed = time.monotonic()
                elif _anything(pending):
                    change = self._fetch(pending)
                    if due:  # a busy hub (heartbeats) must not starve the profiles' refresh
                        change.profiles |= self._read_profiles(None)
                        refreshed = time.monotonic()
                elif due:
                    change = Update(profiles=self._read_profiles(None))
                    refreshed = time.monotonic()
                else:
                    continue
            except Exception as exc:  # noqa: BLE001 (a dead thread would freeze the mirror)
                log.warning("could not read the hub's figures: %s", exc)
                with self._lock:
                    self._resync = True  # a whole snapshot once it answers again
                if isinstance(exc, HubUnavailable) and exc.status in (401, 403):
                    self._drop_stream()  # a revoked token: the stream's next connect says so
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                self._wake.set()
                continue
            backoff = FIRST_BACKOFF_S
            with self._lock:
                if resync and self._down_since is not None:
                    self._down_since = self._refused = None
                    change.nodes_changed = True
            self._loaded.set()
            self._publish(change)

    def _snapshot(self) -> Update:
        """Everything again: the mirror is replaced, never added to."""
        nodes = self._get("/mirror/nodes")["nodes"]
        names = [str(n.get("node")) for n in nodes]
        with self._lock:
            before_sessions = set(self._sessions)
            before_feed = {_feed_key(i) for i in self._feed}
            followed = sorted(self._followed)
        profiles = self._get("/mirror/profiles")["profiles"]
        minutes = max(1, round(self.live_window / 60))
        sessions = self._get("/mirror/sessions", active_minutes=minutes)["sessions"]
        asked = self._local_clock()
        figures = self._figures(followed, [FLEET, *(("machine", n) for n in names)])
        skew = figures.now - (asked + self._local_clock()) / 2
        feed = [_feed_item(i) for i in self._get("/feed", limit=FEED_SIZE)]
        parsed_nodes = [codec.node_from_map(n) for n in nodes]
        parsed_profiles = [codec.profile_from_map(p) for p in profiles]
        parsed_sessions = [codec.session_from_map(s) for s in sessions]
        with self._lock:
            self._nodes, self._pauses = {}, {}
            self._take_nodes(parsed_nodes)
            self._profiles = {profile_key(r.node, r.name): (r, s) for r, s in parsed_profiles}
            self._sessions = {s.key: s for s in parsed_sessions}
            self._skew = skew
            self._take_figures(figures, replace=True)
            self._feed = deque(feed, maxlen=FEED_SIZE)
            return Update(
                usage=1,
                machines=set(self._nodes),
                profiles=set(self._profiles),
                sessions=before_sessions | set(self._sessions),
                feed=[i for i in feed if _feed_key(i) not in before_feed],
                nodes_changed=True,
            )

    def _fetch(self, pending: Update) -> Update:
        """The rows `pending` names, one request per kind (in chunks: see `_chunks`)."""
        if pending.machines or pending.nodes_changed:
            machines = None if pending.nodes_changed else sorted(pending.machines)
            parsed = [
                codec.node_from_map(n)
                for chunk in _chunks(machines)
                for n in self._get("/mirror/nodes", machine=chunk)["nodes"]
            ]
            with self._lock:
                announced = self._take_nodes(parsed)
            # a hello that names other profiles: their rows too, before the screen asks
            pending.profiles |= announced
        if pending.profiles:
            self._read_profiles(pending.profiles)
        if pending.sessions:
            rows = [
                codec.session_from_map(s)
                for chunk in _chunks(sorted(pending.sessions))
                for s in self._get("/mirror/sessions", key=chunk)["sessions"]
            ]
            with self._lock:
                self._sessions.update((r.key, r) for r in rows)
        if pending.usage or pending.machines:
            with self._lock:
                followed = sorted(self._followed)
            scopes = [FLEET, *(("machine", m) for m in sorted(pending.machines))]
            figures = self._figures(followed, scopes)
            with self._lock:
                self._take_figures(figures, replace=False)
        with self._lock:
            # a line the last snapshot's feed already held is not news (nor shown twice)
            known = {_feed_key(i) for i in self._feed}
            pending.feed = [i for i in sorted(pending.feed, key=_when) if _feed_key(i) not in known]
            self._feed.extend(pending.feed)
        return pending

    def _read_profiles(self, keys: set[str] | None) -> set[str]:
        """Read the profiles `keys` (None: all) again; returns those whose row changed."""
        got = [
            codec.profile_from_map(p)
            for chunk in _chunks(None if keys is None else sorted(keys))
            for p in self._get("/mirror/profiles", key=chunk)["profiles"]
        ]
        changed = set()
        # the Agent SDK credits move with every SDK call: read with every full round
        credits = None if keys is not None else self._read_credits()
        with self._lock:
            for record, standing in got:
                pkey = profile_key(record.node, record.name)
                if self._profiles.get(pkey) != (record, standing):
                    changed.add(pkey)
                self._profiles[pkey] = (record, standing)
            if credits is not None:
                changed |= {
                    k
                    for k in credits.keys() | self._credits.keys()
                    if credits.get(k) != self._credits.get(k)
                }
                self._credits = credits
        return changed

    def _read_credits(self) -> dict[str, dict[str, Any]]:
        rows = self._get("/profiles")
        return {str(r["key"]): r["credit"] for r in rows if r.get("credit")}

    def _figures(
        self, followed: list[tuple[Dimension, Period]], scopes: list[Scope]
    ) -> codec.Figures:
        got = self._get(
            "/mirror/figures",
            want=[f"{d.value}:{p.value}" for d, p in followed],
            scope=[f"{kind}:{key}" for kind, key in scopes],
        )
        return codec.figures_from_map(got, self._minute(), RUN_RATE_HOURS)

    def _take_nodes(self, parsed: list[codec.NodeParts]) -> set[str]:
        """Take nodes as read (under the lock); returns the profile keys of those whose hello
        names other profiles than before."""
        announced: set[str] = set()
        for record, state, hello, paused in parsed:
            before = self._nodes.get(record.node)
            profiles = hello.profiles if hello is not None else ()
            if before is None or (before.hello.profiles if before.hello else ()) != profiles:
                announced.update(profile_key(record.node, p.name) for p in profiles)
            self._nodes[record.node] = NodeView(record, state, hello)
            self._pauses[record.node] = paused
        return announced

    def _take_figures(self, figures: codec.Figures, *, replace: bool) -> None:
        """Apply figures read (under the lock: assignments only, the parsing is done)."""
        self._tz = figures.tz
        self._first_call = figures.first_call
        self._fleet = figures.fleet
        self._totals = figures.totals if replace else {**self._totals, **figures.totals}
        self._rates = figures.rates if replace else {**self._rates, **figures.rates}

    def _rate(self, scope: Scope) -> RunRate:
        """The scope's mirrored run rate (the fleet's and each machine's: never waits); a
        profile's, which only its detail view shows, is read from the hub now."""
        with self._lock:
            rate = self._rates.get(scope)
        if rate is not None or scope[0] != "profile":
            return rate or RunRate(RUN_RATE_HOURS)  # the fleet's and machines' are mirrored
        try:
            figures = self._figures([], [scope])
        except HubUnavailable:
            return RunRate(RUN_RATE_HOURS)
        rate = figures.rates.get(scope) or RunRate(RUN_RATE_HOURS)
        with self._lock:
            self._rates[scope] = rate
        return rate

    # -- other parts of the API (the budgets and alerts tabs) -------------------------------

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """`method` on `path` under /api/v1 with this dashboard's token: the answer's JSON.
        Raises HubUnavailable with the hub's own words (and its status) when it refuses.
        `timeout`: seconds to wait for the answer (a reconciliation asks the providers)."""
        try:
            answer = self._http.request(
                method, API + path, json=body, timeout=httpx.Timeout(timeout or COMMAND_READ_S)
            )
        except httpx.HTTPError as exc:
            raise HubUnavailable(f"no hub answers at {self.url}: {exc}") from exc
        return self._json(answer, path)

    # -- plumbing ----------------------------------------------------------------------------

    def _minute(self) -> int:
        return int(self.clock() // 60)

    def _get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        try:
            answer = self._http.get(API + path, params=query)
        except httpx.HTTPError as exc:
            raise HubUnavailable(f"no hub answers at {self.url}: {exc}") from exc
        if answer.status_code != 200:
            raise HubUnavailable(f"the hub says: {_error(answer)}", answer.status_code)
        return self._json(answer, path)

    def _json(self, answer: httpx.Response, path: str) -> Any:
        if not 200 <= answer.status_code < 300:
            raise HubUnavailable(f"the hub says: {_error(answer)}", answer.status_code)
        try:
            return answer.json()
        except ValueError as exc:
            raise HubUnavailable(f"the hub at {self.url} answered no JSON on {path}") from exc

    def _publish(self, change: Update) -> None:
        self._subscribers.publish(change)


def _anything(u: Update) -> bool:
    return bool(
        u.usage or u.machines or u.profiles or u.sessions or u.feed or u.nodes_changed or u.alerts
    )


def _chunks(keys: list[str] | None) -> Iterator[list[str] | None]:
    """`keys` in requests of at most `CHUNK` keys and `CHUNK_CHARS` characters of them (None:
    one request for all)."""
    if keys is None:
        yield None
        return
    chunk: list[str] = []
    chars = 0
    for key in keys:
        if chunk and (len(chunk) == CHUNK or chars + len(key) > CHUNK_CHARS):
            yield chunk
            chunk, chars = [], 0
        chunk.append(key)
        chars += len(key) + 8  # "&key=" and its escapes
    if chunk:
        yield chunk


def _feed_item(data: dict[str, Any]) -> FeedItem:
    """A feed line as the API gives it (`views.feed_item`)."""
    return FeedItem(float(data["when"]), str(data["kind"]), str(data["machine"]), str(data["text"]))


def _when(item: FeedItem) -> float:
    return item.ts


def _feed_key(item: FeedItem) -> tuple[float, str, str, str]:
    return (item.ts, item.kind, item.machine, item.text)


def _quote(part: str) -> str:
    return quote(part, safe="")


def _error(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {answer.status_code}"

"""A running hub: store, service, event receiver, command endpoint, liveness and advertising.

`fleet-hub serve` runs one headless; the TUI embeds the same one in its process. `Hub.start()`
returns once both endpoints listen (their real addresses in `events_url` / `commands_url`, so a
test can listen on port 0); `stop()` closes everything in order and leaves the store committed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from hub import governance
from hub.alerts.outbox import Outbox
from hub.budget_verdicts import BudgetVerdicts
from hub.budgets.governor import Governor
from hub.commander import Commander
from hub.config import HubConfig, check_plaintext, read_secret
from hub.detectors.journal import FindingJournal
from hub.detectors.runner import DetectorRunner, attach
from hub.detectors.seed import seeding_thread
from hub.findings import EverySink, FindingSink
from hub.receiver import Receiver
from hub.service import FleetService
from hub.session_findings import RELOAD, SessionFindings
from hub.store import Store
from pricing import PriceBook
from pricing.installed import installed_state, prices_dir
from shared.discovery import ZeroconfAdvertiser
from shared.tls import hub_tls_config
from shared.wire import derive_node_key

log = logging.getLogger(__name__)

LIVENESS_EVERY = 1.0  # seconds between checks for nodes going stale


class DataDirError(OSError):
    """The hub's data dir cannot hold its store (missing, read-only, not a directory)."""


class NodeKeys:
    """Every node's key, derived from the fleet secret on first use."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __call__(self, node: str) -> bytes | None:
        with self._lock:
            key = self._keys.get(node)
            if key is None:
                try:
                    key = derive_node_key(self._secret, node)
                except ValueError:
                    return None  # not a valid node name: no key, the frame is refused
                if len(self._keys) < 100_000:
                    self._keys[node] = key
            return key


class Hub:
    def __init__(
        self,
        config: HubConfig,
        *,
        book: PriceBook | None = None,
        command_timeout: float = 6.5,  # the survey time: the longest any command waits
        advertiser_factory: Callable[[HubConfig, str, str], ZeroconfAdvertiser] | None = None,
        finding_sink: FindingSink | None = None,
    ) -> None:
        self.config = config
        self.book = book or PriceBook.default()
        # The installed tables as last read (None: a given book, kept as given); when they
        # change (`fleet-hub prices install`), the hub prices with them and re-prices the store.
        self._prices_state = None if book is not None else installed_state(prices_dir())
        self.price_listeners: list[Callable[[PriceBook], None]] = []
        self.command_timeout = command_timeout
        self.advertiser_factory = advertiser_factory
        check_plaintext(config)  # before anything listens
        self.keys = NodeKeys(read_secret(config.secret_file))
        self.stop_event = threading.Event()
        self.service: FleetService | None = None
        self.governor: Governor | None = None
        # where budget crossings go: the alert outbox in the store unless a test gives one
        self.finding_sink = finding_sink
        self.receiver: Receiver | None = None
        self.commander: Commander | None = None
        self._threads: list[threading.Thread] = []
        self.seeding: threading.Thread | None = None  # the detectors' seed, once started
        self._store: Store | None = None
        self.alerts: Outbox | None = None  # the FindingSink (delivered by serve's courier)
        self.detectors: DetectorRunner | None = None
        self._journal: FindingJournal | None = None
        self.budget_verdicts: BudgetVerdicts | None = None
        self.session_findings: SessionFindings | None = None
        self._advertiser: ZeroconfAdvertiser | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def events_url(self) -> str:
        assert self.receiver is not None
        return self.receiver.url

    @property
    def commands_url(self) -> str:
        assert self.commander is not None
        return self.commander.url

    def start(self) -> FleetService:
        tls = None
        if self.config.tls_cert_key_file is not None:
            tls = hub_tls_config(self.config.tls_cert_key_file, self.config.tls_ca_file)
        try:
            self._store = Store.in_dir(self.config.data_dir)
        except OSError as exc:
            raise DataDirError(
                f"cannot use data_dir {self.config.data_dir}: {exc.strerror or exc} "
                f"(set in {self.config.path})"
            ) from exc
        self.alerts = Outbox(self._store.path, self.config.alerts)
        self.commander = Commander(
            self.config.commands, self.keys, timeout=self.command_timeout, tls=tls
        )
        self.service = FleetService(
            self._store,
            self.book,
            stale_after=self.config.stale_after,
            commander=self.commander,
            retain_days=self.config.retain_days,
            subscriptions=self.config.subscriptions,
        )
        # before the receiver: no batch may pass the budgets unchecked
        self.governor = Governor(
            self._store.path,
            self.service,
            self.config.budgets,
            sink=self.finding_sink if self.finding_sink is not None else self.alerts,
            config_path=self.config.path,
        )
        self.governor.attach(self._store)
        # each ack tells the node where the budgets over its machine, profiles, sessions stand
        self.budget_verdicts = BudgetVerdicts(self.governor, self.service, self._store.path)
        self.service.verdicts = self.budget_verdicts
        # dashboards (embedded or attached through the stream) read the alerts again on change
        self.alerts.on_change = self.service.tell_alerts
        governance.register(self.service, governance.LocalBackend(self.governor, self.alerts))
        self._journal = FindingJournal(self._store.path)
        # the journal keeps what the detectors found; the outbox alerts people to it
        # the agents' explain_spend: the findings on sessions, in memory (and in each ack)
        self.session_findings = SessionFindings()
        self.session_findings.load(self._journal.findings(RELOAD))
        self.service.notes = self.session_findings.for_machine
        self.detectors = attach(
            self.service,
            EverySink(self._journal, self.alerts, self.session_findings),
            self.book,
        )
        # before the receiver: the seed's snapshot ends where the new batches begin
        seeding = seeding_thread(self.detectors, self._store, self._journal, self.book)
        self.receiver = Receiver(
            self.config.events,
            self.keys,
            self.service.handle_batch,
            stop=self.stop_event,
            tls=tls,
            on_bad_key=self.service.note_bad_key,
        )
        self._spawn("receiver", self.receiver.run)
        self.receiver.ready.wait(10)
        if self.receiver.error is not None:
            self.stop()
            raise self.receiver.error
        seeding.start()
        self.seeding = seeding
        self._threads.append(seeding)
        self._spawn("liveness", self._liveness)
        if self.config.advertise:
            self._advertise()
        log.info(
            "hub %s: events %s, commands %s", self.config.name, self.events_url, self.commands_url
        )
        return self.service

    def _spawn(self, name: str, target: Callable[[], Any]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _liveness(self) -> None:
        assert self.service is not None
        while not self.stop_event.wait(LIVENESS_EVERY):
            try:
                self.service.check_nodes()
                self.reload_prices()
                self.service.maintain()
            except Exception:
                log.exception("liveness check or store upkeep failed")

    def reload_prices(self) -> bool:
        """Take up tables installed since the last look; True when they changed."""
        if self._prices_state is None or self.service is None:
            return False
        state = installed_state(prices_dir())
        if state == self._prices_state:
            return False
        self._prices_state = state
        self.book = PriceBook.reload_default()
        self.service.use_prices(self.book)
        for listener in self.price_listeners:
            listener(self.book)
        log.info("price tables in %s changed: re-pricing the stored calls", prices_dir())
        return True

    def _advertise(self) -> None:
        factory = self.advertiser_factory or _default_advertiser
        try:
            self._advertiser = factory(self.config, self.events_url, self.commands_url)
        except ValueError as exc:  # ipc:// or inproc:// addresses cannot be advertised
            log.info("not advertising: %s", exc)
            return
        self._loop = asyncio.new_event_loop()
        self._spawn("advertiser", self._loop.run_forever)
        future = asyncio.run_coroutine_threadsafe(self._advertiser.start(), self._loop)
        try:
            future.result(timeout=10)
        except (OSError, TimeoutError) as exc:
            log.warning("cannot advertise the hub with zeroconf: %s", exc)
            self._advertiser = None

    def stop(self) -> None:
        self.stop_event.set()
        if self._advertiser is not None and self._loop is not None:
            future = asyncio.run_coroutine_threadsafe(self._advertiser.stop(), self._loop)
            try:
                future.result(timeout=5)
            except Exception:  # noqa: BLE001 (best effort on the way out)
                log.warning("zeroconf did not stop cleanly")
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        for thread in self._threads:
            thread.join(timeout=5)
        if self.governor is not None:
            self.governor.close()
        if self.budget_verdicts is not None:
            self.budget_verdicts.close()
        if self.commander is not None:
            self.commander.close()
        if self.service is not None:
            self.service.close()
        if self.alerts is not None:
            self.alerts.close()
        if self._journal is not None:
            self._journal.close()
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> Hub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _default_advertiser(config: HubConfig, events: str, commands: str) -> ZeroconfAdvertiser:
    return ZeroconfAdvertiser(config.name, events, commands)

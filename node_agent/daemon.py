"""`node-agent run`: the daemon that keeps the hub told, and obeys its halt commands.

Threads, each with one concern and its own SQLite connection where it needs one:
- ingest: `LiveReader` reads a log as soon as file events (inotify) say it was written, polls
  hot files every `poll_interval` and rescans every `rescan_interval` (where file events are
  unavailable, that is all there is; with them, both are safety nets run less often:
  `HOT_POLL_WITH_EVENTS`, `RESCAN_FACTOR_WITH_EVENTS`), and commits events with their
  positions; profile timelines turn limit hits and status-file
  switches into profile events, committed the same way;
- sender: `EventSender` drains the outbox to the hub;
- commands: `CommandResponder` answers pause / resume / kill / interrupt / processes;
- the main thread: signals, the systemd watchdog, and the process inventory.

SIGTERM or SIGINT stops every loop; what was read is committed by then (every commit is
atomic), so a restart resumes exactly. Without systemd the notify calls do nothing.

One daemon per state dir (`state_lock`). A damaged outbox found at start is moved aside and
the logs read again (`recovery`); a full disk is waited out, shown in the hello. Any other
failure of a thread stops the daemon with exit status 1, telling systemd why (`STATUS=`,
`ERRNO=`), so that `Restart=on-failure` starts it again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from node_agent import memory, procs, systemd
from node_agent.file_events import FileEvents
from node_agent.identity import identity_watchers
from node_agent.link import CommandResponder, EventSender, LinkConfig
from node_agent.live import LiveReader
from node_agent.outbox import Outbox, OutboxCorrupt, OutboxDiskFull, OutboxError, OutboxFull
from node_agent.outcomes.forge import forge_from_env
from node_agent.outcomes.watch import OutcomeWatch
from node_agent.query_service import AgentRef, NodeQueries, QueryService, VerdictBook
from node_agent.recovery import Backoff, open_checked_outbox
from node_agent.session_tally import SessionTally
from node_agent.sources.registry import all_sources
from node_agent.state_lock import StateDirBusy, StateDirUnusable, state_dir_lock
from node_agent.status_file import StatusFileWatcher
from node_agent.thread_names import name_os_thread
from node_agent.timeline import ProfileTimeline
from pricing import PriceBook
from pricing.installed import installed_state, prices_dir
from shared.codec import pack_batch, unpack_batch
from shared.config import NodeConfig, read_node_key
from shared.events import Event, LimitEvent, ProfileEvent, UsageEvent
from shared.hello import (
    NodeHello,
    ProcessInfo,
    ProfileInfo,
    ReaderStatus,
    hello_to_map,
    process_to_map,
)
from shared.hub_address import Discovery, HubAddress
from shared.tls import node_tls_config

log = logging.getLogger(__name__)

VERSION: Final = "0.1.0"
# File events announce new files: the rescan is then a safety net (missed events, odd mounts).
RESCAN_FACTOR_WITH_EVENTS: Final = 12
# With file events, hot files are polled this often at most: a safety net, not the way in.
HOT_POLL_WITH_EVENTS: Final = 5.0
PROFILE_POLL: Final = 0.5  # seconds between looks at the status file and login files
SETTLE_CHECK: Final = 1.0  # seconds between looks whether the start-up is over (`memory`)
INVENTORY_EVERY: Final = 5.0  # seconds between process scans (a scan is ~5 ms of CPU)
# A call this recent from a session no listed process holds: an agent started since the last
# scan, scanned for before the next hello (at most every INVENTORY_AT_MOST s), so the batch
# that may cross a budget names the process to stop (not up to INVENTORY_EVERY s later).
NEW_SESSION_CALL_S: Final = 120.0
INVENTORY_AT_MOST: Final = 1.0
PROFILE_EVENTS_META: Final = "profile_events"
KEEP_PROFILE_EVENTS: Final = 500


class Daemon:
    def __init__(
        self,
        config: NodeConfig,
        *,
        address: HubAddress | None = None,
        discovery: Discovery | None = None,
        settle_memory: bool = False,
    ) -> None:
        self.config = config
        # A daemon process of its own (not a test's): hand start-up memory back (`memory`).
        self.settle_memory = settle_memory
        self.read_once = threading.Event()  # every log read once since the start
        # Setting it also ends the threads' sleeps: they wait for their next duty, not polling it.
        self.stop = WakingEvent(self._wake_threads)
        self.wake = threading.Event()
        self.state_dir = Path(config.state_dir)  # made by run(), under its lock
        self.outbox_path = self.state_dir / "outbox.db"
        self.address = address or _configured_address(config)
        self.discovery = discovery  # default: zeroconf on every interface
        self.inventory = procs.ProcessInventory(config)
        self._default_homes = frozenset(
            (source.agent, home.resolve())
            for source in all_sources()
            for home in source.default_homes()
        )
        self.processes: list[procs.AgentProcess] = []
        self._scanned_at = -math.inf  # monotonic time of the last process scan
        self._unlisted_caller = False  # a recent call from a session no listed process holds
        self.timeline = ProfileTimeline(config)
        self.status_watcher = (
            StatusFileWatcher(config.status_file, config.node, config.profiles)
            if config.status_file
            else None
        )
        self.identities = identity_watchers(config.profiles)
        # what each session produced (git, the forge), read on a thread of its own
        self.outcomes = OutcomeWatch(
            self.state_dir / "outcome_spans.json",
            forge=forge_from_env(),
            identities=config.commit_identities,
        )
        self.pending = 0  # events in the outbox, for the hello
        self._held: list[ProfileEvent] = []  # profile events not yet committed (outbox full)
        self.booted = time.time()
        self._lock = threading.Lock()  # guards processes and the timeline between threads
        self.reader: LiveReader | None = None
        self.sender: EventSender | None = None
        self.responder: CommandResponder | None = None
        self._events: FileEvents | None = None  # the reader's, interrupted at a stop
        self.failure: BaseException | None = None  # what stopped a thread
        self.failed_thread = ""
        # What the agents' own gates ask about (hooks, status line, MCP), kept in memory.
        self.tally = SessionTally(PriceBook.default(), {p.name: p.billing for p in config.profiles})
        # the installed price tables as last read: taken up when `fleet-hub prices install` adds one
        self._prices_state = installed_state(prices_dir())
        self.verdict_book = VerdictBook()

    # -- what the hub hears ------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        with self._lock:
            if self._unlisted_caller and time.monotonic() - self._scanned_at >= INVENTORY_AT_MOST:
                self.processes = self._scan()
            processes = tuple(_process_info(p) for p in self.processes)
        stats = self.reader.stats if self.reader is not None else None
        sender = self.sender
        stalled = (stats.stalled if stats else None) or (sender.stalled if sender else None)
        status_file = self._status_file_problem()
        reader = ReaderStatus(stalled=stalled, status_file=status_file)
        if stats is not None:
            reader = ReaderStatus(
                files=stats.files,
                events=stats.events,
                problems=stats.problems,
                pending=self.pending,
                blocked=stats.blocked,
                last_problem=stats.last_problem,
                stalled=stalled,
                status_file=status_file,
            )
        hello = NodeHello(
            node=self.config.node,
            version=VERSION,
            boot_time=self.booted,
            os=platform.platform(),
            cpu_count=os.cpu_count() or 1,
            profiles=tuple(
                ProfileInfo(p.name, p.agent, p.billing, p.account, p.plan)
                for p in self.config.profiles
            ),
            processes=processes,
            reader=reader,
        )
        return hello_to_map(hello)

    def _status_file_problem(self) -> str | None:
        """Why the profile heartbeat is not (wholly) used: the hub shows it, not only our log."""
        watcher = self.status_watcher
        if watcher is None:
            return None
        if watcher.error is not None:
            return watcher.error
        return "; ".join(watcher.problems) or None

    # -- commands ----------------------------------------------------------------------------

    def execute(self, body: Mapping[str, Any]) -> dict[str, Any]:
        command = body.get("cmd")
        if command == "processes":
            with self._lock:
                self.processes = self._scan()
                listed = [process_to_map(_process_info(p)) for p in self.processes]
                return {"ok": True, "outcome": "listed", "processes": listed}
        pid, ctime = body.get("pid"), body.get("ctime")
        if not isinstance(pid, int) or not isinstance(ctime, (int, float)):
            return {"ok": False, "outcome": "refused", "detail": "command names no pid/ctime"}
        actions = {
            "pause": procs.pause,
            "resume": procs.resume,
            "kill": procs.kill,
            "interrupt": _interrupt,
        }
        action = actions.get(str(command))
        if action is None:
            return {"ok": False, "outcome": "refused", "detail": f"unknown command {command!r}"}
        if self.config.only_profile_processes and not self._owns(pid):
            detail = f"pid {pid} is not an agent of this node's profiles"
            return {"ok": False, "outcome": "refused", "detail": detail}
        result = action(pid, float(ctime))
        log.info("command %s pid %s: %s %s", command, pid, result.outcome, result.detail)
        self._refresh_processes()
        return {
            "ok": result.ok,
            "outcome": result.outcome,
            "detail": result.detail,
            "pids": list(result.pids),
        }

    def _agent_refs(self) -> list[AgentRef]:
        with self._lock:
            return [
                AgentRef(p.pid, p.session_id, p.profile, p.agent.value, p.cwd)
                for p in self.processes
            ]

    def _take_up_prices(self) -> None:
        """Price new calls with the installed tables when they changed (a stat of the folder)."""
        state = installed_state(prices_dir())
        if state == self._prices_state:
            return
        self._prices_state = state
        self.tally.use_prices(PriceBook.reload_default())
        log.info("price tables in %s changed: new calls are priced with them", prices_dir())

    def _refresh_processes(self) -> None:
        with self._lock:
            self.processes = self._scan()

    def _scan(self) -> list[procs.AgentProcess]:
        """The agents to report; with `only_profile_processes`, only our own (nodes sharing a
        host, or another user's session, would otherwise be listed and haltable)."""
        self._scanned_at = time.monotonic()
        self._unlisted_caller = False
        found = self.inventory.scan()
        if self.config.only_profile_processes:
            return [p for p in found if self._is_ours(p)]
        return found

    def _is_ours(self, process: procs.AgentProcess) -> bool:
        """Of one of our profiles; a node without profiles reads the agents' default homes,
        so their agents are its own."""
        if process.profile is not None:
            return True
        if self.config.profiles or process.home is None:
            return False
        return (process.agent, Path(process.home).resolve()) in self._default_homes

    def _owns(self, pid: int) -> bool:
        with self._lock:
            self.processes = self._scan()
            return any(p.pid == pid for p in self.processes)

    # -- threads -----------------------------------------------------------------------------

    def _ingest(self) -> None:
        with Outbox(self.outbox_path) as outbox:
            self._restore_timeline(outbox)
            self.reader = reader = LiveReader(
                self.config, outbox, profile_at=self._profile_at, on_events=self._saw
            )
            reader.start()
            self._commit_profile_events(outbox)
            self.pending = outbox.pending()
            self.read_once.set()
            self.wake.set()
            self._events = events = FileEvents.open()
            try:
                if not self.stop.is_set():  # (a stop before `_events` was set interrupts none)
                    self._read_on(reader, outbox, events)
            finally:
                if events is not None:
                    events.close()

    def _read_on(self, reader: LiveReader, outbox: Outbox, events: FileEvents | None) -> None:
        """Until stopped: read what file events name at once, poll the hot files every
        `poll_interval` and look for new files every `rescan_interval`. With file events, new
        files are announced too, so the rescan is only a safety net, run less often."""
        poll, rescan = self.config.poll_interval, self.config.rescan_interval
        if events is not None:
            poll = max(poll, HOT_POLL_WITH_EVENTS)
            rescan *= RESCAN_FACTOR_WITH_EVENTS
            # Lines written since the first read gave no event: read them once watched.
            if reader.read_in(events.watch(reader.watched_dirs())):
                self.wake.set()
                self.pending = outbox.pending()
        now = time.monotonic()
        next_scan, next_poll = now + rescan, now + poll
        # The status file and login files are looked at every PROFILE_POLL s where there are
        # any; otherwise the reader sleeps until an event or its next poll (a stop interrupts).
        profile_poll = PROFILE_POLL if self.status_watcher or self.identities else math.inf
        while not self.stop.is_set():
            wait = min(max(0.0, next_poll - time.monotonic()), profile_poll)
            changes = events.wait(wait) if events else None
            if changes is None and self.stop.wait(max(0.0, next_poll - time.monotonic())):
                return
            count = 0
            now = time.monotonic()
            if now >= next_scan or (changes is not None and changes.rescan):
                count = reader.rescan()
                if events is not None:
                    count += reader.read_in(events.watch(reader.watched_dirs()))
                next_scan, next_poll = now + rescan, now + poll
            else:
                if changes is not None and changes.written:
                    count = reader.read_paths(changes.written)
                if now >= next_poll:
                    count += reader.poll()
                    next_poll = now + poll
            if self._commit_profile_events(outbox) or count:
                self.wake.set()
            self.pending = outbox.pending()

    def _profile_at(self, agent: Any, home: Path, ts: float) -> str | None:
        with self._lock:
            return self.timeline.profile_at(agent, home, ts)

    def _saw(self, events: Sequence[Event]) -> None:
        self.tally.add(events)
        self.outcomes.saw(events)
        recent = time.time() - NEW_SESSION_CALL_S
        with self._lock:
            for event in events:
                if isinstance(event, LimitEvent):
                    self.timeline.add_limit(event)
            listed = {p.session_id for p in self.processes}
            self._unlisted_caller |= any(
                isinstance(e, UsageEvent) and e.ts >= recent and e.session_id not in listed
                for e in events
            )

    def _commit_profile_events(self, outbox: Outbox) -> int:
        """Status file and logins into the timelines; their new profile events into the outbox."""
        polled = self.status_watcher.poll() if self.status_watcher is not None else None
        switches = [w.poll() for w in self.identities]
        with self._lock:
            for event in polled or []:
                self.timeline.add_profile_event(event)
            for switch in switches:
                if switch is not None:
                    self.timeline.add_identity(switch)
            drained = self.timeline.drain()
            self._held.extend(drained)
        self.tally.add(drained)  # the profiles' standing (status file, limits) for my_quota
        if not self._held:
            return 0
        sent = self._sent_profile_events(outbox) + self._held
        try:
            outbox.commit(self._held, {})
            # Remembered, so that a restarted daemon neither repeats nor forgets a profile's
            # state.
            outbox.set_meta(PROFILE_EVENTS_META, pack_batch(list(sent[-KEEP_PROFILE_EVENTS:])))
        except (OutboxFull, OutboxDiskFull):
            # Kept in `_held`: committed once there is room (a repeat of what did get committed
            # is dropped by the outbox: same id, same revision).
            return 0
        count, self._held = len(self._held), []
        return count

    def _restore_timeline(self, outbox: Outbox) -> None:
        sent = self._sent_profile_events(outbox)
        with self._lock:
            self.timeline.restore(sent)
        self.tally.add(sent)

    @staticmethod
    def _sent_profile_events(outbox: Outbox) -> list[ProfileEvent]:
        data = outbox.get_meta(PROFILE_EVENTS_META)
        events = unpack_batch(data) if data else []
        return [e for e in events if isinstance(e, ProfileEvent)]

    def _status(self) -> str:
        """One line for systemd: watching, or what keeps the node from the hub (a wrong key's
        hint among them)."""
        sender = self.sender
        if sender is None or sender.last_error is None:
            return "watching"
        return f"watching; hub at {sender.address}: {sender.last_error}"

    def run(self) -> int:
        """Until stopped: 0 after a stop, 1 after a failure. Raises StateDirBusy when another
        daemon holds the state dir."""
        if self.settle_memory:
            memory.limit_arenas()  # before any thread of ours or nng's allocates
        with state_dir_lock(self.state_dir):
            if not self._open_outbox():
                return 0  # stopped while waiting for room on the disk
            return self._serve()

    def _open_outbox(self) -> bool:
        """Check the outbox (a damaged one is replaced); wait while the disk is full."""
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                open_checked_outbox(self.outbox_path).close()
                return True
            except OutboxDiskFull as exc:
                wait = backoff.failed(str(exc))
                log.warning("%s; trying again in %.0f s", exc, wait)
                self.stop.wait(wait)
        return False

    def _serve(self) -> int:
        key = read_node_key(self.config.key_file)
        address = self.address or _discover(self.discovery or _zeroconf(), self.stop)
        if address is None:
            return 0  # stopped while looking for a hub
        tls = None
        if self.config.ca_file is not None:
            tls = node_tls_config(
                self.config.ca_file, self.config.server_name or "", self.config.cert_key_file
            )
        link = LinkConfig(self.config.node, key, tls)
        self.outcomes.load()  # the state dir is ours and usable by now
        self.sender = EventSender(
            link,
            address.events,
            self.outbox_path,
            self.hello,
            wake=self.wake,
            stop=self.stop,
            on_verdicts=self.verdict_book.update,
            on_notes=self.verdict_book.take_notes,
            outcomes=self.outcomes,
        )
        queries = [self._start_queries(None)]
        if self.config.hook_port is not None:
            queries.append(self._start_queries(self.config.hook_port))
        self.responder = CommandResponder(link, address.commands, self.execute, stop=self.stop)
        self._refresh_processes()
        self._report_paused()
        threads = [
            threading.Thread(target=self._guard(self._ingest), name="ingest", daemon=True),
            threading.Thread(target=self._guard(self.sender.run), name="sender", daemon=True),
            threading.Thread(target=self._guard(self.responder.run), name="commands", daemon=True),
            threading.Thread(
                target=self._guard(lambda: self.outcomes.run(self.stop)),
                name="outcomes",
                daemon=True,
            ),
        ]
        for thread in threads:
            thread.start()
        log.info(
            "node %s watching %d profiles, hub %s",
            self.config.node,
            len(self.config.profiles),
            address.events,
        )
        shown = "watching"
        systemd.sd_notify(f"READY=1\nSTATUS={shown}")
        watchdog = systemd.watchdog_interval()
        # One wake-up for every duty of this thread: the inventory's cadence, or the watchdog's
        # if that is shorter. A thread that fails sets `stop` itself (`_guard`), which ends
        # the wait at once.
        tick = min(INVENTORY_EVERY, watchdog / 2) if watchdog else INVENTORY_EVERY
        next_inventory = time.monotonic() + INVENTORY_EVERY  # scanned just above
        died = False
        settled = not self.settle_memory
        while not self.stop.wait(
            # Each second until settled: its one-off collection belongs to the start, done
            # as soon as the backlog is sent, not seconds into the idle time after it.
            max(0.0, min(tick if settled else SETTLE_CHECK, next_inventory - time.monotonic()))
        ):
            if watchdog:
                systemd.sd_notify("WATCHDOG=1")
            if (status := self._status()) != shown:  # `systemctl status` shows the last one
                shown = status
                systemd.sd_notify(f"STATUS={status}")
            if time.monotonic() >= next_inventory:
                self._refresh_processes()
                self._take_up_prices()
                next_inventory = time.monotonic() + INVENTORY_EVERY
            if not settled and self.read_once.is_set() and self.pending == 0:
                memory.settle()  # the logs read and their backlog sent: the start is over
                settled = True
            if not all(t.is_alive() for t in threads):
                died = not self.stop.is_set()  # a thread may end by itself only after a stop
                self.stop.set()
        systemd.sd_notify("STOPPING=1")
        for service in queries:
            if service is not None:
                service.close()
        for thread in threads:
            thread.join(timeout=10)
        if self.failure is not None or died:
            return self._failed(self.failure)
        return 0

    def _wake_threads(self) -> None:
        """At a stop: end the threads' waits (each sleeps until its next duty)."""
        self.wake.set()  # the sender's
        self.outcomes.wake()  # its wait for news lasts up to 28 s
        if self.responder is not None:
            self.responder.close()
        events = self._events
        if events is not None:
            events.interrupt()

    def _start_queries(self, port: int | None) -> QueryService | None:
        """The agents' query socket (or `http` hook port); without it the node still meters
        (the hooks then say that the node does not answer and let the calls through), so a
        failure is logged."""
        answers = NodeQueries(self.config.node, self.tally, self.verdict_book, self._agent_refs)
        where = f"127.0.0.1:{port}" if port is not None else str(self.state_dir)
        try:
            service = QueryService(self.state_dir, answers, port)
        except OSError as exc:  # a port in use; a state dir path too long for a unix socket
            log.warning("no query service for the agents' hooks at %s: %s", where, exc)
            return None
        service.start()
        return service

    def _report_paused(self) -> None:
        """Agents found stopped at start stay stopped until someone resumes them (a node killed
        while one was paused): say so here; the hello carries them to the hub, which says it
        in its feed and offers resume."""
        with self._lock:
            paused = [p for p in self.processes if p.state == "paused"]
        if paused:
            pids = ", ".join(f"{p.agent} pid {p.pid}" for p in paused)
            log.warning(
                "found %d agents paused at start (%s): resume them from the hub", len(paused), pids
            )

    def _failed(self, failure: BaseException | None) -> int:
        """Tell systemd (and the log) why the node stops; the exit status for the service."""
        reason = "a daemon thread died"
        if failure is not None:
            reason = f"the {self.failed_thread} thread failed: {failure}"
        code = _errno_of(failure)
        log.error("%s; stopping with exit status 1 so that the service restarts the node", reason)
        systemd.sd_notify(f"STATUS=failed: {reason}\nERRNO={code}")
        return 1

    def _guard(self, target: Any) -> Any:
        def run() -> None:
            name_os_thread(threading.current_thread().name)
            try:
                target()
            except Exception as exc:
                name = threading.current_thread().name
                if isinstance(exc, OutboxError):  # said in one line; a traceback adds nothing
                    log.error("thread %s failed: %s", name, exc)
                else:
                    log.exception("thread %s failed", name)
                self.failure = exc
                self.failed_thread = name
                self.stop.set()

        return run

    def install_signals(self) -> None:
        """SIGTERM and SIGINT stop the node. The handler only writes the signal to a pipe: it
        runs in the main thread between any two bytecodes, possibly while that thread holds the
        stop flag's own lock (inside `Event.wait`), so taking a lock there could hang the
        daemon for good. A thread of its own reads the pipe and sets the flag."""
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)

        def relay() -> None:
            while received := os.read(read_end, 64):
                for signum in received:
                    log.info("signal %d: stopping", signum)
                self.stop.set()

        threading.Thread(target=relay, name="signals", daemon=True).start()

        def stop(signum: int, _frame: object) -> None:
            with contextlib.suppress(OSError):  # a full pipe already holds a stop
                os.write(write_end, bytes([signum]))

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)


class WakingEvent(threading.Event):
    """A stop flag whose `set()` also calls `on_set` (from whichever thread set it, or the
    signal handler): the threads waiting on something else than the flag are woken."""

    def __init__(self, on_set: Callable[[], None]) -> None:
        super().__init__()
        self._on_set = on_set

    def set(self) -> None:
        super().set()
        self._on_set()


def _errno_of(failure: BaseException | None) -> int:
    """The errno-style code systemd records for the failure (`ERRNO=`)."""
    if isinstance(failure, OSError) and failure.errno:
        return failure.errno
    if isinstance(failure, OutboxDiskFull):
        return errno.ENOSPC
    if isinstance(failure, OutboxCorrupt):
        return errno.EUCLEAN  # "structure needs cleaning": moved aside at the next start
    return errno.EIO


def _configured_address(config: NodeConfig) -> HubAddress | None:
    if config.hub_events and config.hub_commands:
        return HubAddress(config.hub_events, config.hub_commands)
    return None


def _zeroconf() -> Discovery:
    """mDNS discovery, imported only by a node that must look for its hub (zeroconf and
    asyncio are ~9 MB of an idle node that was given the address)."""
    from shared.discovery import ZeroconfDiscovery

    return ZeroconfDiscovery()


def _discover(discovery: Discovery, stop: threading.Event) -> HubAddress | None:
    """Browse for a hub until one answers (or the daemon is stopped)."""
    import asyncio  # (see `_zeroconf`)

    while not stop.is_set():
        try:
            found = asyncio.run(discovery.find(timeout=5.0))
        except OSError as exc:
            log.warning("hub discovery failed: %s", exc)
            found = None
        if found is not None:
            log.info("found a hub at %s", found.events)
            return found
        log.info("no hub found yet; still looking")
        stop.wait(5.0)
    return None


def _interrupt(pid: int, ctime: float) -> procs.CommandResult:
    """Interrupt a Codex turn; its app-server client (websockets, ~4 MB) is imported at the
    first interrupt, not by every idle node."""
    from node_agent.procs.interrupt import interrupt

    return interrupt(pid, ctime)


def _process_info(process: procs.AgentProcess) -> ProcessInfo:
    return ProcessInfo(
        pid=process.pid,
        create_time=process.create_time,
        agent=process.agent,
        state=process.state,
        profile=process.profile,
        session_id=process.session_id,
        cwd=process.cwd,
        cpu_percent=process.cpu_percent,
        rss=process.rss,
        children=process.children,
    )


def run(config: NodeConfig) -> int:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {config.node} %(levelname)s %(message)s"
    )
    daemon = Daemon(config, settle_memory=True)
    daemon.install_signals()
    try:
        return daemon.run()
    except (StateDirBusy, StateDirUnusable, OutboxError) as exc:  # e.g. a newer outbox schema
        print(f"node-agent run: {exc}", file=sys.stderr)
        return 1

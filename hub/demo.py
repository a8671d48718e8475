"""`fleet-hub demo`: a whole simulated fleet on this machine, so a newcomer sees everything at once.

An embedded hub (this process, loopback ports), one real `node-agent run` process per machine,
and fake agent processes (`node_agent.simulate.fake_agent`) that look like Claude Code and Codex
to the process inventory and write real-format logs at a realistic pace. Nothing is mocked: the
figures come the whole way (logs → node → wire → hub store → ledger), and pause / resume / kill
from the hub reach the fake agents' real process trees.

The cast, for the default three machines (accounts are ops-X@example.com for subscriptions,
platform@example.com for the API keys):

    spark01  max-a       Claude Max 20x   Opus    hits its 5-hour limit after 20-40 s
             max-b       Claude Max 20x   Opus    idle until the scheduler switches to it
             codex-plus  ChatGPT Plus     gpt-5-codex
             claude-api  Claude API key   Sonnet  metered
    spark02  max-c       Claude Max 5x    Sonnet
             claude-api  Claude API key   Sonnet  THE RUNAWAY: a loop writing a large prompt to
                                                  the cache every second and reading none back
             codex-pro   ChatGPT Pro      gpt-5-codex
    spark03  pro-d       Claude Pro       Sonnet
             codex-plus  ChatGPT Plus     gpt-5
             codex-api   OpenAI API key   gpt-5-codex  metered

More machines repeat the spark02 / spark03 shapes with new accounts; with one machine the
runaway runs on spark01. Each agent calls every 2-6 s (jittered per agent; `pace` scales every
interval: 0.3 runs the demo about three times faster) and has one or two tool subprocesses
(`bash -c 'sleep 1000 & wait'`), in its own project under `workdir/projects`.

The rate-limit story: max-a's agent logs Claude Code's real limit record. A small scheduler in
this module (the rotator thread) sees the hit in the agent's truth journal, stops that agent,
writes spark01's profile heartbeat (`status_file`: a switch max-a → max-b, reason rate_limited,
max-a limited until the reset) and starts a new agent on max-b. The hub shows max-a
rate-limited and switched away, max-b active, and a limit event.

Every node reports only its own profiles' agents (`only_profile_processes`): all the nodes run
on one host and would otherwise each see every fake agent. Every file (hub config, secret and
database, node configs and keys, agent homes, projects, the children's logs and the agents'
truth journals) lives under `workdir`; a re-run in the same workdir keeps the hub's secret and
history. `stop()` ends every process the demo started, whole trees included, and may be called
any number of times, from an atexit hook or a signal handler; `service` stays set afterwards,
but its store is closed.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import random
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Final

import psutil
import tomlkit

from hub.config import init_hub, load_hub_config, read_secret
from hub.ledger import Dimension, Period
from hub.serve import Hub
from hub.service import FleetService
from shared.config import Billing
from shared.events import Agent
from shared.wire import derive_node_key

log = logging.getLogger(__name__)

ROOT: Final = Path(__file__).resolve().parent.parent  # the checkout (or site-packages)
FAKE_AGENT: Final = "node_agent.simulate.fake_agent"
HOME_VARIABLES: Final = {Agent.CLAUDE_CODE: "CLAUDE_CONFIG_DIR", Agent.CODEX: "CODEX_HOME"}
# Variables a child must not inherit: another agent home, another config, a systemd service's.
UNINHERITED: Final = frozenset(
    {
        "CLAUDE_CONFIG_DIR",
        "CODEX_HOME",
        "GEMINI_CLI_HOME",
        "OPENCODE_DATA_DIR",
        "FLEETMETER_CONFIG",
        "FLEETMETER_HUB_CONFIG",
        "STATE_DIRECTORY",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    }
)

OPUS: Final = "claude-opus-4-6"
SONNET: Final = "claude-sonnet-4-5-20250929"
GPT5: Final = "gpt-5"
GPT5_CODEX: Final = "gpt-5-codex"
PROJECTS: Final = (
    "payments-api",
    "web-frontend",
    "infra-terraform",
    "ml-pipeline",
    "mobile-app",
    "docs-site",
    "billing-service",
    "search-indexer",
    "auth-gateway",
    "data-etl",
    "k8s-operators",
    "design-system",
)

# Seconds; every one of them is scaled by `pace`.
CALL_EVERY: Final = (2.0, 6.0)  # a normal agent's time between calls, drawn per agent
RUNAWAY_EVERY: Final = 1.0
LIMIT_AFTER: Final = (20.0, 40.0)  # when max-a's limit hits
# Node heartbeats come every 5 s: stale after two missed ones, so a stopped node shows soon.
STALE_AFTER: Final = 11.0
NODE_POLL: Final = 0.5
NODE_RESCAN: Final = 2.0
READY_TIMEOUT: Final = 30.0  # for a fake agent's ready line
NODE_GRACE: Final = 8.0  # SIGTERM → SIGKILL for node agents
AGENT_GRACE: Final = 3.0  # SIGTERM → SIGKILL for fake agent trees
ROTATOR_EVERY: Final = 0.2
HUB_ATTEMPTS: Final = 3  # free loopback ports are picked, then bound: another process may win


# ---- the cast ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CastProfile:
    name: str
    agent: Agent
    billing: Billing
    plan: str | None
    account: str
    model: str
    mode: str = "normal"  # the fake agent's --mode: normal | runaway | ratelimit
    starts: bool = True  # an agent runs on it from the start (max-b waits for the switch)


@dataclass(frozen=True, slots=True)
class CastMachine:
    name: str
    profiles: tuple[CastProfile, ...]

    def profile(self, name: str) -> CastProfile:
        return next(p for p in self.profiles if p.name == name)


STORY_MACHINE: Final = "spark01"
LIMITED, SPARE = "max-a", "max-b"
API_ACCOUNT: Final = "platform@example.com"


def _sub(name: str, agent: Agent, plan: str, letter: str, model: str) -> CastProfile:
    return CastProfile(name, agent, Billing.SUBSCRIPTION, plan, f"ops-{letter}@example.com", model)


def _api(name: str, agent: Agent, model: str) -> CastProfile:
    return CastProfile(name, agent, Billing.API, None, API_ACCOUNT, model)


def build_cast(machines: int) -> tuple[CastMachine, ...]:
    """The machines and their profiles (see the module docstring), runaway included."""
    story = (
        replace(_sub(LIMITED, Agent.CLAUDE_CODE, "max_20x", "a", OPUS), mode="ratelimit"),
        replace(_sub(SPARE, Agent.CLAUDE_CODE, "max_20x", "b", OPUS), starts=False),
        _sub("codex-plus", Agent.CODEX, "plus", "a", GPT5_CODEX),
        _api("claude-api", Agent.CLAUDE_CODE, SONNET),
    )
    cast = [CastMachine(STORY_MACHINE, story)]
    for index in range(1, machines):
        letter = string.ascii_lowercase[(index + 1) % 26]
        if index % 2:
            profiles = (
                _sub(f"max-{letter}", Agent.CLAUDE_CODE, "max_5x", letter, SONNET),
                _api("claude-api", Agent.CLAUDE_CODE, SONNET),
                _sub("codex-pro", Agent.CODEX, "pro", letter, GPT5_CODEX),
            )
        else:
            profiles = (
                _sub(f"pro-{letter}", Agent.CLAUDE_CODE, "pro", letter, SONNET),
                _sub("codex-plus", Agent.CODEX, "plus", letter, GPT5),
                _api("codex-api", Agent.CODEX, GPT5_CODEX),
            )
        cast.append(CastMachine(f"spark{index + 1:02d}", profiles))
    # One runaway, on an API key (metered: it burns real money): spark02's, or spark01's alone.
    host = cast[min(1, machines - 1)]
    runaway = [replace(p, mode="runaway") if p.name == "claude-api" else p for p in host.profiles]
    cast[cast.index(host)] = CastMachine(host.name, tuple(runaway))
    return tuple(cast)


# ---- the running processes ---------------------------------------------------------------------


@dataclass(slots=True)
class DemoAgent:
    """One fake agent process the demo started."""

    machine: str
    profile: str
    agent: Agent
    mode: str
    popen: subprocess.Popen[bytes]
    log: Path  # its stdout and stderr (the ready line)
    truth: Path  # its truth journal: one line per call and per rate-limit hit
    session_id: str | None = None  # from the ready line
    _seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def read_ready(self) -> bool:
        """True once the agent printed its ready line (its session file and tools exist)."""
        if self.session_id is not None:
            return True
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith('{"ready"'):
                    self.session_id = str(json.loads(line)["session_id"])
                    self.remember_tree()
                    return True
        return False

    def remember_tree(self) -> None:
        """Note the agent and its descendants: tools orphaned later are still ended by stop()."""
        if self.popen.poll() is not None:
            return  # reaped: its pid may belong to another process by now
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            for proc in (root, *root.children(recursive=True)):
                self._seen.setdefault(proc.pid, proc)

    def processes(self) -> list[psutil.Process]:
        self.remember_tree()
        return list(self._seen.values())


class DemoFleet:
    """An embedded hub, node-agent processes spark01..sparkNN and fake agents; see the module
    docstring. `start()` returns the hub's service; `stop()` ends everything it started."""

    def __init__(
        self, workdir: Path, *, machines: int = 3, pace: float = 1.0, seed: int = 0
    ) -> None:
        if not 1 <= machines <= 99:
            raise ValueError(f"machines must be between 1 and 99, not {machines}")
        if not pace > 0:
            raise ValueError(f"pace must be a positive factor, not {pace}")
        self.workdir = Path(workdir).absolute()
        self.cast = build_cast(machines)
        self.pace = pace
        self.rng = random.Random(seed)
        self.hub: Hub | None = None
        self.service: FleetService | None = None
        self.switched = threading.Event()  # set once the rotator moved max-a's work to max-b
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self._agents: list[DemoAgent] = []
        self._projects = iter(_project_names())
        self._lock = threading.RLock()  # reentrant: stop() may run in a signal handler
        self._halt = threading.Event()  # stop() was called: no more launching
        self._rotator: threading.Thread | None = None
        self._hub_running = False

    @property
    def agents(self) -> list[DemoAgent]:
        """Every fake agent started so far (the rate-limited one stays listed once stopped)."""
        with self._lock:
            return list(self._agents)

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> FleetService:
        with self._lock:
            if self._halt.is_set():
                raise RuntimeError("this demo fleet was stopped; make a new one")
            if self.service is not None:
                return self.service
            atexit.register(self.stop)
            try:
                return self._start()
            except BaseException:
                self.stop()
                raise

    def _start(self) -> FleetService:
        env = self._child_env()
        service = self._start_hub()
        for machine in self.cast:
            self._check_running()
            config = self._write_node(machine)
            self.nodes[machine.name] = self._spawn(
                [sys.executable, "-m", "node_agent.cli", "run", "--config", str(config)],
                config.parent / "node.log",
                env,
            )
        launched = [
            self._launch(machine.name, profile, env)
            for machine in self.cast
            for profile in machine.profiles
            if profile.starts
        ]
        self._await_ready(launched)
        self._rotator = threading.Thread(target=self._rotate, name="demo-rotator", daemon=True)
        self._rotator.start()
        return service

    def _check_running(self) -> None:
        if self._halt.is_set():
            raise RuntimeError("the demo fleet is stopping: nothing more is started")

    def _child_env(self) -> dict[str, str]:
        """Children keep away from the real home: config, state and data dirs under workdir."""
        env = {k: v for k, v in os.environ.items() if k not in UNINHERITED}
        for name in ("config", "state", "data", "cache"):
            env[f"XDG_{name.upper()}_HOME"] = str(self.workdir / f"xdg-{name}")
        # `python -m node_agent...` must work from a checkout as well as installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env

    def _start_hub(self) -> FleetService:
        config_path = self.workdir / "hub" / "hub.toml"
        for attempt in range(HUB_ATTEMPTS):
            init_hub(
                config_path,
                force=True,  # a re-run in the same workdir keeps the secret and the database
                overrides={
                    "name": "fleetmeter-demo",
                    "events": f"tcp://127.0.0.1:{_free_port()}",
                    "commands": f"tcp://127.0.0.1:{_free_port()}",
                    "data_dir": str(self.workdir / "hub" / "data"),
                    "advertise": False,
                    "stale_after": STALE_AFTER,
                },
            )
            self.hub = Hub(load_hub_config(config_path), command_timeout=3.0)
            self._hub_running = True
            try:
                self.service = self.hub.start()
                return self.service
            except Exception:
                self._stop_hub()
                if attempt == HUB_ATTEMPTS - 1:
                    raise
                log.info("demo hub could not listen; trying other ports", exc_info=True)
        raise AssertionError("unreachable")

    def _write_node(self, machine: CastMachine) -> Path:
        """node.toml, its key (mode 600), the profile homes; returns the config path."""
        assert self.hub is not None
        base = self.workdir / "machines" / machine.name
        base.mkdir(parents=True, exist_ok=True)
        key_file = base / "node.key"
        secret = read_secret(self.hub.config.secret_file)
        _write_private(key_file, derive_node_key(secret, machine.name).hex() + "\n")
        profiles = []
        for p in machine.profiles:
            home = self._home(machine.name, p.name)
            home.mkdir(parents=True, exist_ok=True)
            entry: dict[str, Any] = {"name": p.name, "agent": p.agent.value, "home": str(home)}
            entry |= {"billing": p.billing.value, "account": p.account}
            if p.plan:
                entry["plan"] = p.plan
            profiles.append(entry)
        status_file = base / "profiles.json"
        if machine.name == STORY_MACHINE:
            _write_status(status_file, _status_before())
        document = {
            "node": machine.name,
            "state_dir": str(base / "state"),
            "status_file": str(status_file),
            "poll_interval": NODE_POLL,
            "rescan_interval": NODE_RESCAN,
            "only_profile_processes": True,  # every node shares this host
            "hub": {
                "events": self.hub.events_url,
                "commands": self.hub.commands_url,
                "key_file": str(key_file),
            },
            "profiles": profiles,
        }
        config = base / "node.toml"
        config.write_text(tomlkit.dumps(document))
        return config

    def _home(self, machine: str, profile: str) -> Path:
        return self.workdir / "machines" / machine / "homes" / profile

    def _launch(self, machine: str, profile: CastProfile, env: dict[str, str]) -> DemoAgent:
        """Start one fake agent (not waiting for it), its profile's home in its environment as a
        profile switcher sets it: that is how the node's inventory maps it to the profile."""
        with self._lock:
            self._check_running()
            home = self._home(machine, profile.name)
            project = self.workdir / "projects" / next(self._projects)
            project.mkdir(parents=True, exist_ok=True)
            runs = self.workdir / "agents"
            runs.mkdir(parents=True, exist_ok=True)
            stem = f"{machine}-{profile.name}-{len(self._agents) + 1:02d}"
            truth = runs / f"{stem}.truth.jsonl"
            command = [sys.executable, "-m", FAKE_AGENT, "--agent", profile.agent.value]
            command += ["--home", str(home), "--model", profile.model, "--mode", profile.mode]
            command += ["--children", str(self.rng.randint(1, 2)), "--project", str(project)]
            command += ["--truth", str(truth), "--machine", machine, "--profile", profile.name]
            command += self._timing(profile)
            popen = self._spawn(
                command,
                runs / f"{stem}.log",
                {**env, HOME_VARIABLES[profile.agent]: str(home)},
            )
            agent = DemoAgent(
                machine,
                profile.name,
                profile.agent,
                profile.mode,
                popen,
                runs / f"{stem}.log",
                truth,
            )
            self._agents.append(agent)
            return agent

    def _timing(self, profile: CastProfile) -> list[str]:
        """--pace (jittered per agent, scaled) and, for the rate-limited one, --calls."""
        every = RUNAWAY_EVERY if profile.mode == "runaway" else self.rng.uniform(*CALL_EVERY)
        options = ["--pace", f"{every * self.pace:.3f}"]
        if profile.mode == "ratelimit":
            calls = max(3, round(self.rng.uniform(*LIMIT_AFTER) / every))
            options += ["--calls", str(calls)]
        return options

    def _spawn(
        self, command: list[str], log_path: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with self._lock:
            self._check_running()
            with open(log_path, "ab") as out:
                # A session of its own: a terminal's Ctrl-C reaches only the demo, which ends
                # everything in order (agents first, while nodes and hub still take their logs).
                return subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )

    def _await_ready(self, agents: Sequence[DemoAgent]) -> None:
        """All at once: start-up costs one agent's start, not the sum."""
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = list(agents)
        while waiting:
            self._check_running()
            for agent in list(waiting):
                if agent.read_ready():
                    waiting.remove(agent)
                elif agent.popen.poll() is not None:
                    raise RuntimeError(
                        f"fake agent {agent.machine}/{agent.profile} exited with "
                        f"{agent.popen.returncode}; see {agent.log}"
                    )
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"{a.machine}/{a.profile}" for a in waiting)
                raise TimeoutError(f"fake agents not ready after {READY_TIMEOUT:g} s: {names}")
            if waiting:
                self._halt.wait(0.02)

    # -- the subscription scheduler ------------------------------------------------------------

    def _rotate(self) -> None:
        """Wait for max-a's rate-limit hit, then move its work to max-b."""
        limited = next(
            a for a in self.agents if a.machine == STORY_MACHINE and a.profile == LIMITED
        )
        while not self._halt.wait(ROTATOR_EVERY):
            hit = _rate_limit_hit(limited.truth)
            if hit is None:
                continue
            try:
                self._switch(limited, hit)
            except Exception:
                if not self._halt.is_set():
                    log.exception("demo: the switch to %s failed", SPARE)
            return

    def _switch(self, limited: DemoAgent, hit: dict[str, Any]) -> None:
        """What a rotation scheduler does: stop the limited agent, tell the node, start anew."""
        log.info("demo: %s is rate-limited; switching to %s", LIMITED, SPARE)
        _end_trees([limited.processes()])
        with contextlib.suppress(subprocess.TimeoutExpired):
            limited.popen.wait(AGENT_GRACE)  # reap it
        status_file = self.workdir / "machines" / STORY_MACHINE / "profiles.json"
        _write_status(status_file, _status_after(hit))
        machine = next(m for m in self.cast if m.name == STORY_MACHINE)
        agent = self._launch(STORY_MACHINE, machine.profile(SPARE), self._child_env())
        self._await_ready([agent])
        self.switched.set()

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """End the fake agents (whole trees), the node agents, the rotator and the hub.
        Idempotent, never raises: safe from atexit or a signal handler."""
        self._halt.set()
        rotator = self._rotator
        if rotator is not None and rotator is not threading.current_thread():
            rotator.join(READY_TIMEOUT)
        with self._lock:
            # Agents first, while their nodes and the hub still take what they logged.
            _safely(self._end_agents)
            _safely(self._end_nodes)
            _safely(self._stop_hub)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def _end_agents(self) -> None:
        agents = list(self._agents)
        _end_trees([agent.processes() for agent in agents])
        for agent in agents:
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.popen.wait(AGENT_GRACE)  # reap our direct child

    def _end_nodes(self) -> None:
        nodes = list(self.nodes.values())
        for node in nodes:
            if node.poll() is None:
                with contextlib.suppress(OSError):
                    node.terminate()
        deadline = time.monotonic() + NODE_GRACE
        for node in nodes:
            try:
                node.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("demo: node agent %d ignored SIGTERM; killing it", node.pid)
                with contextlib.suppress(OSError):
                    node.kill()
                node.wait()

    def _stop_hub(self) -> None:
        if self.hub is not None and self._hub_running:
            self._hub_running = False
            self.hub.stop()

    def __enter__(self) -> DemoFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- helpers -----------------------------------------------------------------------------------


def _project_names() -> Iterable[str]:
    """Distinct project names, however many agents there are."""
    round_ = 1
    while True:
        for name in PROJECTS:
            yield name if round_ == 1 else f"{name}-{round_}"
        round_ += 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _write_private(path: Path, text: str) -> None:
    """A key file the node accepts: mode 600 from its first instant, rewritten on a re-run."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def _status_before() -> dict[str, Any]:
    """spark01's heartbeat while max-a is in use."""
    now = datetime.now(UTC)
    return {"version": 1, "updated_at": _iso(now), "active": {"claude-code": LIMITED}}


def _status_after(hit: dict[str, Any]) -> dict[str, Any]:
    """The heartbeat once the scheduler moved claude-code from max-a to max-b."""
    now = datetime.now(UTC)
    until = hit.get("resets_at") or _iso(now + timedelta(hours=5))
    return {
        "version": 1,
        "updated_at": _iso(now),
        "active": {"claude-code": SPARE},
        "switches": [
            {
                "at": _iso(now),
                "agent": "claude-code",
                "from": LIMITED,
                "to": SPARE,
                "reason": "rate_limited",
            }
        ],
        "limited": {
            LIMITED: {
                "until": until,
                "reason": f"{hit.get('window') or '5h'} window",
                "since": hit.get("at") or _iso(now),
                "agent": "claude-code",
            }
        },
    }


def _write_status(path: Path, status: dict[str, Any]) -> None:
    """Atomically, as the format asks: a temp file renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status, indent=2) + "\n")
    os.replace(tmp, path)


def _rate_limit_hit(truth: Path) -> dict[str, Any] | None:
    """The first rate-limit hit in a fake agent's truth journal, if any."""
    try:
        lines = truth.read_bytes().splitlines()
    except OSError:
        return None
    for raw in lines:
        if b'"rate_limit_hit"' not in raw:
            continue
        with contextlib.suppress(ValueError):
            record: dict[str, Any] = json.loads(raw)
            if record.get("kind") == "rate_limit_hit":
                return record
    return None


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an orphan's zombie waits for init, which may reap it late)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait(
    procs: Sequence[psutil.Process], done: Callable[[psutil.Process], bool], t: float
) -> None:
    deadline = time.monotonic() + t
    while not all(done(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.01)


def _stopped(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() in (
            psutil.STATUS_STOPPED,
            psutil.STATUS_TRACING_STOP,
            psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD,
        )
    except psutil.Error:
        return True


def _freeze(trees: Iterable[Iterable[psutil.Process]]) -> list[psutil.Process]:
    """SIGSTOP every process of the trees, then their children, until no new one appears: a
    stopped process cannot fork, so nothing escapes the list (an agent may be starting tools)."""
    seen: dict[int, psutil.Process] = {}
    batch = [p for tree in trees for p in tree]
    while batch:
        batch = [p for p in {p.pid: p for p in batch}.values() if p.pid not in seen and _alive(p)]
        for proc in batch:
            seen[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                proc.suspend()
        _wait(batch, _stopped, 1.0)
        batch = [child for proc in batch for child in _children(proc)]
    return list(seen.values())


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _end_trees(trees: Iterable[Iterable[psutil.Process]]) -> None:
    """Freeze, then SIGTERM and continue each (a stopped process only acts on SIGTERM once
    continued: a paused agent too), then SIGKILL what is left after the grace time."""
    procs = _freeze(trees)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.resume()
    _wait(procs, lambda p: not _alive(p), AGENT_GRACE)
    left = [p for p in procs if _alive(p)]
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait(left, lambda p: not _alive(p), AGENT_GRACE)


def _safely(step: Callable[[], None]) -> None:
    try:
        step()
    except Exception:
        log.exception("demo: %s failed", getattr(step, "__name__", step))


# ---- headless: python -m hub.demo --------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hub.demo", description="Run the demo fleet headless, then print totals."
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--machines", type=int, default=3)
    parser.add_argument("--pace", type=float, default=1.0, help="interval factor (0.3: faster)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        fleet = stack.enter_context(
            DemoFleet(workdir, machines=args.machines, pace=args.pace, seed=args.seed)
        )
        assert fleet.service is not None
        with contextlib.suppress(KeyboardInterrupt):
            time.sleep(args.seconds)
        _print_totals(fleet.service)
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_totals(service: FleetService) -> None:
    totals = service.totals(Dimension.PROFILE, Period.TODAY)
    print(
        f"{'machine/profile':<26}{'calls':>7}{'api-equivalent':>16}{'metered':>12}{'included':>12}"
    )
    for key, t in sorted(totals.items(), key=lambda kv: kv[0] or ""):
        print(
            f"{key or '?':<26}{t.calls:>7}{t.api_equivalent:>16.2f}{t.metered:>12.2f}"
            f"{t.subscription_included:>12.2f}"
        )
    for item in service.recent_feed(20):
        when = datetime.fromtimestamp(item.ts).strftime("%H:%M:%S")
        print(f"{when} {item.kind:<8} {item.machine:<8} {item.text}")


if __name__ == "__main__":
    raise SystemExit(main())

"""DemoFleet: the embedded hub, one node agent per machine and the fake agents, started in
order and ended in order (agents first, while their nodes and the hub still take their logs).

Every file (hub config, secret and database, node configs and keys, agent homes, projects, the
children's logs and the agents' truth journals) lives under `workdir`; a re-run in the same
workdir keeps the hub's secret and history.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from hub.api.front import HubFront
from hub.budgets.model import Budget, ScopeKind
from hub.config import init_hub, load_hub_config
from hub.demo._agent import HOME_VARIABLES, DemoAgent, end_agents, fake_agent_command
from hub.demo._cast import (
    LIMITED,
    SPARE,
    STORY_MACHINE,
    CastMachine,
    CastProfile,
    build_cast,
    pace_options,
    project_names,
)
from hub.demo._guard import RUN_VARIABLE, start_guard
from hub.demo._loop import SINK, close_the_loop, runaway_budget, set_api_listen
from hub.demo._nodes import end_nodes, node_command, write_node_config
from hub.demo._scheduler import rotate, status_before, write_status
from hub.demo._spawn import child_env, spawn
from hub.demo._webhook import Delivery, DemoWebhook, write_secret
from hub.serve import Hub
from hub.service import FleetService

log = logging.getLogger(__name__)

# Node heartbeats come every 5 s: stale after two missed ones, so a stopped node shows soon.
STALE_AFTER: Final = 11.0
READY_TIMEOUT: Final = 30.0  # seconds for a fake agent's ready line
REAP_EVERY: Final = 0.5  # seconds between collecting children that ended


class DemoFleet:
    """An embedded hub, node-agent processes spark01..sparkNN and fake agents; see the package
    docstring. `start()` returns the hub's service; `stop()` ends everything it started, whole
    process trees included, and may be called any number of times, from an atexit hook or a
    signal handler; `service` stays set afterwards, but its store is closed."""

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
        self._projects = project_names()
        self._lock = threading.RLock()  # reentrant: stop() may run in a signal handler
        self._halt = threading.Event()  # stop() was called: no more launching
        self._rotator: threading.Thread | None = None
        self._reaper: threading.Thread | None = None
        self._hub_running = False
        # Every child carries the run's id, so that the guard can end them all should this
        # process be killed before it ends them in order (see hub.demo._guard).
        self._env = {**child_env(self.workdir), RUN_VARIABLE: uuid.uuid4().hex}
        self._guard: subprocess.Popen[bytes] | None = None
        self.webhook: DemoWebhook | None = None  # where the hub's alerts land
        self.budget: Budget | None = None  # the runaway's budget (hub.demo._loop)
        self._front: HubFront | None = None  # the hub's API and alert courier

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
        env = self._env
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._guard = start_guard(env[RUN_VARIABLE], env, self.workdir / "guard.log")
        service = self._start_hub()
        for machine in self.cast:
            self._check_running()
            config = self._write_node(machine)
            self.nodes[machine.name] = self._spawn(
                node_command(config), config.parent / "node.log", env
            )
        launched = [
            self._launch(machine.name, profile, env)
            for machine in self.cast
            for profile in machine.profiles
            if profile.starts
        ]
        self._await_ready(launched)
        limited = next(a for a in launched if a.machine == STORY_MACHINE and a.profile == LIMITED)
        self._rotator = threading.Thread(
            target=rotate,
            args=(limited, self._status_file(STORY_MACHINE), self._start_spare),
            kwargs={"halt": self._halt, "switched": self.switched},
            name="demo-rotator",
            daemon=True,
        )
        self._rotator.start()
        self._reaper = threading.Thread(target=self._reap, name="demo-reaper", daemon=True)
        self._reaper.start()
        return service

    def _reap(self) -> None:
        """Collect the children that ended (an agent killed from the hub, a node that died):
        the demo is their parent, and an uncollected child stays a zombie, which its node
        would go on listing (the Sessions tab said `zombie`)."""
        while not self._halt.wait(REAP_EVERY):
            for popen in [a.popen for a in self.agents] + list(self.nodes.values()):
                popen.poll()

    def _check_running(self) -> None:
        if self._halt.is_set():
            raise RuntimeError("the demo fleet is stopping: nothing more is started")

    @property
    def config_path(self) -> Path:
        """The demo hub's hub.toml: `fleet-hub budget|alerts|resume --config` it."""
        return self.workdir / "hub" / "hub.toml"

    def _start_hub(self) -> FleetService:
        """On loopback port 0: the hub's endpoints report the ports they got. The webhook
        receiver first (the sink's URL is its port), the API and the courier last."""
        config_path = self.config_path
        init_hub(
            config_path,
            force=True,  # a re-run in the same workdir keeps the secret and the database
            overrides={
                "name": "fleetmeter-demo",
                "events": "tcp://127.0.0.1:0",
                "commands": "tcp://127.0.0.1:0",
                "data_dir": str(self.workdir / "hub" / "data"),
                "advertise": False,
                "stale_after": STALE_AFTER,
                "api": {"listen": "127.0.0.1:0"},  # the real port is written once bound
            },
        )
        secret = write_secret(config_path.parent / f"{SINK}.secret")
        self.webhook = DemoWebhook(
            secret, self.workdir / "webhook" / "deliveries.jsonl", self._tell_delivery
        ).start()
        self.budget = runaway_budget(self.cast)
        close_the_loop(config_path, self.budget, self.webhook.url, secret)
        self.hub = Hub(load_hub_config(config_path))
        self._front = HubFront(self.hub)  # a bad sink secret: a ConfigError, before serving
        self._hub_running = True
        self.service = self.hub.start()
        self._front.start(self.service)
        # `fleet-hub ... --config` finds the API on the port it got
        set_api_listen(config_path, urlsplit(self._front.url).netloc)
        # httpx logs every request at INFO: a line per alert would bury the demo's own news
        logging.getLogger("httpx").setLevel(logging.WARNING)
        machine = self.budget.scope.value(ScopeKind.MACHINE) or "fleet"
        self.service.tell(
            machine,
            f"demo: {self.budget.title} pauses the runaway at its limit; alerts go to {SINK}; "
            f"fleet-hub budget list --config {config_path}",
            "hub",
        )
        log.info("demo: the hub's config is %s (for fleet-hub --config)", config_path)
        return self.service

    def _tell_delivery(self, delivery: Delivery) -> None:
        """The feed's line for an alert the demo webhook accepted."""
        service = self.service
        if service is None or not self._hub_running:
            return
        scope = dict(
            part.partition("=")[::2] for part in str(delivery.alert.get("scope", "")).split(",")
        )
        text = str(delivery.alert.get("text") or delivery.alert.get("id", "?"))
        service.tell(scope.get("machine") or "fleet", f"alert delivered to {SINK}: {text}", "alert")

    def _write_node(self, machine: CastMachine) -> Path:
        """The machine's node.toml, key and profile homes, and spark01's first heartbeat."""
        assert self.hub is not None
        config = write_node_config(
            self._machine_dir(machine.name),
            machine,
            self.hub,
            homes={p.name: self._home(machine.name, p.name) for p in machine.profiles},
            status_file=self._status_file(machine.name),
        )
        if machine.name == STORY_MACHINE:
            write_status(self._status_file(machine.name), status_before())
        return config

    def _machine_dir(self, machine: str) -> Path:
        return self.workdir / "machines" / machine

    def _home(self, machine: str, profile: str) -> Path:
        return self._machine_dir(machine) / "homes" / profile

    def _status_file(self, machine: str) -> Path:
        """The machine's profile heartbeat (only spark01, where the scheduler runs, has one)."""
        return self._machine_dir(machine) / "profiles.json"

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
            children = self.rng.randint(1, 2)  # drawn before the pace: a seed replays the same
            command = fake_agent_command(
                machine,
                profile,
                home=home,
                project=project,
                truth=truth,
                children=children,
                pace=pace_options(profile, self.rng, self.pace),
            )
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

    def _start_spare(self) -> None:
        """The scheduler's switch: a new agent on max-b, ready before it returns."""
        machine = next(m for m in self.cast if m.name == STORY_MACHINE)
        agent = self._launch(STORY_MACHINE, machine.profile(SPARE), self._env)
        self._await_ready([agent])

    def _spawn(
        self, command: list[str], log_path: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with self._lock:
            self._check_running()
            return spawn(command, log_path, env)

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

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """End the fake agents (whole trees), the node agents, the rotator and the hub.
        Idempotent, never raises: safe from atexit or a signal handler."""
        self._halt.set()
        rotator = self._rotator
        if rotator is not None and rotator is not threading.current_thread():
            rotator.join(READY_TIMEOUT)
        reaper = self._reaper
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(READY_TIMEOUT)
        with self._lock:
            # Agents first, while their nodes and the hub still take what they logged.
            _safely(lambda: end_agents(list(self._agents)), "ending the fake agents")
            _safely(lambda: end_nodes(list(self.nodes.values())), "ending the node agents")
            _safely(self._stop_front, "stopping the API and the alert courier")
            _safely(self._stop_hub, "stopping the hub")
            _safely(self._stop_webhook, "stopping the webhook receiver")
            _safely(self._stop_guard, "stopping the guard")
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def _stop_front(self) -> None:
        front, self._front = self._front, None
        if front is not None:
            front.stop()

    def _stop_webhook(self) -> None:
        if self.webhook is not None:
            self.webhook.stop()

    def _stop_guard(self) -> None:
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.kill()  # what it watches over is ended already
            guard.wait()

    def _stop_hub(self) -> None:
        if self.hub is not None and self._hub_running:
            self._hub_running = False
            self.hub.stop()

    def __enter__(self) -> DemoFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _safely(step: Callable[[], None], what: str) -> None:
    try:
        step()
    except Exception:
        log.exception("demo: %s failed", what)

"""Process control on real process trees: the inventory finds fake agents like real ones, and
pause / resume / kill reach every process of a tree (forking ones included) and nothing else."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from node_agent.procs import AgentProcess, ProcessInventory, kill, pause, resume
from node_agent.procs.identify import agent_of, session_file
from node_agent.simulate.fake_agent import LaunchedAgent, launch
from shared.config import NodeConfig, Profile
from shared.events import Agent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")

ROOT = Path(__file__).resolve().parent.parent
STOPPED = {psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE}
# A tool process that forks a child every few ms (each child forks a grandchild; both live
# 0.5 s), under an idle parent: the forking happens below the root, as an agent's tools do.
FORK_LOOP = """
import os, time
while True:
    if os.fork() == 0:
        if os.fork() == 0:
            time.sleep(0.5)
            os._exit(0)
        time.sleep(0.5)
        os._exit(0)
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    time.sleep(0.002)
"""
FORKER = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {FORK_LOOP!r}])
time.sleep(1000)
"""
# Ignores SIGTERM, as does its child: only SIGKILL ends them.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
print("ready", flush=True)
time.sleep(1000)
"""


@dataclass(frozen=True)
class Fleet:
    config: NodeConfig
    claude_home: Path
    codex_home: Path
    project: Path


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    claude_home, codex_home, project = tmp_path / "claude-a", tmp_path / "codex-b", tmp_path / "p"
    project.mkdir()
    profiles = (
        Profile("claude-a", Agent.CLAUDE_CODE, claude_home),
        Profile("codex-b", Agent.CODEX, codex_home),
    )
    return Fleet(NodeConfig(node="test", profiles=profiles), claude_home, codex_home, project)


Start = Callable[..., LaunchedAgent]


@pytest.fixture
def start(fleet: Fleet) -> Iterator[Start]:
    """Launch fake agents; every process of their trees is killed afterwards, pass or fail."""
    launched: list[LaunchedAgent] = []

    def go(agent: Agent, *args: str, prefix: tuple[str, ...] = ()) -> LaunchedAgent:
        home = fleet.claude_home if agent is Agent.CLAUDE_CODE else fleet.codex_home
        one = launch(agent, home, "--project", str(fleet.project), *args, prefix=prefix)
        launched.append(one)
        return one

    yield go
    for one in launched:
        one.destroy()


Spawn = Callable[[str], psutil.Popen]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Run Python snippets as processes; their trees are SIGKILLed afterwards (stopped or not)."""
    roots: list[psutil.Popen] = []

    def go(code: str) -> psutil.Popen:
        proc = psutil.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        roots.append(proc)
        return proc

    yield go
    for root in roots:
        procs = [root, *tree_of(root)[1:]]
        for proc in procs:
            with suppress(psutil.Error):
                proc.kill()
        root.wait(10)
        assert root.stdout is not None
        root.stdout.close()


def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def tree_of(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def status(proc: psutil.Process) -> str:
    try:
        return proc.status()
    except psutil.NoSuchProcess:
        return "gone"


def gone(proc: psutil.Process) -> bool:
    return status(proc) in ("gone", psutil.STATUS_ZOMBIE)


def full_tree(one: LaunchedAgent, size: int) -> list[psutil.Process]:
    """The agent's tree once all `size` processes (agent, tool shells, their children) exist."""
    root = psutil.Process(one.pid)
    until(lambda: len(tree_of(root)) == size, what=f"a tree of {size}")
    return tree_of(root)


def scan_for(inventory: ProcessInventory, pids: set[int]) -> dict[int, AgentProcess]:
    return {p.pid: p for p in inventory.scan() if p.pid in pids}


# ---- inventory --------------------------------------------------------------------------------


def test_inventory_finds_agents_with_profile_session_and_children(
    fleet: Fleet, start: Start
) -> None:
    claude = start(Agent.CLAUDE_CODE, "--children", "2", "--pace", "0.2")
    codex = start(Agent.CODEX, "--children", "1", "--pace", "0.2")
    inventory = ProcessInventory(fleet.config)
    found: dict[int, AgentProcess] = {}

    def complete() -> bool:
        found.update(scan_for(inventory, {claude.pid, codex.pid}))
        return len(found) == 2 and [found[claude.pid].children, found[codex.pid].children] == [4, 2]

    until(complete, what="both agents with their tools")
    a, b = found[claude.pid], found[codex.pid]
    assert (a.agent, a.profile, a.session_id) == (Agent.CLAUDE_CODE, "claude-a", claude.session_id)
    assert (b.agent, b.profile, b.session_id) == (Agent.CODEX, "codex-b", codex.session_id)
    for got, one in ((a, claude), (b, codex)):
        assert got.create_time == psutil.Process(one.pid).create_time()
        assert got.cwd == str(fleet.project) and got.state == "running"
        assert got.rss > 0 and "--agent" in got.cmdline
    assert a.home == str(fleet.claude_home)
    # Tool shells and their children are part of the agent, not agents of their own.
    tools = {p.pid for p in psutil.Process(claude.pid).children(recursive=True)}
    assert not tools & {p.pid for p in inventory.scan()}


def test_a_wrapper_and_its_agent_child_are_one_agent(
    fleet: Fleet, start: Start, tmp_path: Path
) -> None:
    # Codex's npm install: `node …/@openai/codex/bin/codex.js` spawns the native `codex`.
    # Here "node" is Python under that name and the launcher script runs the fake codex.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "node").symlink_to(sys.executable)
    script = tmp_path / "lib/node_modules/@openai/codex/bin/codex.js"
    script.parent.mkdir(parents=True)
    script.write_text("import subprocess, sys\nraise SystemExit(subprocess.call(sys.argv[1:]))\n")
    one = start(Agent.CODEX, "--children", "1", prefix=(str(bin_dir / "node"), str(script)))
    wrapper = psutil.Process(one.pid)
    (child,) = wrapper.children()
    assert child.name() == "codex" and wrapper.name() != "codex"
    inventory = ProcessInventory(fleet.config)
    found: dict[int, AgentProcess] = {}

    def complete() -> bool:
        found.clear()
        found.update(scan_for(inventory, {wrapper.pid, child.pid}))
        return list(found) == [wrapper.pid] and found[wrapper.pid].children == 3

    until(complete, what="the wrapper as the one agent")
    agent = found[wrapper.pid]
    # The session comes from the child's open rollout; the wrapper holds none itself.
    assert (agent.agent, agent.profile, agent.session_id) == (
        Agent.CODEX,
        "codex-b",
        one.session_id,
    )


def test_identification_rules() -> None:
    claude_js = "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js"
    assert agent_of("node", ["node", claude_js, "-p", "hi"]) is Agent.CLAUDE_CODE
    assert agent_of("node", ["/usr/bin/node", "--max-old-space-size=8192", "/x/bin/gemini"]) is (
        Agent.GEMINI
    )
    assert agent_of("opencode", []) is Agent.OPENCODE
    assert agent_of("MainThread", ["/home/u/.local/bin/claude", "--resume"]) is Agent.CLAUDE_CODE
    assert agent_of("node22", ["node22", "/x/node_modules/opencode-ai/bin/oc"]) is Agent.OPENCODE
    # Arguments of other programs are not agents (their children may be).
    assert agent_of("grep", ["grep", "-r", "@openai/codex", "."]) is None
    assert agent_of("bash", ["bash", "-c", "claude"]) is None
    assert agent_of("node", ["node", "/x/@openai/codex-other/index.js"]) is None
    sid = "7b1d2c9e-5a41-4f0e-9d3a-1f2e3d4c5b6a"
    main = session_file(Agent.CLAUDE_CODE, f"/h/.claude/projects/-home-u-x/{sid}.jsonl")
    sub = session_file(Agent.CLAUDE_CODE, f"/h/.claude/projects/-x/{sid}/subagents/agent-a1.jsonl")
    assert main is not None and sub is not None and main.session_id == sub.session_id == sid
    assert main < sub  # the main transcript wins when both are open
    assert session_file(Agent.CLAUDE_CODE, "/h/.claude/projects/-x/agent-a1b2.jsonl") is None
    thread = "019f2a10-77b4-7c21-9e55-3a1b2c3d4e5f"
    rollout = f"/h/.codex/sessions/2026/09/10/rollout-2026-09-10T08-11-58-{thread}.jsonl"
    found = session_file(Agent.CODEX, rollout)
    assert found is not None and found.session_id == thread
    assert session_file(Agent.CODEX, "/h/.codex/history.jsonl") is None


# ---- halting ----------------------------------------------------------------------------------


def test_pause_stops_the_whole_tree_and_resume_continues_it(fleet: Fleet, start: Start) -> None:
    one = start(Agent.CLAUDE_CODE, "--children", "2", "--pace", "0.05")
    tree = full_tree(one, 5)
    created = tree[0].create_time()

    result = pause(one.pid, created)
    assert (result.ok, result.outcome) == (True, "paused"), result.detail
    assert result.pids[0] == one.pid and set(result.pids) == {p.pid for p in tree}
    assert {p.pid: status(p) for p in tree} == {p.pid: psutil.STATUS_STOPPED for p in tree}
    (seen,) = scan_for(ProcessInventory(fleet.config), {one.pid}).values()
    assert seen.state == "paused"
    size = one.path.stat().st_size
    time.sleep(0.3)  # a paused agent writes nothing (it calls every 0.05 s when running)
    assert one.path.stat().st_size == size

    result = resume(one.pid, created)
    assert (result.ok, result.outcome) == (True, "resumed"), result.detail
    assert set(result.pids) == {p.pid for p in tree}
    until(lambda: all(status(p) != psutil.STATUS_STOPPED for p in tree), what="all continued")
    until(lambda: one.path.stat().st_size > size, what="the agent to write again")


def test_kill_leaves_no_process_behind(start: Start) -> None:
    one = start(Agent.CODEX, "--children", "2", "--pace", "0.05")
    tree = full_tree(one, 5)
    result = kill(one.pid, tree[0].create_time(), grace=5.0)
    assert (result.ok, result.outcome) == (True, "killed"), result.detail
    assert set(result.pids) == {p.pid for p in tree}
    assert [p.pid for p in tree if not gone(p)] == []
    # SIGTERM reached it although it was frozen first: it exited through its own handler.
    assert one.popen.wait(10) == 0
    assert "SIGKILL" not in result.detail


def test_kill_escalates_to_sigkill(spawn: Spawn) -> None:
    root = spawn(STUBBORN)
    assert root.stdout is not None and root.stdout.readline() == b"ready\n"
    tree = tree_of(root)
    assert len(tree) == 2
    result = kill(root.pid, root.create_time(), grace=0.3)
    assert (result.ok, result.outcome) == (True, "killed"), result.detail
    assert "2 needed SIGKILL" in result.detail
    assert [p.pid for p in tree if not gone(p)] == []


def test_a_wrong_start_time_is_refused_and_signals_nothing(start: Start) -> None:
    one = start(Agent.CLAUDE_CODE, "--children", "1", "--pace", "0.05")
    tree = full_tree(one, 3)
    wrong = tree[0].create_time() - 3600.0
    for action in (pause, resume, kill):
        result = action(one.pid, wrong)
        assert (result.ok, result.outcome, result.pids) == (False, "refused", ())
        assert f"pid {one.pid} now belongs to another process (started at" in result.detail
    time.sleep(0.1)  # a wrongly sent signal would have landed by now
    assert all(status(p) not in (psutil.STATUS_STOPPED, "gone", "zombie") for p in tree)


def test_a_gone_process_is_refused(spawn: Spawn) -> None:
    proc = spawn("pass")
    created = proc.create_time()
    proc.wait(10)
    result = pause(proc.pid, created)
    assert (result.ok, result.outcome, result.pids) == (False, "refused", ())
    assert "no such process" in result.detail


def test_never_halts_itself_its_ancestors_or_init() -> None:
    # Run in a grandchild: if a guard failed, the processes stopped are expendable ones.
    code = (
        "import json, psutil\n"
        "from node_agent.procs import pause, kill\n"
        "me = psutil.Process(); parent = me.parent(); init = psutil.Process(1)\n"
        "out = [pause(me.pid, me.create_time()), kill(parent.pid, parent.create_time()),\n"
        "       pause(1, init.create_time())]\n"
        "print(json.dumps([[r.ok, r.outcome, r.detail, list(r.pids)] for r in out]))\n"
    )
    middle = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {code!r}])\n"
    proc = psutil.Popen([sys.executable, "-c", middle], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        for p in tree_of(proc)[::-1]:
            p.send_signal(signal.SIGCONT)
            p.kill()
    results = json.loads(out)
    assert [r[:2] for r in results] == [[False, "refused"]] * 3
    assert [r[3] for r in results] == [[], [], []]
    assert "node-agent itself" in results[0][2]
    assert "ancestor of the node-agent" in results[1][2]
    assert "init" in results[2][2]


def test_a_tree_forking_while_paused_ends_fully_stopped(spawn: Spawn) -> None:
    root = spawn(FORKER)
    until(lambda: len(tree_of(root)) >= 12, what="the forker to get going")
    result = pause(root.pid, root.create_time())
    assert (result.ok, result.outcome) == (True, "paused"), result.detail
    tree = tree_of(root)
    assert len(tree) > 2 and {status(p) for p in tree} <= STOPPED
    time.sleep(0.2)  # nothing escaped the freeze: no new process, none running
    again = tree_of(root)
    assert {p.pid for p in again} == {p.pid for p in tree}
    assert {status(p) for p in again} <= STOPPED

    result = kill(root.pid, root.create_time(), grace=0.5)
    assert (result.ok, result.outcome) == (True, "killed"), result.detail
    assert [p.pid for p in tree if not gone(p)] == []


# ---- permissions ------------------------------------------------------------------------------


def _python_for(user: int) -> list[str] | None:
    """A Python 3.11 that `user` may run, with this checkout and its packages importable."""
    site = next(iter(Path(sys.prefix).glob("lib/python3.*/site-packages")), None)
    env = {"PYTHONPATH": f"{ROOT}:{site}", "PATH": "/usr/bin:/bin"}
    for exe in (sys.executable, shutil.which("python3.11", path="/usr/bin:/usr/local/bin")):
        if not exe:
            continue
        try:
            probe = subprocess.run(
                [exe, "-c", "import node_agent.procs"],
                user=user,
                group=user,
                env=env,
                cwd="/",
                capture_output=True,
            )
        except OSError:
            continue  # not executable for that user
        if probe.returncode == 0:
            return [exe]
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_unreadable_fields_degrade_to_none(fleet: Fleet, start: Start) -> None:
    nobody = 65534
    python = _python_for(nobody)
    if python is None:
        pytest.skip("no Python this checkout's packages load in for user nobody")
    one = start(Agent.CLAUDE_CODE, "--children", "1", "--pace", "0.05")
    created = psutil.Process(one.pid).create_time()
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from node_agent.procs import ProcessInventory, pause\n"
        "from shared.config import NodeConfig, Profile\n"
        "from shared.events import Agent\n"
        "pid, created, home = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])\n"
        "config = NodeConfig(node='t', profiles=(Profile('a', Agent.CLAUDE_CODE, home),))\n"
        "found = [p for p in ProcessInventory(config).scan() if p.pid == pid]\n"
        "r = pause(pid, created)\n"
        "print(json.dumps({'found': [[p.agent, p.profile, p.session_id, p.cwd, p.home,\n"
        "                             p.state, len(p.cmdline) > 0] for p in found],\n"
        "                  'pause': [r.ok, r.outcome, r.detail, list(r.pids)]}))\n"
    )
    site = next(iter(Path(sys.prefix).glob("lib/python3.*/site-packages")))
    run = subprocess.run(
        [*python, "-c", code, str(one.pid), repr(created), str(fleet.claude_home)],
        user=nobody,
        group=nobody,
        env={"PYTHONPATH": f"{ROOT}:{site}", "PATH": "/usr/bin:/bin"},
        cwd="/",
        capture_output=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr.decode()
    out = json.loads(run.stdout)
    # Name and command line are public; environ, cwd and open files are not.
    assert out["found"] == [["claude-code", None, None, None, None, "running", True]]
    assert out["pause"] == [False, "refused", f"pid {one.pid}: permission denied", []]
    assert status(psutil.Process(one.pid)) != psutil.STATUS_STOPPED

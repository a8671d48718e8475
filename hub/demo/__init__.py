"""`fleet-hub demo`: a whole simulated fleet on this machine, so a newcomer sees everything at once.

An embedded hub (this process, loopback ports), one real `node-agent run` process per machine,
and fake agent processes (`node_agent.simulate.fake_agent`) that look like Claude Code and Codex
to the process inventory and write real-format logs at a realistic pace. Nothing is mocked: the
figures come the whole way (logs → node → wire → hub store → ledger), and pause / resume / kill
from the hub reach the fake agents' real process trees.

Each agent has one or two tool subprocesses (`bash -c 'sleep 1000 & wait'`), in its own project
under `workdir/projects`. Among them a runaway burns money on an API key, and on spark01 a
subscription hits its rate limit and a small scheduler switches its work to a spare profile.
The hub has a budget on the runaway's API key, which its governor enforces by pausing it, and
an alert sink on a webhook receiver the demo runs; it serves its API (hub.api.front) on a free
loopback port written into its hub.toml, so the CLI acts on the running demo.

The modules, one concern each:

    _cast       who runs where: machines, profiles, plans, models, projects, pace
    _fleet      DemoFleet: starts the hub, the nodes and the agents, and ends them in order
    _nodes      the node agents: node.toml and key, command line, ending them
    _agent      the fake agents: command line, ready line, process trees
    _scheduler  the rate-limit story: the hit in the truth journal, the heartbeat, the switch
    _spawn      starting a child process: a clean environment, a session of its own
    _trees      ending whole process trees (freeze, SIGTERM, SIGKILL)
    _loop       what closes the loop: the runaway's budget and the alert sink in hub.toml
    _webhook    the webhook receiver the alerts land on (signatures checked, each kept once)
    _headless   `python -m hub.demo`: a headless run that prints the totals
"""

from __future__ import annotations

from hub.demo._agent import DemoAgent
from hub.demo._cast import CastMachine, CastProfile, build_cast
from hub.demo._fleet import DemoFleet
from hub.demo._headless import main

__all__ = ["CastMachine", "CastProfile", "DemoAgent", "DemoFleet", "build_cast", "main"]

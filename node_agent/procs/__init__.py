"""Process control: find the coding agents running here (`inventory`), pause, resume or kill
an agent's whole process tree (`halt`) and interrupt a Codex turn (`interrupt`, imported from
its module where needed: its websockets client is not loaded by every node), addressed by
(pid, create_time)."""

from node_agent.procs.halt import CommandResult, kill, pause, resume
from node_agent.procs.inventory import AgentProcess, ProcessInventory

__all__ = [
    "AgentProcess",
    "CommandResult",
    "ProcessInventory",
    "kill",
    "pause",
    "resume",
]

"""Where a node finds its hub: the address, and the interface of whatever looks it up.

Apart from `shared.discovery` (which re-exports both) so that a node given its hub's address in
its config never imports zeroconf and asyncio: about 9 MB of an idle node's memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class HubAddress:
    events: str  # where a node dials its Req0 (events, acks)
    commands: str  # where a node dials its Respondent0 (commands)
    fingerprint: str | None = None  # SHA-256 of the hub's certificate, when it uses TLS


# ASYNC109: `timeout` is how long to browse before answering None, not a cancel deadline.


class Discovery(Protocol):
    async def find(self, timeout: float) -> HubAddress | None:  # noqa: ASYNC109
        """The hub's address, or None when none answered within `timeout` seconds."""
        ...

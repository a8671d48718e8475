"""What closes the loop on the demo's runaway by itself: a budget on its API key and an alert
sink pointing at the demo's own webhook receiver, written into the demo's hub.toml.

The budget: the runaway's machine and profile (spark02's `claude-api`, metered), paid dollars
per calendar hour, pause at the limit, and at the next hour wait for a person (who overrides
it, or not, and resumes the agent). The runaway spends about $0.72 a call (Sonnet 4.5, ~120k
tokens written to the 1-hour cache tier, none read) once a second at pace 1: $50 is crossed
about 70 s after it starts. A re-run in the same directory within the same hour starts above
the limit: the governor pauses the runaway at its first call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from hub.budgets.config_io import add_budget
from hub.budgets.model import Budget, parse_budget
from hub.config import write_hub_config
from hub.demo._cast import CastMachine

RUNAWAY_LIMIT: Final = "50"  # dollars per hour on the runaway's API key
SINK: Final = "demo-webhook"
# Quick retries: the receiver is on loopback and the demo is short.
RETRY_FIRST_S: Final = 1.0
RETRY_MAX_S: Final = 10.0


def runaway_budget(cast: Sequence[CastMachine]) -> Budget:
    """The budget on the runaway's API key: `<machine> claude-api hour`."""
    machine, profile = next(
        (m.name, p.name) for m in cast for p in m.profiles if p.mode == "runaway"
    )
    return parse_budget(
        {
            "name": f"{machine} {profile} hour",
            "scope": f"machine={machine},profile={profile}",
            "period": "hour",
            "basis": "paid",
            "limit": RUNAWAY_LIMIT,
            "action": "pause",
            "next_period": "wait",
        }
    )


def close_the_loop(config: Path, budget: Budget, webhook_url: str, secret_file: Path) -> None:
    """Write `budget` and the demo webhook sink (every severity, scope and kind) into the
    demo's hub.toml, keeping the rest of it."""
    write_hub_config(
        config,
        {
            "alerts": {
                "retry_first": RETRY_FIRST_S,
                "retry_max": RETRY_MAX_S,
                "sinks": [
                    {
                        "name": SINK,
                        "type": "webhook",
                        "url": webhook_url,
                        "secret_file": str(secret_file),
                        "timeout": 5.0,
                    }
                ],
            }
        },
    )
    add_budget(config, budget, ())


def set_api_listen(config: Path, listen: str) -> None:
    """Tell the CLI where the demo's API listens (a free port, known once it is bound)."""
    write_hub_config(config, {"api": {"listen": listen}})

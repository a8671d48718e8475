"""What a node's hello says that the operator must see once: a problem it reports (a full disk,
a broken profile heartbeat file), that problem gone, and agents it found paused when it started
(a node killed while an agent was paused leaves the agent stopped until someone resumes it).

Also who paused which process, from the audit log, so a paused agent can say since when and
by whom.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, tzinfo
from typing import Final

from hub.model import AuditRecord
from shared.hello import NodeHello, ProcessInfo

PAUSE_MEMORY: Final = 2000  # audit records read at start to find the pauses still standing


def pause_target(node: str, pid: int, create_time: float) -> str:
    """A process as the audit log names it."""
    return f"{node}:{pid}@{create_time:.2f}"


class PauseBook:
    """target -> (when, who) of the pause that stopped it, for the processes still paused."""

    def __init__(self, records: Iterable[AuditRecord] = ()) -> None:
        self._pauses: dict[str, tuple[float, str]] = {}
        for record in sorted(records, key=lambda r: r.id):  # oldest first: the last one wins
            self.note(record.action, record.target, record.result, record.ts, record.who)

    def note(self, action: str, target: str, result: str, ts: float, who: str) -> None:
        if action == "pause" and result.startswith("paused"):
            self._pauses[target] = (ts, who)
        elif (action, result.split(":")[0]) in (("resume", "resumed"), ("kill", "killed")):
            self._pauses.pop(target, None)

    def of(self, node: str, process: ProcessInfo) -> tuple[float, str] | None:
        return self.holder(node, process.pid, process.create_time)

    def holder(self, node: str, pid: int, create_time: float) -> tuple[float, str] | None:
        """(when, who) of the pause that holds (pid, create_time) on `node` now."""
        return self._pauses.get(pause_target(node, pid, create_time))


def hello_news(
    node: str,
    before: NodeHello | None,
    after: NodeHello,
    pauses: PauseBook,
    tz: tzinfo,
) -> list[str]:
    """Feed lines for what changed between two hellos of `node` (before: None at first)."""
    items: list[str] = []
    for what, old, new in (
        ("waits", _stalled(before), after.reader.stalled),
        ("profile status file", _status_file(before), after.reader.status_file),
    ):
        if new is not None and new != old:
            items.append(f"{node} {what}: {new}")
        elif new is None and old is not None:
            items.append(f"{node} {what}: fixed")
    if before is None or before.boot_time != after.boot_time:
        for process in after.processes:
            if process.state == "paused":
                items.append(_found_paused(node, process, pauses, tz))
    return items


def _stalled(hello: NodeHello | None) -> str | None:
    return hello.reader.stalled if hello is not None else None


def _status_file(hello: NodeHello | None) -> str | None:
    return hello.reader.status_file if hello is not None else None


def _found_paused(node: str, process: ProcessInfo, pauses: PauseBook, tz: tzinfo) -> str:
    text = f"{node} started with {process.agent} pid {process.pid} paused"
    pause = pauses.of(node, process)
    if pause is not None:
        text += f" ({paused_since(*pause, tz)})"
    return text + ": select its session and press r to resume it"


def paused_since(ts: float, who: str, tz: tzinfo) -> str:
    return f"paused since {datetime.fromtimestamp(ts, tz):%H:%M} by {who}"

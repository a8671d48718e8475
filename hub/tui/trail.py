"""The drill-down path: each `enter` on a machine or a profile adds a step that narrows some
tables and remembers where it was taken, so that `esc` steps back exactly one level."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hub.dashboard import Row, Table

RowFilter = Callable[[Row], bool]


@dataclass(frozen=True, slots=True)
class Step:
    label: str  # "machine spark01", as the breadcrumb shows it
    keep: RowFilter  # the rows it lets through
    tables: tuple[Table, ...]  # the tables it narrows
    tab: str  # the tab it was taken from (esc goes back there)
    row: str | None  # the row it was taken on (the cursor goes back to it)


class Trail:
    def __init__(self) -> None:
        self._steps: list[Step] = []

    def __bool__(self) -> bool:
        return bool(self._steps)

    def push(self, step: Step) -> None:
        self._steps.append(step)

    def pop(self) -> Step | None:
        return self._steps.pop() if self._steps else None

    def scope(self, table: Table) -> RowFilter | None:
        """What narrows `table`: the latest step that names it (a profile's sessions on all
        machines replace a machine's sessions)."""
        return next((s.keep for s in reversed(self._steps) if table in s.tables), None)

    @property
    def last(self) -> str:
        return self._steps[-1].label if self._steps else ""

    def path(self) -> str:
        return " › ".join(step.label for step in self._steps)

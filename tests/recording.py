"""A sink for source tests that keeps every emission, to see what was sent and not only what won."""

from __future__ import annotations

from node_agent.sources.base import Collector, ParseProblem
from shared.events import LimitEvent, UsageEvent


class Recorder:
    def __init__(self) -> None:
        self.sent: list[UsageEvent] = []
        self.collector = Collector()

    def usage(self, event: UsageEvent) -> None:
        self.sent.append(event)
        self.collector.usage(event)

    def limit(self, event: LimitEvent) -> None:
        self.collector.limit(event)

    def problem(self, problem: ParseProblem) -> None:
        self.collector.problem(problem)

    def skip(self, reason: str) -> None:
        self.collector.skip(reason)

    @property
    def events(self) -> dict[str, UsageEvent]:
        return self.collector.events.usage

    @property
    def problems(self) -> list[ParseProblem]:
        return self.collector.problems
